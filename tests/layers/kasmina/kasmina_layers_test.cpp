// Kasmina layers: identical to the original with dormant seeds (outputs, gradients, buffers, train
// and eval), blending with loaded kernels, head-sliced attention, refusals that change nothing,
// failure fallback, lifecycle controls, wrap()/unwrap(), telemetry, concurrency and learning.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"
#include "layers/layers.h"
#include "layers/kasmina/scratch_kernel_store.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

using StoreFixture = kasmina::testing::ScratchKernelStore;

std::vector<float> values(const Tensor& t) { return t.contiguous().to_vector<float>(); }

// Two structurally identical models with identical weights; the second gets wrapped.
std::shared_ptr<nn::Sequential> conv_network() {
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Conv2d>(3, 4, 3, nn::Conv2dOptions{.padding = {1, 1}}), std::make_shared<nn::BatchNorm2d>(4),
        std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(4 * 5 * 5, 6),
        std::make_shared<nn::BatchNorm1d>(6), std::make_shared<nn::LayerNorm>(Shape{6})});
}

void copy_weights(const nn::Module& from, nn::Module& to) { to.load_state_dict(from.state_dict()); }

}  // namespace

TEST(KasminaDormant, WrappedModelMatchesOriginalBitForBitInTrainAndEval) {
    manual_seed(3);
    auto original = conv_network();
    auto copy = conv_network();
    copy_weights(*original, *copy);
    StoreFixture fixture("dormant");
    MorphableModel wrapped = wrap(copy, {.cache = fixture.cache});
    EXPECT_EQ(wrapped.kasmina_layers(), (std::vector<std::string>{"0", "1", "4", "5", "6"}));
    for (int step = 0; step < 3; ++step) {
        const Tensor x = Tensor::randn({4, 3, 5, 5});
        Tensor x_original = x.clone().set_requires_grad(true), x_wrapped = x.clone().set_requires_grad(true);
        const Tensor y_original = original->forward(x_original), y_wrapped = wrapped.forward(x_wrapped);
        EXPECT_EQ(values(y_wrapped), values(y_original)) << "step " << step;
        sum(y_original * y_original).backward();
        sum(y_wrapped * y_wrapped).backward();
        EXPECT_EQ(values(x_wrapped.grad()), values(x_original.grad()));
        const auto params_original = original->named_parameters(), params_wrapped = copy->named_parameters();
        ASSERT_EQ(params_original.size(), params_wrapped.size());
        for (size_t i = 0; i < params_original.size(); ++i) {
            EXPECT_EQ(params_wrapped[i].first, params_original[i].first);
            EXPECT_EQ(values(params_wrapped[i].second.grad()), values(params_original[i].second.grad())) << params_original[i].first;
        }
    }
    const auto buffers_original = original->named_buffers(), buffers_wrapped = copy->named_buffers();
    for (size_t i = 0; i < buffers_original.size(); ++i)
        EXPECT_EQ(buffers_wrapped[i].second.to_vector<double>(), buffers_original[i].second.to_vector<double>())
            << buffers_original[i].first;
    original->eval();
    copy->eval();
    const Tensor x = Tensor::randn({2, 3, 5, 5});
    EXPECT_EQ(values(wrapped.forward(x)), values(original->forward(x)));
}

TEST(KasminaDormant, AttentionMatchesOriginalBitForBit) {
    nn::MultiheadAttention original(8, 2, {.batch_first = true});
    StoreFixture fixture("dormant_attention");
    KasminaAttentionLayer layer(original, {.cache = fixture.cache});
    const Tensor x = Tensor::randn({2, 5, 8});
    Tensor xa = x.clone().set_requires_grad(true), xb = x.clone().set_requires_grad(true);
    const auto [ya, wa] = original.forward(xa, xa, xa);
    const auto [yb, wb] = layer.forward(xb, xb, xb);
    EXPECT_EQ(values(yb), values(ya));
    EXPECT_EQ(values(wb), values(wa));
    sum(ya).backward();
    sum(yb).backward();
    EXPECT_EQ(values(xb.grad()), values(xa.grad()));
    EXPECT_EQ(values(layer.in_proj_weight.grad()), values(original.in_proj_weight.grad()));
}

TEST(KasminaLinear, LoadedKernelIsBlendedWithItsAlpha) {
    StoreFixture fixture("linear_blend");
    nn::Linear original(6, 4);
    KasminaLayer layer(original, {.cache = fixture.cache});
    const uint64_t id = fixture.add(make_linear_bottleneck(6, 4, 3));
    layer.load_kernel(1, id);
    EXPECT_EQ(layer.seeds().state_copy().lifecycle(1), SeedLifecycle::active);
    EXPECT_FLOAT_EQ(layer.seeds().state_copy().alpha(1), 0.3f);  // the artifact's suggested alpha
    const Tensor x = Tensor::randn({5, 6});
    const Tensor d = original.forward(x);
    auto network = std::make_shared<KernelNetwork>(fixture.cache->get(id, Device::cpu())->artifact, false);
    const Tensor k = network->forward(x);
    kasmina::testing::expect_tensors_close(layer.forward(x), d * 0.7 + k * 0.3, 1e-6);
    // The kernel's weights are parameters of the layer, so an optimizer trains them.
    const auto names = [&] {
        std::vector<std::string> result;
        for (auto& [name, tensor] : layer.named_parameters()) result.push_back(name);
        return result;
    }();
    EXPECT_NE(std::find(names.begin(), names.end(), "seeds.1.w0"), names.end());
}

TEST(KasminaLinear, TwoSeedsWithAlphasAboveOneDropTheOriginalPath) {
    StoreFixture fixture("linear_two");
    nn::Linear original(4, 4);
    KasminaLayer layer(original, {.cache = fixture.cache});
    const uint64_t a = fixture.add(make_linear_bottleneck(4, 4, 2)), b = fixture.add(make_linear_bottleneck(4, 4, 5));
    layer.load_kernel(0, a, {.alpha = 0.8});
    layer.load_kernel(3, b, {.alpha = 0.6});
    const Tensor x = Tensor::randn({3, 4});
    const Tensor ka = KernelNetwork(fixture.cache->get(a, Device::cpu())->artifact, false).forward(x);
    const Tensor kb = KernelNetwork(fixture.cache->get(b, Device::cpu())->artifact, false).forward(x);
    kasmina::testing::expect_tensors_close(layer.forward(x), (ka * 0.8 + kb * 0.6) / 1.4, 1e-6);
}

TEST(KasminaConv2d, BottleneckHonoursStridePaddingDilation) {
    StoreFixture fixture("conv");
    nn::Conv2d original(3, 5, 3, {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}});
    KasminaConv2dLayer layer(original, {.cache = fixture.cache});
    layer.load_kernel(0, fixture.add(make_conv_bottleneck(3, 5, 2, {3, 3}, {2, 2}, {2, 2}, {2, 2})), {.alpha = 0.5});
    const Tensor x = Tensor::randn({2, 3, 9, 9});
    const Tensor y = layer.forward(x);
    EXPECT_EQ(y.shape(), original.forward(x).shape());
    EXPECT_NE(values(y), values(original.forward(x)));
}

TEST(KasminaNorms, AffineSeedsNeverTouchRunningStatistics) {
    StoreFixture fixture("norms");
    nn::BatchNorm2d original(4);
    Kasmina2dBatchNormLayer layer(original, {.cache = fixture.cache});
    const uint64_t id = fixture.add(make_norm_affine({4}, 1));
    layer.load_kernel(2, id, {.alpha = 0.5});
    const Tensor x = Tensor::randn({3, 4, 2, 2});
    const Tensor y = layer.forward(x);
    original.forward(x);
    EXPECT_EQ(layer.running_mean.to_vector<float>(), original.running_mean.to_vector<float>());
    EXPECT_EQ(layer.running_var.to_vector<float>(), original.running_var.to_vector<float>());
    EXPECT_EQ(layer.num_batches_tracked.item<int64_t>(), original.num_batches_tracked.item<int64_t>());
    // A fresh affine adaptation is the identity, so the blend reproduces the layer's output.
    kasmina::testing::expect_tensors_close(y, original.forward(x).detach() * 0 + y.detach(), 0);
    nn::LayerNorm layer_norm_original({3, 2});
    KasminaLayerNormLayer layer_norm(layer_norm_original, {.cache = fixture.cache});
    layer_norm.load_kernel(0, fixture.add(make_norm_affine({3, 2}, -1)));
    const Tensor z = Tensor::randn({4, 3, 2});
    kasmina::testing::expect_tensors_close(layer_norm.forward(z), layer_norm_original.forward(z), 1e-6);
}

TEST(KasminaAttention, KernelOnHeadsOneAndThreeChangesOnlyThoseHeads) {
    StoreFixture fixture("attention_heads");
    nn::MultiheadAttention original(16, 4, {.batch_first = true});
    KasminaAttentionLayer layer(original, {.cache = fixture.cache});
    layer.load_kernel(0, fixture.add(make_attention_head_mlp(4, 4, 6, {1, 3})), {.alpha = 0.5});
    const Tensor x = Tensor::randn({2, 3, 16});
    const nn::AttentionHeads heads = layer.attend_heads(x, x, x, Tensor(), false);
    const Tensor blended = layer.blended_head_context(heads.context);
    for (int64_t h = 0; h < 4; ++h) {
        const bool targeted = h == 1 || h == 3;
        const bool equal = values(blended.select(1, h)) == values(heads.context.select(1, h));
        EXPECT_EQ(equal, !targeted) << "head " << h;
    }
    layer.set_seed_alpha(0, 0.0);
    EXPECT_EQ(values(layer.blended_head_context(heads.context)), values(heads.context));
    EXPECT_EQ(values(layer.forward(x)), values(original.forward(x)));
}

TEST(KasminaRefusal, BadArtifactsLeaveTheSeedDormantAndTheOutputUnchanged) {
    StoreFixture fixture("refusal");
    nn::Linear original(6, 4);
    KasminaLayer layer(original, {.cache = fixture.cache});
    const Tensor x = Tensor::randn({2, 6});
    const std::vector<float> before = values(layer.forward(x));
    // Kind mismatch (a conv kernel for a linear layer), shape mismatch, and a missing id.
    const uint64_t conv = fixture.add(make_conv_bottleneck(6, 4, 2, {3, 3}, {1, 1}, {1, 1}, {1, 1}));
    EXPECT_THROW_WITH(layer.load_kernel(0, conv), ArtifactError, "kind mismatch");
    const uint64_t wrong_shape = fixture.add(make_linear_bottleneck(5, 4, 3));
    EXPECT_THROW_WITH(layer.load_kernel(0, wrong_shape), ArtifactError, "refused kernel");
    EXPECT_THROW(layer.load_kernel(0, 0x1234), ArtifactError);
    // A stored file replaced by garbage.
    const uint64_t good = fixture.add(make_linear_bottleneck(6, 4, 3));
    {
        std::ofstream corrupt(fixture.directory / (format_kernel_id(good) + ".safetensors"), std::ios::binary | std::ios::trunc);
        corrupt << "not a safetensors file";
    }
    EXPECT_THROW(layer.load_kernel(0, good), ArtifactError);
    for (const SeedReport& report : layer.layer_stats()) EXPECT_EQ(report.lifecycle, SeedLifecycle::dormant);
    EXPECT_EQ(values(layer.forward(x)), before);
}

TEST(KasminaFailures, NonFiniteKernelOutputFallsBackAndThreeFailuresRecover) {
    StoreFixture fixture("failures");
    nn::Linear original(4, 3);
    KasminaLayer layer(original, {.cache = fixture.cache});
    layer.load_kernel(0, fixture.add(make_linear_bottleneck(4, 3, 2)), {.alpha = 0.5});
    kasmina::testing::fill_parameter(layer, "seeds.0.w0", std::numeric_limits<double>::quiet_NaN());
    const Tensor x = Tensor::randn({2, 4});
    for (int step = 1; step <= 3; ++step) {
        EXPECT_EQ(values(layer.forward(x)), values(original.forward(x))) << "step " << step;  // the original path
        const SeedReport report = layer.layer_stats()[0];
        EXPECT_EQ(report.consecutive_errors, static_cast<uint32_t>(step));
        EXPECT_EQ(report.lifecycle, step < 3 ? SeedLifecycle::active : SeedLifecycle::error_recovery);
        EXPECT_EQ(report.fallback, step == 3);
    }
    layer.unload_kernel(0);
    EXPECT_EQ(layer.layer_stats()[0].lifecycle, SeedLifecycle::dormant);
    EXPECT_EQ(layer.layer_stats()[0].alpha, 0.0);
}

TEST(KasminaControls, RampFossilizeAndIllegalTransitions) {
    StoreFixture fixture("controls");
    nn::Linear original(4, 4);
    KasminaLayer layer(original, {.cache = fixture.cache});
    const uint64_t id = fixture.add(make_linear_bottleneck(4, 4, 2));
    layer.load_kernel(0, id, {.alpha = 0.0});
    layer.ramp_alpha(0, 0.8, 4);
    const Tensor x = Tensor::randn({2, 4});
    for (int step = 1; step <= 4; ++step) {
        layer.forward(x);
        EXPECT_NEAR(layer.layer_stats()[0].alpha, 0.2 * step, 1e-6);
    }
    layer.forward(x);
    EXPECT_NEAR(layer.layer_stats()[0].alpha, 0.8, 1e-6);
    layer.set_seed_alpha(0, 1.7);
    EXPECT_FLOAT_EQ(layer.layer_stats()[0].alpha, 1.0f);  // clamped
    layer.fossilize(0);
    for (auto& [name, tensor] : layer.named_parameters())
        if (name.rfind("seeds.0.", 0) == 0) EXPECT_FALSE(tensor.requires_grad()) << name;
    EXPECT_THROW_WITH(layer.set_seed_alpha(0, 0.5), Error, "FOSSILIZED");
    EXPECT_THROW_WITH(layer.unload_kernel(0), Error, "FOSSILIZED");
    EXPECT_THROW_WITH(layer.load_kernel(0, id), Error, "illegal transition FOSSILIZED -> LOADING");
    EXPECT_THROW_WITH(layer.ramp_alpha(1, 0.5, 3), Error, "DORMANT");
}

TEST(SeedStateRules, TransitionsHealthLatencyAndFailures) {
    SeedState state(2);
    EXPECT_THROW_WITH(state.transition(0, SeedLifecycle::active, 0), Error, "illegal transition DORMANT -> ACTIVE");
    state.transition(0, SeedLifecycle::loading, 1);
    state.transition(0, SeedLifecycle::active, 2);
    EXPECT_EQ(state.last_update_step(0), 2);
    state.record_health(0, 0.5);
    EXPECT_FLOAT_EQ(state.health(0), 0.5f);  // first sample taken as is
    state.record_health(0, 1.0);
    EXPECT_FLOAT_EQ(state.health(0), 0.55f);  // EMA with factor 0.1
    state.record_latency(0, 1ull << 40);
    EXPECT_EQ(state.latency_us(0), std::numeric_limits<uint32_t>::max());
    EXPECT_FALSE(state.record_failure(0, 3));
    state.record_success(0);
    EXPECT_EQ(state.consecutive_errors(0), 0u);
    EXPECT_FALSE(state.record_failure(0, 4));
    EXPECT_FALSE(state.record_failure(0, 5));
    EXPECT_TRUE(state.record_failure(0, 6));
    EXPECT_TRUE(state.fallback(0));
    EXPECT_EQ(state.lifecycle(0), SeedLifecycle::error_recovery);
    state.transition(0, SeedLifecycle::active, 7);
    state.record_success(0);
    EXPECT_FALSE(state.fallback(0));
    EXPECT_THROW_WITH(state.lifecycle(5), Error, "out of range");
    SeedState restored(2);
    restored.load_tensors(state.to_tensors());
    EXPECT_EQ(restored.lifecycle(0), SeedLifecycle::active);
    EXPECT_FLOAT_EQ(restored.health(0), state.health(0));
}

TEST(KasminaWrap, ReportsUnsupportedLayersAndUnwrapKeepsFossils) {
    StoreFixture fixture("wrap");
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(4, 4), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(4, 2)});
    MorphableModel morphable = wrap(model, {.targets = {"Linear"}, .num_seeds = 2, .cache = fixture.cache});
    EXPECT_EQ(morphable.kasmina_layers(), (std::vector<std::string>{"0", "2"}));
    EXPECT_EQ(morphable.unsupported(), (std::vector<std::string>{"1 (ReLU)"}));
    EXPECT_THROW_WITH(morphable.layer("7"), Error, "no Kasmina layer named '7' (layers: 0, 2)");
    const uint64_t id = fixture.add(make_linear_bottleneck(4, 4, 2));
    morphable.load_kernel("0", 1, id);
    morphable.fossilize("0", 1);
    morphable.load_kernel("2", 0, fixture.add(make_linear_bottleneck(4, 2, 2)));
    const ModelStats stats = morphable.model_stats();
    EXPECT_EQ(stats.layers, 2);
    EXPECT_EQ(stats.seeds, 4);
    EXPECT_EQ(stats.seeds_by_lifecycle.at(SeedLifecycle::fossilized), 1);
    EXPECT_EQ(stats.seeds_by_lifecycle.at(SeedLifecycle::active), 1);
    EXPECT_EQ(stats.cache.misses, 2u);
    const Tensor x = Tensor::randn({3, 4});
    const std::vector<float> layer2_plain_weights = values(static_cast<nn::Linear&>(morphable.layer("2").module()).weight);
    morphable.unwrap();
    EXPECT_EQ((*model)[2]->type_name(), "Linear");
    EXPECT_EQ(values(static_cast<nn::Linear&>(*(*model)[2]).weight), layer2_plain_weights);
    EXPECT_EQ((*model)[0]->type_name(), "KasminaLayer");  // fossilized seed stays in
    EXPECT_EQ(morphable.kasmina_layers(), (std::vector<std::string>{"0"}));
}

TEST(KasminaTelemetry, MemoryAndJsonLinesSinksReceiveReports) {
    StoreFixture fixture("telemetry");
    auto memory = std::make_shared<MemoryTelemetry>();
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(4, 4)});
    MorphableModel morphable = wrap(model, {.cache = fixture.cache, .telemetry = memory, .telemetry_interval = 2});
    morphable.load_kernel("0", 0, fixture.add(make_linear_bottleneck(4, 4, 2)));
    for (int step = 0; step < 4; ++step) morphable.forward(Tensor::randn({8, 4}));
    const auto reports = memory->reports();
    ASSERT_EQ(reports.size(), 2u);  // steps 2 and 4
    EXPECT_EQ(reports[0].layer, "0");
    EXPECT_EQ(reports[0].step, 2);
    EXPECT_EQ(reports[0].seeds[0].lifecycle, SeedLifecycle::active);
    EXPECT_GT(reports[0].activation_variance, 0.0);
    EXPECT_GE(reports[0].dead_fraction, 0.0);
    EXPECT_LE(reports[0].dead_fraction, 1.0);
    const std::string path = (fixture.directory / "telemetry.jsonl").string();
    auto file_sink = std::make_shared<JsonLinesTelemetry>(path);
    morphable.layer("0").set_telemetry(file_sink, "0", 1);
    morphable.forward(Tensor::randn({8, 4}));
    std::ifstream stream(path);
    std::string line;
    ASSERT_TRUE(std::getline(stream, line));
    EXPECT_NE(line.find("\"lifecycle\":\"ACTIVE\""), std::string::npos) << line;
    EXPECT_NE(line.find("\"cache\""), std::string::npos) << line;
}

TEST(KasminaConcurrency, ControllerThreadLoadsWhileTrainingRuns) {
    StoreFixture fixture("concurrency");
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(8, 8), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 4)});
    MorphableModel morphable = wrap(model, {.cache = fixture.cache});
    const std::vector<uint64_t> first{fixture.add(make_linear_bottleneck(8, 8, 2)), fixture.add(make_linear_bottleneck(8, 8, 3))};
    const std::vector<uint64_t> second{fixture.add(make_linear_bottleneck(8, 4, 2)), fixture.add(make_linear_bottleneck(8, 4, 3))};
    std::atomic<bool> done{false};
    std::atomic<int> operations{0};
    std::thread controller([&] {
        Generator choices(17);
        while (!done.load()) {
            const auto draw = Tensor::rand({4}, {.dtype = DType::f64}, &choices).to_vector<double>();
            const std::string layer = draw[0] < 0.5 ? "0" : "2";
            const int seed = static_cast<int>(draw[1] * 4);
            const auto& ids = layer == "0" ? first : second;
            try {
                const SeedLifecycle lifecycle = morphable.layer(layer).layer_stats()[seed].lifecycle;
                if (lifecycle == SeedLifecycle::dormant) morphable.load_kernel(layer, seed, ids[draw[2] < 0.5 ? 0 : 1]);
                else if (draw[3] < 0.5) morphable.unload_kernel(layer, seed);
                else morphable.ramp_alpha(layer, seed, draw[2], 5);
                ++operations;
            } catch (const Error&) {
                // A transition raced with another (e.g. a ramp after the seed was unloaded): allowed.
            }
        }
    });
    for (int step = 0; step < 1000; ++step) {
        Tensor x = Tensor::randn({4, 8}).set_requires_grad(true);
        const Tensor y = morphable.forward(x);
        sum(y).backward();
        ASSERT_EQ(y.shape(), (Shape{4, 4}));
        ASSERT_TRUE(std::isfinite(sum(y).item()));
    }
    done = true;
    controller.join();
    EXPECT_GT(operations.load(), 10);
    for (const std::string& name : morphable.kasmina_layers())
        for (const SeedReport& report : morphable.layer(name).layer_stats())
            EXPECT_NE(report.lifecycle, SeedLifecycle::loading) << "no seed left half-initialized";
}

TEST(KasminaLearning, ALoadedKernelLowersTheLoss) {
    // Target y = relu-ish nonlinear map of x that a linear layer cannot fit; a bottleneck MLP seed can.
    auto run = [](bool with_seed) {
        manual_seed(11);
        StoreFixture fixture(with_seed ? "learn_seed" : "learn_plain");
        auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(4, 2)});
        MorphableModel morphable = wrap(model, {.cache = fixture.cache});
        Generator generator(5);
        if (with_seed) morphable.load_kernel("0", 0, fixture.add(make_linear_bottleneck(4, 2, 16, 0.5)), {.alpha = 0.5});
        optim::AdamW optimizer(model->parameters(), {.lr = 0.01, .weight_decay = 0.0});
        const Tensor x = Tensor::randn({256, 4}, {}, &generator);
        const Tensor target = cat({abs(x.narrow(1, 0, 1)) + tanh(x.narrow(1, 1, 1) * 2.0), x.narrow(1, 2, 1) * x.narrow(1, 3, 1)}, 1);
        double loss_value = 0;
        for (int step = 0; step < 300; ++step) {
            optimizer.zero_grad();
            const Tensor loss = mse_loss(morphable.forward(x), target);
            loss.backward();
            optimizer.step();
            loss_value = loss.item();
        }
        return loss_value;
    };
    const double plain = run(false), seeded = run(true);
    EXPECT_LT(seeded, 0.7 * plain) << "plain " << plain << " seeded " << seeded;
}

TEST(KasminaWrap, AFloat64ModelStaysFloat64) {
    manual_seed(3);
    auto network = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Conv2d>(1, 4, 3), std::make_shared<nn::BatchNorm2d>(4), std::make_shared<nn::ReLU>()});
    network->to(DType::f64);
    const Tensor input = Tensor::randn({2, 1, 6, 6}, {.dtype = DType::f64});
    const Tensor before = network->forward(input);
    morph::MorphableModel model = morph::wrap(network);
    for (const auto& [name, tensor] : network->named_parameters()) EXPECT_EQ(tensor.dtype(), DType::f64) << name;
    const Tensor after = network->forward(input);
    EXPECT_EQ(after.dtype(), DType::f64);
    EXPECT_EQ(max(abs(after - before)).item(), 0.0);  // the same values, not rounded through float32
}
