// Fused bottleneck seeds: a layer running its bottleneck seeds as one group gives the per-seed path's
// output and gradients (input, host weights, every kernel weight) in float64, for Linear and Conv2d,
// below and above an alpha sum of 1; kernels of another form run beside the group; a group with a
// non-finite member hands its seeds back to the per-seed path, which records only the failing seed;
// the automatic setting fuses on a GPU only.
#include <filesystem>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/fused_bottlenecks.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"
#include "layers/layers.h"
#include "layers/kasmina/scratch_kernel_store.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

using Store = kasmina::testing::ScratchKernelStore;

// A linear bottleneck with relu instead of gelu: another form, so it never joins a gelu group.
KernelArtifact relu_linear_bottleneck(int64_t in, int64_t out, int64_t hidden, Generator* generator) {
    KernelArtifact artifact = make_linear_bottleneck(in, out, hidden, 0.3, "relu-bottleneck", generator);
    artifact.ops[1].type = KernelOpType::relu;
    return artifact;
}

struct Gradients {
    Tensor output, input;
    std::map<std::string, Tensor> parameters;
};

Gradients run(KasminaLayerBase& layer, const Tensor& x, bool fusion) {
    layer.seeds().set_fusion(fusion ? SeedBank::Fusion::on : SeedBank::Fusion::off);
    const int64_t fused_before = layer.seeds().fused_group_runs();
    nn::Module& module = layer.module();
    module.zero_grad();
    const Tensor input = x.detach().set_requires_grad(true);
    const Tensor output = module.forward(input);
    sum(output * output).backward();
    EXPECT_EQ(layer.seeds().fused_group_runs() - fused_before, fusion ? 1 : 0);
    Gradients result{output.detach(), input.grad(), {}};
    for (const auto& [name, tensor] : module.named_parameters()) result.parameters[name] = tensor.grad();
    return result;
}

void expect_same(const Gradients& fused, const Gradients& separate, double tolerance) {
    kasmina::testing::expect_tensors_close(fused.output, separate.output, tolerance);
    kasmina::testing::expect_tensors_close(fused.input, separate.input, tolerance);
    ASSERT_EQ(fused.parameters.size(), separate.parameters.size());
    for (const auto& [name, grad] : separate.parameters) {
        SCOPED_TRACE(name);
        ASSERT_TRUE(grad.defined());
        kasmina::testing::expect_tensors_close(fused.parameters.at(name), grad, tolerance);
    }
}

}  // namespace

TEST(FusedBottlenecks, RunsAsTheShareWeightedSumOfItsKernelsAndRefusesOtherForms) {
    Generator generator(11);
    const KernelArtifact a = make_linear_bottleneck(5, 4, 3, 0.3, "a", &generator);
    const KernelArtifact b = make_linear_bottleneck(5, 4, 2, 0.3, "b", &generator);
    const KernelNetwork ka(a, false), kb(b, false), kr(relu_linear_bottleneck(5, 4, 2, &generator), false);
    ASSERT_TRUE(bottleneck_form(ka) && bottleneck_form(kr));
    EXPECT_EQ(*bottleneck_form(ka), *bottleneck_form(kb));
    EXPECT_FALSE(*bottleneck_form(ka) == *bottleneck_form(kr));
    const Tensor x = Tensor::randn({7, 5});
    kasmina::testing::expect_tensors_close(run_fused_bottlenecks({&ka, &kb}, {0.25, 0.75}, x),
                                           ka.forward(x) * 0.25 + kb.forward(x) * 0.75, 1e-6);
    EXPECT_THROW(run_fused_bottlenecks({&ka, &kr}, {0.5, 0.5}, x), Error);
    const KernelNetwork norm(make_norm_affine({4}, -1), false);
    EXPECT_FALSE(bottleneck_form(norm).has_value());
}

// Inference forwards reuse a group's fused weights, and drop them once a share or a weight changes.
TEST(FusedBottlenecks, CachedWeightsFollowShareAndWeightChanges) {
    Generator generator(12);
    const KernelNetwork ka(make_linear_bottleneck(5, 4, 3, 0.3, "a", &generator), false);
    const KernelNetwork kb(make_linear_bottleneck(5, 4, 2, 0.3, "b", &generator), false);
    const Tensor x = Tensor::randn({7, 5});
    FusedWeightsCache cache;
    NoGradGuard no_grad;
    const auto expect_blend = [&](double share_a, double share_b) {
        kasmina::testing::expect_tensors_close(run_fused_bottlenecks({&ka, &kb}, {share_a, share_b}, x, &cache),
                                               ka.forward(x) * share_a + kb.forward(x) * share_b, 1e-6);
    };
    expect_blend(0.25, 0.75);
    expect_blend(0.25, 0.75);  // from the cache
    expect_blend(0.5, 0.5);
    Tensor second = ka.weight(ka.ops()[2].weight);
    second.fill_(0.125);  // in place: a new version of the same storage
    expect_blend(0.5, 0.5);
    expect_blend(0.25, 0.75);
}

TEST(FusedBottlenecks, LinearGroupGivesThePerSeedOutputAndGradients) {
    Store store("linear");
    Generator generator(5);
    nn::Linear original(6, 5);
    original.to(DType::f64);
    KasminaLayer layer(original, {.cache = store.cache});
    layer.load_kernel(0, store.add(make_linear_bottleneck(6, 5, 2, 0.3, "a", &generator)), {.alpha = 0.2});
    layer.load_kernel(1, store.add(relu_linear_bottleneck(6, 5, 3, &generator)), {.alpha = 0.3});  // runs alone
    layer.load_kernel(2, store.add(make_linear_bottleneck(6, 5, 4, 0.3, "b", &generator)), {.alpha = 0.15});
    layer.load_kernel(3, store.add(make_linear_bottleneck(6, 5, 3, 0.3, "c", &generator)), {.alpha = 0.1});
    const Tensor x = Tensor::randn({9, 6}, {.dtype = DType::f64});
    expect_same(run(layer, x, true), run(layer, x, false), 1e-12);  // alpha sum 0.75
    layer.set_seed_alpha(2, 0.7);
    expect_same(run(layer, x, true), run(layer, x, false), 1e-12);  // alpha sum 1.3: d drops out
    for (const SeedReport& report : layer.layer_stats()) EXPECT_EQ(report.consecutive_errors, 0u);
}

TEST(FusedBottlenecks, ConvGroupGivesThePerSeedOutputAndGradients) {
    Store store("conv");
    Generator generator(6);
    nn::Conv2d original(3, 4, 3, {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}});
    original.to(DType::f64);
    KasminaConv2dLayer layer(original, {.cache = store.cache});
    for (int seed = 0; seed < 2; ++seed)
        layer.load_kernel(seed, store.add(make_conv_bottleneck(3, 4, 2 + seed, {3, 3}, {2, 2}, {2, 2}, {2, 2}, 0.3,
                                                               "conv" + std::to_string(seed), &generator)),
                          {.alpha = 0.25 + 0.2 * seed});
    const Tensor x = Tensor::randn({2, 3, 9, 8}, {.dtype = DType::f64});
    expect_same(run(layer, x, true), run(layer, x, false), 1e-12);
}

TEST(FusedBottlenecks, ANonFiniteMemberFallsBackAloneAndIsTheOnlyOneRecorded) {
    Store store("nan");
    Generator generator(7);
    nn::Linear original(4, 3);
    KasminaLayer layer(original, {.cache = store.cache});
    layer.load_kernel(0, store.add(make_linear_bottleneck(4, 3, 2, 0.3, "a", &generator)), {.alpha = 0.4});
    layer.load_kernel(1, store.add(make_linear_bottleneck(4, 3, 2, 0.3, "b", &generator)), {.alpha = 0.3});
    layer.seeds().set_fusion(SeedBank::Fusion::on);  // automatic keeps CPU layers per seed
    kasmina::testing::fill_parameter(layer, "seeds.1.w2", std::numeric_limits<double>::infinity());
    const Tensor x = Tensor::randn({5, 4});
    const Tensor d = original.forward(x);
    auto network = std::make_shared<KernelNetwork>(store.cache->get(layer.layer_stats()[0].kernel_id, Device::cpu())->artifact, false);
    // Seed 1 drops out of this step's blend: out = (1 - 0.4) d + 0.4 k0.
    kasmina::testing::expect_tensors_close(layer.forward(x), d * 0.6 + network->forward(x) * 0.4, 1e-6);
    EXPECT_EQ(layer.seeds().fused_group_runs(), 0);  // the group was tried and handed back
    const std::vector<SeedReport> reports = layer.layer_stats();
    EXPECT_EQ(reports[0].consecutive_errors, 0u);
    EXPECT_EQ(reports[1].consecutive_errors, 1u);
}

TEST(FusedBottlenecks, TheAutomaticSettingKeepsCpuLayersPerSeed) {
    Store store("automatic");
    Generator generator(8);
    nn::Linear original(4, 3);
    KasminaLayer layer(original, {.cache = store.cache});
    EXPECT_EQ(layer.seeds().fusion(), SeedBank::Fusion::automatic);
    for (int seed = 0; seed < 2; ++seed)
        layer.load_kernel(seed, store.add(make_linear_bottleneck(4, 3, 2, 0.3, "s" + std::to_string(seed), &generator)));
    const Tensor out = layer.forward(Tensor::randn({5, 4}));
    EXPECT_EQ(out.shape(), (Shape{5, 3}));
    EXPECT_EQ(layer.seeds().fused_group_runs(), 0);
}
