// Layer and batch normalization benchmarks on the CPU: layer_norm over the last dim of x[2048,512]
// (affine), batch_norm in training on x[8,32,32,32] (NCHW, per-channel over N, H, W) and x[256,512]
// (per feature over N), forward alone (no grad) and forward + backward to input, weight and bias;
// batch_norm in eval on the NCHW input.
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
    const Tensor grad = Tensor::randn({2048, 512});
    for (auto _ : state) {
        x.set_grad({});
        weight.set_grad({});
        bias.set_grad({});
        layer_norm(x, {512}, weight, bias).backward(grad);
    }
}
BENCHMARK(BM_LayerNormForwardBackward)->Unit(benchmark::kMicrosecond);

void batch_norm_forward(benchmark::State& state, const Shape& shape) {
    const int64_t channels = shape[1];
    const Tensor x = Tensor::randn(shape), weight = Tensor::randn({channels}), bias = Tensor::randn({channels});
    Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::ones({channels});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5));
    set_forward_bytes(state, x);
}

void batch_norm_forward_backward(benchmark::State& state, const Shape& shape) {
    const int64_t channels = shape[1];
    Tensor x = Tensor::randn(shape).set_requires_grad(true);
    Tensor weight = Tensor::randn({channels}).set_requires_grad(true);
    Tensor bias = Tensor::randn({channels}).set_requires_grad(true);
    Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::ones({channels});
    const Tensor grad = Tensor::randn(shape);
    for (auto _ : state) {
        x.set_grad({});
        weight.set_grad({});
        bias.set_grad({});
        batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5).backward(grad);
    }
}

void BM_BatchNorm2dTrainForward(benchmark::State& state) { batch_norm_forward(state, {8, 32, 32, 32}); }
BENCHMARK(BM_BatchNorm2dTrainForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm2dTrainForwardBackward(benchmark::State& state) { batch_norm_forward_backward(state, {8, 32, 32, 32}); }
BENCHMARK(BM_BatchNorm2dTrainForwardBackward)->Unit(benchmark::kMicrosecond);

// Eval: one pass with the running statistics.
void BM_BatchNorm2dEvalForward(benchmark::State& state) {
    const Tensor x = Tensor::randn({8, 32, 32, 32}), weight = Tensor::randn({32}), bias = Tensor::randn({32});
    const Tensor running_mean = Tensor::zeros({32}), running_var = Tensor::ones({32});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(batch_norm(x, running_mean, running_var, weight, bias, false, 0.1, 1e-5));
    set_forward_bytes(state, x);
}
BENCHMARK(BM_BatchNorm2dEvalForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm1dTrainForward(benchmark::State& state) { batch_norm_forward(state, {256, 512}); }
BENCHMARK(BM_BatchNorm1dTrainForward)->Unit(benchmark::kMicrosecond);

void BM_BatchNorm1dTrainForwardBackward(benchmark::State& state) { batch_norm_forward_backward(state, {256, 512}); }
BENCHMARK(BM_BatchNorm1dTrainForwardBackward)->Unit(benchmark::kMicrosecond);

}  // namespace
// TEMP
#include "kernels/normalization.h"
namespace {
void BM_TempLayerNormBackwardKernel(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512}), weight = Tensor::randn({512}), grad = Tensor::randn({2048, 512});
    const auto forward = kasmina::kernels::layer_norm(x, 512, weight, {}, 1e-5);
    for (auto _ : state) benchmark::DoNotOptimize(kasmina::kernels::layer_norm_backward(grad, x, forward.mean, forward.rstd, 512, weight, true, true, true));
}
BENCHMARK(BM_TempLayerNormBackwardKernel)->Unit(benchmark::kMicrosecond);
void BM_TempLayerNormBackwardKernel64(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512}, {.dtype = DType::f64}), weight = Tensor::randn({512}, {.dtype = DType::f64}), grad = Tensor::randn({2048, 512}, {.dtype = DType::f64});
    const auto forward = kasmina::kernels::layer_norm(x, 512, weight, {}, 1e-5);
    for (auto _ : state) benchmark::DoNotOptimize(kasmina::kernels::layer_norm_backward(grad, x, forward.mean, forward.rstd, 512, weight, true, true, true));
}
BENCHMARK(BM_TempLayerNormBackwardKernel64)->Unit(benchmark::kMicrosecond);
void BM_TempAlloc(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(Tensor::empty({2048, 512}));
}
BENCHMARK(BM_TempAlloc)->Unit(benchmark::kMicrosecond);
void BM_TempAllocTouch(benchmark::State& state) {
    for (auto _ : state) { Tensor t = Tensor::empty({2048, 512}); float* p = t.data<float>(); for (int64_t i = 0; i < t.numel(); i += 1024) p[i] = 1; benchmark::DoNotOptimize(p); }
}
BENCHMARK(BM_TempAllocTouch)->Unit(benchmark::kMicrosecond);
}
