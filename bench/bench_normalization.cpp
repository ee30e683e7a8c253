// Layer and batch normalization benchmarks on the CPU: layer_norm over the last dim of x[2048,512]
// (affine), batch_norm in training on x[8,32,32,32] (NCHW, per-channel over N, H, W) and x[256,512]
// (per feature over N), forward alone (no grad) and forward + backward (gradient of the sum of the
// outputs) to input, weight and bias; batch_norm in eval on the NCHW input. BENCHMARKS.md CPU sizes.
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

}  // namespace
