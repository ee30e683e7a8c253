// The Kasmina layers on the GPU: dormant wrapped layers equal the originals bit for bit on CUDA
// (outputs, gradients, buffers, train and eval) and allocate nothing extra; loaded kernels blend on
// the device and agree with the same layer on the CPU; the cache keeps device-resident weights; a
// short training run on CUDA follows the CPU run. Each test skips itself without a GPU.
#include <filesystem>

#include "kasmina.h"
#include "layers/kasmina/scratch_kernel_store.h"
#include "test_util.h"

#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/stream.h"
#endif

using namespace kasmina;
using namespace kasmina::morph;

namespace {

using kasmina::testing::kGpu;

using Store = kasmina::testing::ScratchKernelStore;

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu()).contiguous().to_vector<float>(); }

std::shared_ptr<nn::Sequential> network() {
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Conv2d>(3, 4, 3, nn::Conv2dOptions{.padding = {1, 1}}), std::make_shared<nn::BatchNorm2d>(4),
        std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(4 * 5 * 5, 6),
        std::make_shared<nn::BatchNorm1d>(6), std::make_shared<nn::LayerNorm>(Shape{6})});
}

}  // namespace

TEST(KasminaCuda, DormantWrappedModelMatchesTheOriginalBitForBit) {
    REQUIRE_GPU();
    manual_seed(5);
    auto original = network(), copy = network();
    copy->load_state_dict(original->state_dict());
    original->to(kGpu);
    copy->to(kGpu);
    Store store("dormant");
    MorphableModel wrapped = wrap(copy, {.cache = store.cache});
    for (int step = 0; step < 3; ++step) {
        const Tensor x = Tensor::randn({4, 3, 5, 5}).to(kGpu);
        Tensor xa = x.clone().set_requires_grad(true), xb = x.clone().set_requires_grad(true);
        const Tensor ya = original->forward(xa), yb = wrapped.forward(xb);
        EXPECT_EQ(host(yb), host(ya));
        sum(ya * ya).backward();
        sum(yb * yb).backward();
        EXPECT_EQ(host(xb.grad()), host(xa.grad()));
    }
    const auto buffers_a = original->named_buffers(), buffers_b = copy->named_buffers();
    for (size_t i = 0; i < buffers_a.size(); ++i)
        EXPECT_EQ(buffers_b[i].second.to(Device::cpu()).to_vector<double>(),
                  buffers_a[i].second.to(Device::cpu()).to_vector<double>())
            << buffers_a[i].first;
    original->eval();
    copy->eval();
    const Tensor x = Tensor::randn({2, 3, 5, 5}).to(kGpu);
    EXPECT_EQ(host(wrapped.forward(x)), host(original->forward(x)));
    // No allocation beyond the original's on the device either.
    Allocator& allocator = allocator_for(kGpu);
    auto count = [&](const std::function<void()>& work) {
        const uint64_t before = allocator.stats().allocations;
        work();
        return allocator.stats().allocations - before;
    };
    EXPECT_EQ(count([&] { wrapped.forward(x); }), count([&] { original->forward(x); }));
}

TEST(KasminaCuda, LoadedKernelsBlendOnTheDeviceLikeOnTheCpu) {
    REQUIRE_GPU();
    Store store("blend");
    nn::Linear cpu_linear(6, 4);
    KasminaLayer cpu_layer(cpu_linear, {.cache = store.cache});
    nn::Linear gpu_linear(6, 4);
    gpu_linear.load_state_dict(cpu_linear.state_dict());
    gpu_linear.to(kGpu);
    KasminaLayer gpu_layer(gpu_linear, {.cache = store.cache});
    const uint64_t a = store.add(make_linear_bottleneck(6, 4, 3)), b = store.add(make_linear_bottleneck(6, 4, 5));
    for (KasminaLayer* layer : {&cpu_layer, &gpu_layer}) {
        layer->load_kernel(0, a, {.alpha = 0.8});
        layer->load_kernel(2, b, {.alpha = 0.6});
    }
    EXPECT_TRUE(store.cache->contains(a, kGpu));
    EXPECT_EQ(store.cache->get(a, kGpu)->artifact.tensors.at("w0").device(), kGpu);
    for (const auto& [name, tensor] : gpu_layer.named_parameters()) EXPECT_EQ(tensor.device(), kGpu) << name;
    const Tensor x = Tensor::randn({5, 6});
    Tensor x_cpu = x.clone().set_requires_grad(true), x_gpu = x.to(kGpu).set_requires_grad(true);
    const Tensor y_cpu = cpu_layer.forward(x_cpu), y_gpu = gpu_layer.forward(x_gpu);
    kasmina::testing::expect_tensors_close(y_gpu.to(Device::cpu()), y_cpu, 1e-5);
    sum(y_cpu).backward();
    sum(y_gpu).backward();
    kasmina::testing::expect_tensors_close(x_gpu.grad().to(Device::cpu()), x_cpu.grad(), 1e-5);
    const auto cpu_parameters = cpu_layer.named_parameters(), gpu_parameters = gpu_layer.named_parameters();
    ASSERT_EQ(cpu_parameters.size(), gpu_parameters.size());
    for (size_t i = 0; i < cpu_parameters.size(); ++i)
        kasmina::testing::expect_tensors_close(gpu_parameters[i].second.grad().to(Device::cpu()), cpu_parameters[i].second.grad(),
                                               1e-5);
}

namespace {
// Output and gradients (input, every parameter) of sum(out^2), on the host.
std::vector<Tensor> output_and_gradients(KasminaLayerBase& layer, const Tensor& x, bool fusion) {
    layer.seeds().set_fusion(fusion ? SeedBank::Fusion::on : SeedBank::Fusion::off);
    layer.module().zero_grad();
    const Tensor input = x.detach().set_requires_grad(true);
    const Tensor output = layer.module().forward(input);
    sum(output * output).backward();
    std::vector<Tensor> result{output.detach().to(Device::cpu()), input.grad().to(Device::cpu())};
    for (const auto& [name, tensor] : layer.module().named_parameters()) result.push_back(tensor.grad().to(Device::cpu()));
    return result;
}

void expect_fused_matches_per_seed_and_cpu(KasminaLayerBase& cpu_layer, KasminaLayerBase& gpu_layer, const Tensor& x) {
    const int64_t fused_before = gpu_layer.seeds().fused_group_runs();
    const std::vector<Tensor> fused = output_and_gradients(gpu_layer, x.to(kGpu), true);
    EXPECT_EQ(gpu_layer.seeds().fused_group_runs(), fused_before + 1);
    const std::vector<Tensor> separate = output_and_gradients(gpu_layer, x.to(kGpu), false);
    const std::vector<Tensor> cpu = output_and_gradients(cpu_layer, x, true);  // fused on the CPU too (Fusion::on)
    ASSERT_EQ(fused.size(), separate.size());
    ASSERT_EQ(fused.size(), cpu.size());
    for (size_t i = 0; i < fused.size(); ++i) {
        SCOPED_TRACE(i);
        kasmina::testing::expect_tensors_close(fused[i], separate[i], 1e-4);
        kasmina::testing::expect_tensors_close(fused[i], cpu[i], 1e-4);
    }
}
}  // namespace

TEST(KasminaCuda, FusedBottleneckSeedsMatchThePerSeedPathAndTheCpu) {
    REQUIRE_GPU();
    Store store("fused");
    Generator generator(9);
    nn::Linear linear(24, 20);
    KasminaLayer cpu_linear(linear, {.cache = store.cache});
    linear.to(kGpu);
    KasminaLayer gpu_linear(linear, {.cache = store.cache});
    nn::Conv2d conv(3, 5, 3, {.padding = {1, 1}});
    KasminaConv2dLayer cpu_conv(conv, {.cache = store.cache});
    conv.to(kGpu);
    KasminaConv2dLayer gpu_conv(conv, {.cache = store.cache});
    for (int seed = 0; seed < 3; ++seed) {
        const uint64_t linear_kernel = store.add(make_linear_bottleneck(24, 20, 4 + seed, 0.3, "l" + std::to_string(seed), &generator));
        const uint64_t conv_kernel = store.add(make_conv_bottleneck(3, 5, 2 + seed, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 0.3,
                                                                    "c" + std::to_string(seed), &generator));
        for (KasminaLayerBase* layer : {static_cast<KasminaLayerBase*>(&cpu_linear), static_cast<KasminaLayerBase*>(&gpu_linear)})
            layer->load_kernel(seed, linear_kernel, {.alpha = 0.2 + 0.1 * seed});
        for (KasminaLayerBase* layer : {static_cast<KasminaLayerBase*>(&cpu_conv), static_cast<KasminaLayerBase*>(&gpu_conv)})
            layer->load_kernel(seed, conv_kernel, {.alpha = 0.5 - 0.1 * seed});
    }
    {
        SCOPED_TRACE("linear");
        expect_fused_matches_per_seed_and_cpu(cpu_linear, gpu_linear, Tensor::randn({33, 24}));
    }
    {
        SCOPED_TRACE("conv2d");
        expect_fused_matches_per_seed_and_cpu(cpu_conv, gpu_conv, Tensor::randn({2, 3, 7, 6}));
    }
}

TEST(KasminaCuda, AFusedGroupWithANonFiniteMemberFallsBackThenTheMemberIsFound) {
    REQUIRE_GPU();
    Store store("fused_nan");
    Generator generator(10);
    nn::Linear original(4, 3);
    original.to(kGpu);
    KasminaLayer layer(original, {.cache = store.cache});
    const uint64_t healthy = store.add(make_linear_bottleneck(4, 3, 2, 0.3, "a", &generator));
    layer.load_kernel(0, healthy, {.alpha = 0.4});
    layer.load_kernel(1, store.add(make_linear_bottleneck(4, 3, 2, 0.3, "b", &generator)), {.alpha = 0.3});
    kasmina::testing::fill_parameter(layer, "seeds.1.w2", std::numeric_limits<double>::infinity());
    const Tensor x = Tensor::randn({5, 4}).to(kGpu);
    const Tensor d = original.forward(x).to(Device::cpu());
    // The group's output is replaced by d on the device: out = 0.3 d + 0.7 d.
    kasmina::testing::expect_tensors_close(layer.forward(x).to(Device::cpu()), d, 1e-6);
    EXPECT_EQ(layer.seeds().fused_group_runs(), 1);
    layer.seeds().settle_checks();
    EXPECT_EQ(layer.layer_stats()[0].consecutive_errors, 0u);
    EXPECT_EQ(layer.layer_stats()[1].consecutive_errors, 0u);  // not known yet which member failed
    // Next forward: the members run one by one; seed 1's output is replaced by d: 0.3 d + 0.4 k0 + 0.3 d.
    const Tensor k0 = KernelNetwork(store.cache->get(healthy, Device::cpu())->artifact, false).forward(x.to(Device::cpu()));
    kasmina::testing::expect_tensors_close(layer.forward(x).to(Device::cpu()), d * 0.6 + k0 * 0.4, 1e-5);
    EXPECT_EQ(layer.seeds().fused_group_runs(), 1);
    layer.seeds().settle_checks();
    EXPECT_EQ(layer.layer_stats()[0].consecutive_errors, 0u);
    EXPECT_EQ(layer.layer_stats()[1].consecutive_errors, 1u);
}

TEST(KasminaCuda, ConvAttentionAndNormSeedsRunOnTheDevice) {
    REQUIRE_GPU();
    Store store("kinds");
    nn::Conv2d conv(3, 5, 3, {.stride = {2, 2}, .padding = {1, 1}});
    conv.to(kGpu);
    KasminaConv2dLayer kasmina_conv(conv, {.cache = store.cache});
    kasmina_conv.load_kernel(0, store.add(make_conv_bottleneck(3, 5, 2, {3, 3}, {2, 2}, {1, 1}, {1, 1})));
    const Tensor images = Tensor::randn({2, 3, 9, 9}).to(kGpu);
    EXPECT_EQ(kasmina_conv.forward(images).shape(), conv.forward(images).shape());

    nn::MultiheadAttention attention(16, 4, {.batch_first = true});
    attention.to(kGpu);
    KasminaAttentionLayer kasmina_attention(attention, {.cache = store.cache});
    kasmina_attention.load_kernel(0, store.add(make_attention_head_mlp(4, 4, 6, {1, 3})), {.alpha = 0.5});
    const Tensor tokens = Tensor::randn({2, 3, 16}).to(kGpu);
    const nn::AttentionHeads heads = kasmina_attention.attend_heads(tokens, tokens, tokens, Tensor(), false);
    const Tensor blended = kasmina_attention.blended_head_context(heads.context);
    for (int64_t h = 0; h < 4; ++h) {
        const bool same = host(blended.select(1, h)) == host(heads.context.select(1, h));
        EXPECT_EQ(same, h != 1 && h != 3) << "head " << h;
    }

    nn::BatchNorm2d norm(4);
    norm.to(kGpu);
    nn::BatchNorm2d twin(4);
    twin.to(kGpu);
    Kasmina2dBatchNormLayer kasmina_norm(norm, {.cache = store.cache});
    kasmina_norm.load_kernel(1, store.add(make_norm_affine({4}, 1)), {.alpha = 0.5});
    const Tensor features = Tensor::randn({3, 4, 2, 2}).to(kGpu);
    kasmina::testing::expect_tensors_close(kasmina_norm.forward(features).to(Device::cpu()),
                                           twin.forward(features).to(Device::cpu()), 1e-6);
    EXPECT_EQ(kasmina_norm.running_mean.to(Device::cpu()).to_vector<float>(), twin.running_mean.to(Device::cpu()).to_vector<float>());
}

TEST(KasminaCuda, TrainingOnTheDeviceFollowsTheCpuRun) {
    REQUIRE_GPU();
    auto run = [](Device device) {
        manual_seed(11);
        Store store(device.is_cpu() ? "train_cpu" : "train_gpu");
        auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
            std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 2)});
        model->to(device);
        MorphableModel morphable = wrap(model, {.cache = store.cache});
        morphable.load_kernel("0", 0, store.add(make_linear_bottleneck(4, 8, 4)), {.alpha = 0.0});
        morphable.ramp_alpha("0", 0, 0.4, 10);
        optim::AdamW optimizer(model->parameters(), {.lr = 0.01});
        Generator generator(5);
        const Tensor x = Tensor::randn({64, 4}, {}, &generator).to(device);
        const Tensor target = tanh(x.narrow(1, 0, 2) * 2.0);
        std::vector<double> losses;
        for (int step = 0; step < 30; ++step) {
            optimizer.zero_grad();
            const Tensor loss = mse_loss(morphable.forward(x), target);
            loss.backward();
            optimizer.step();
            losses.push_back(loss.item());
        }
        return losses;
    };
    const std::vector<double> cpu = run(Device::cpu()), gpu = run(kGpu);
    for (size_t step = 0; step < cpu.size(); ++step) EXPECT_NEAR(gpu[step], cpu[step], 1e-4 * std::max(1.0, cpu[step])) << step;
    EXPECT_LT(gpu.back(), gpu.front());
}

TEST(KasminaCuda, NonFiniteKernelFallsBackOnTheDeviceWithoutReadBack) {
    REQUIRE_GPU();
    Store store("nan");
    nn::Linear original(4, 3);
    original.to(kGpu);
    KasminaLayer layer(original, {.cache = store.cache});
    layer.load_kernel(0, store.add(make_linear_bottleneck(4, 3, 2)), {.alpha = 0.3});
    kasmina::testing::fill_parameter(layer, "seeds.0.w0", std::numeric_limits<double>::quiet_NaN());
    const Tensor x = Tensor::randn({2, 4}).to(kGpu);
    for (int step = 1; step <= 3; ++step)  // the original path's values (blended with themselves), never NaN
        kasmina::testing::expect_tensors_close(layer.forward(x).to(Device::cpu()), original.forward(x).to(Device::cpu()), 1e-6);
    EXPECT_EQ(layer.layer_stats()[0].consecutive_errors, 0u) << "nothing read back yet";
    layer.seeds().settle_checks();
    const SeedReport report = layer.layer_stats()[0];
    EXPECT_EQ(report.consecutive_errors, 3u);
    EXPECT_EQ(report.lifecycle, SeedLifecycle::error_recovery);
    EXPECT_TRUE(report.fallback);
}

TEST(KasminaCuda, WrappingOnTheCpuThenMovingTheModelTakesTheSeedsAlong) {
    REQUIRE_GPU();
    Store store("move");
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(4, 3)});
    MorphableModel morphable = wrap(model, {.cache = store.cache});
    const uint64_t shared = store.add(make_linear_bottleneck(4, 3, 2));
    morphable.load_kernel("0", 0, shared, {.alpha = 0.4, .trainable = false});
    morphable.load_kernel("0", 1, store.add(make_linear_bottleneck(4, 3, 5)), {.alpha = 0.4});
    const Tensor x = Tensor::randn({2, 4});
    const Tensor on_cpu = morphable.forward(x);
    model->to(kGpu);
    for (const auto& [name, tensor] : model->named_parameters()) EXPECT_EQ(tensor.device(), kGpu) << name;
    EXPECT_EQ(store.cache->get(shared, Device::cpu())->artifact.tensors.at("w0").device(), Device::cpu());
    kasmina::testing::expect_tensors_close(morphable.forward(x.to(kGpu)).to(Device::cpu()), on_cpu, 1e-5);
    morphable.load_kernel("0", 2, store.add(make_linear_bottleneck(4, 3, 3)));
    EXPECT_EQ(morphable.layer("0").layer_stats()[2].lifecycle, SeedLifecycle::active);
    EXPECT_EQ(morphable.forward(x.to(kGpu)).device(), kGpu);
}

#ifdef KASMINA_WITH_CUDA
TEST(KasminaCuda, TrainingForwardsNeitherWaitForTheDeviceNorAllocateFromIt) {
    REQUIRE_GPU();
    Store store("no_sync");
    nn::Linear original(64, 64);
    original.to(kGpu);
    KasminaLayer layer(original, {.cache = store.cache});
    layer.load_kernel(0, store.add(make_linear_bottleneck(64, 64, 8)), {.alpha = 0.3});
    layer.load_kernel(1, store.add(make_linear_bottleneck(64, 64, 4)), {.alpha = 0.1});
    layer.seeds().ramp_alpha(1, 0.5, 1000);
    layer.train();
    const Tensor x = Tensor::randn({32, 64}).to(kGpu);
    const int64_t interval = SeedBank::kSettleInterval;
    // Warm up through two polls, stopping 4 steps before the third: caches filled, a check batch in flight.
    while (layer.seeds().step() < 3 * interval - 4) layer.forward(x);
    synchronize(kGpu);
    // ~100 ms of queued GPU work: a forward that waited for the device would return to an idle queue.
    // (Only a few forwards follow: the launch queue is finite, and a full one makes the host wait too.)
    const Tensor big = Tensor::randn({4096, 4096}).to(kGpu) * (1.0 / 64.0);
    Tensor busy = big;
    for (int i = 0; i < 40; ++i) busy = matmul(busy, big);
    const uint64_t device_allocations = allocator_for(kGpu).stats().device_allocations;
    ASSERT_FALSE(cuda::current_stream(0).query()) << "the queued work itself waited";
    for (int i = 0; i < 8; ++i) layer.forward(x);  // across the poll: the landed batch is recorded, the next one queued
    EXPECT_FALSE(cuda::current_stream(0).query()) << "a forward waited for the device";
    EXPECT_GE(layer.seeds().step(), 3 * interval);
    EXPECT_EQ(allocator_for(kGpu).stats().device_allocations, device_allocations);
    synchronize(kGpu);
    EXPECT_EQ(layer.layer_stats()[0].consecutive_errors, 0u);
}

TEST(KasminaCuda, NonFiniteKernelIsRecordedByThePollsWithoutASettle) {
    REQUIRE_GPU();
    Store store("poll");
    nn::Linear original(4, 3);
    original.to(kGpu);
    KasminaLayer layer(original, {.cache = store.cache});
    layer.load_kernel(0, store.add(make_linear_bottleneck(4, 3, 2)), {.alpha = 0.3});
    kasmina::testing::fill_parameter(layer, "seeds.0.w0", std::numeric_limits<double>::quiet_NaN());
    layer.train();
    const Tensor x = Tensor::randn({2, 4}).to(kGpu);
    // the first poll queues the copy of the flags, a later one records them once the copy has landed
    for (int64_t i = 0; i < SeedBank::kSettleInterval; ++i) layer.forward(x);
    synchronize(kGpu);
    for (int64_t i = 0; i < SeedBank::kSettleInterval; ++i) layer.forward(x);
    const SeedReport report = layer.layer_stats()[0];
    EXPECT_EQ(report.lifecycle, SeedLifecycle::error_recovery);
    EXPECT_TRUE(report.fallback);
}
#endif
