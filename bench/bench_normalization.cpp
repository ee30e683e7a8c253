// Layer and batch normalization benchmarks on the CPU: layer_norm over the last dim of x[2048,512]
// (affine), batch_norm in training on x[8,32,32,32] (NCHW, per-channel over N, H, W) and x[256,512]
// (per feature over N), forward alone (no grad) and forward + backward (gradient of the sum of the
// outputs) to input, weight and bias; batch_norm in eval on the NCHW input. BENCHMARKS.md CPU sizes.
// On the GPU (skipped without one), the GPU sizes' forward passes, and the host's cost of queueing one
// forward (no sync: what a layer costs the CPU before its kernels run, which an idle GPU waits for).
#include <benchmark/benchmark.h>

#include "autograd/normalization.h"
#include "kasmina.h"

using namespace kasmina;

namespace {

// Bytes a forward pass must move at least: read x, write the output.
void set_forward_bytes(benchmark::State& state, const Tensor& x) {
    state.SetBytesProcessed(state.iterations() * 2 * x.numel() * 4);
}

void BM_LayerNormForward(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512}), weight = Tensor::randn({512}), bias = Tensor::randn({512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(layer_norm(x, {512}, weight, bias));
    set_forward_bytes(state, x);
}
BENCHMARK(BM_LayerNormForward)->Unit(benchmark::kMicrosecond);

void BM_LayerNormForwardBackward(benchmark::State& state) {
    Tensor x = Tensor::randn({2048, 512}).set_requires_grad(true);
    Tensor weight = Tensor::randn({512}).set_requires_grad(true), bias = Tensor::randn({512}).set_requires_grad(true);
    for (auto _ : state) {
        x.set_grad({});
        weight.set_grad({});
        bias.set_grad({});
        sum(layer_norm(x, {512}, weight, bias)).backward();
    }
}
BENCHMARK(BM_LayerNormForwardBackward)->Unit(benchmark::kMicrosecond);

void batch_norm_forward(benchmark::State& state, const Shape& shape) {
    const int64_t channels = shape[1];
    const Tensor x = Tensor::randn(shape), weight = Tensor::randn({channels}), bias = Tensor::randn({channels});
    Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::ones({channels});
    NoGradGuard no_grad;
    for (auto _ : state)
        benchmark::DoNotOptimize(batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5));
    set_forward_bytes(state, x);
}

void batch_norm_forward_backward(benchmark::State& state, const Shape& shape) {
    const int64_t channels = shape[1];
    Tensor x = Tensor::randn(shape).set_requires_grad(true);
    Tensor weight = Tensor::randn({channels}).set_requires_grad(true);
    Tensor bias = Tensor::randn({channels}).set_requires_grad(true);
    Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::ones({channels});
    for (auto _ : state) {
        x.set_grad({});
        weight.set_grad({});
        bias.set_grad({});
        sum(batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5)).backward();
    }
}

void BM_BatchNorm2dTrainForward(benchmark::State& state) { batch_norm_forward(state, {8, 32, 32, 32}); }
BENCHMARK(BM_BatchNorm2dTrainForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm2dTrainForwardBackward(benchmark::State& state) {
    batch_norm_forward_backward(state, {8, 32, 32, 32});
}
BENCHMARK(BM_BatchNorm2dTrainForwardBackward)->Unit(benchmark::kMicrosecond);

// Eval: one pass with the running statistics.
void BM_BatchNorm2dEvalForward(benchmark::State& state) {
    const Tensor x = Tensor::randn({8, 32, 32, 32}), weight = Tensor::randn({32}), bias = Tensor::randn({32});
    const Tensor running_mean = Tensor::zeros({32}), running_var = Tensor::ones({32});
    NoGradGuard no_grad;
    for (auto _ : state)
        benchmark::DoNotOptimize(batch_norm(x, running_mean, running_var, weight, bias, false, 0.1, 1e-5));
    set_forward_bytes(state, x);
}
BENCHMARK(BM_BatchNorm2dEvalForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm1dTrainForward(benchmark::State& state) { batch_norm_forward(state, {256, 512}); }
BENCHMARK(BM_BatchNorm1dTrainForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm1dTrainForwardBackward(benchmark::State& state) { batch_norm_forward_backward(state, {256, 512}); }
BENCHMARK(BM_BatchNorm1dTrainForwardBackward)->Unit(benchmark::kMicrosecond);

// The GPU set: layer norm over [16384, 1024], batch norm in training on [64, 64, 56, 56] and
// [8192, 1024]. Each iteration ends with the device idle, so the time is the forward's latency.
enum class Norm { layer, batch };

Tensor normalize_on(Norm norm, const Tensor& x, Tensor& running_mean, Tensor& running_var, const Tensor& weight,
                    const Tensor& bias) {
    if (norm == Norm::layer) return layer_norm(x, {x.size(-1)}, weight, bias);
    return batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5);
}

void BM_NormalizationForwardCuda(benchmark::State& state, Norm norm, Shape shape, bool enqueue_only) {
    if (!cuda_is_available()) return state.SkipWithError("no CUDA device");
    const Device gpu = Device::cuda();
    const int64_t features = norm == Norm::layer ? shape.back() : shape[1];
    const Tensor x = Tensor::randn(shape).to(gpu);
    const Tensor weight = Tensor::randn({features}).to(gpu), bias = Tensor::randn({features}).to(gpu);
    Tensor running_mean = Tensor::zeros({features}).to(gpu), running_var = Tensor::ones({features}).to(gpu);
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) normalize_on(norm, x, running_mean, running_var, weight, bias);
    synchronize(gpu);
    int64_t queued = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(normalize_on(norm, x, running_mean, running_var, weight, bias));
        // Queueing only: drain every 64 forwards so the queue never fills (a full queue blocks the host).
        if (!enqueue_only || ++queued % 64 == 0) synchronize(gpu);
    }
    synchronize(gpu);
    if (!enqueue_only) set_forward_bytes(state, x);
}

}  // namespace

BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, layer_norm, Norm::layer, Shape{16384, 1024}, false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, batch_norm_2d, Norm::batch, Shape{64, 64, 56, 56}, false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, batch_norm_1d, Norm::batch, Shape{8192, 1024}, false)
    ->Unit(benchmark::kMicrosecond);
// Small inputs: the kernels take a few microseconds, the host's queueing cost shows.
BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, layer_norm_enqueue, Norm::layer, Shape{64, 1024}, true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, batch_norm_2d_enqueue, Norm::batch, Shape{2, 64, 8, 8}, true)
    ->Unit(benchmark::kMicrosecond);
// Batch norm 1d's smallest input held on chip (2^20 elements; KASMINA_BATCH_NORM_ON_CHIP=0 for the two passes).
BENCHMARK_CAPTURE(BM_NormalizationForwardCuda, batch_norm_1d_enqueue, Norm::batch, Shape{1024, 1024}, true)
    ->Unit(benchmark::kMicrosecond);
