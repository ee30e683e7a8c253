// conv2d benchmarks at the BENCHMARKS.md CPU size: x[8, 32, 32, 32], 32 out channels, 3x3, pad 1,
// bias; forward alone (no graph) and forward + backward (gradient of the sum of the output, grads
// for input, weight and bias).
#include <benchmark/benchmark.h>

#include "autograd/convolution.h"
#include "kasmina.h"

using namespace kasmina;

namespace {

constexpr int64_t batch = 8, channels = 32, size = 32, out_channels = 32, kernel = 3;
const kernels::Conv2dParams params{.padding = {1, 1}};

// Multiply-adds of the forward pass, counted twice (multiply and add).
double forward_flops() { return 2.0 * batch * out_channels * size * size * channels * kernel * kernel; }

void BM_Conv2dForward(benchmark::State& state) {
    const Tensor x = Tensor::randn({batch, channels, size, size});
    const Tensor weight = Tensor::randn({out_channels, channels, kernel, kernel}), bias = Tensor::randn({out_channels});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, weight, bias, params));
    state.counters["GFLOP/s"] = benchmark::Counter(forward_flops() * state.iterations(), benchmark::Counter::kIsRate,
                                                   benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Conv2dForward)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_Conv2dForwardBackward(benchmark::State& state) {
    Tensor x = Tensor::randn({batch, channels, size, size}).set_requires_grad(true);
    Tensor weight = Tensor::randn({out_channels, channels, kernel, kernel}).set_requires_grad(true);
    Tensor bias = Tensor::randn({out_channels}).set_requires_grad(true);
    for (auto _ : state) {
        x.set_grad({});
        weight.set_grad({});
        bias.set_grad({});
        sum(conv2d(x, weight, bias, params)).backward();
    }
    // backward data and backward weights each cost as much as the forward pass
    state.counters["GFLOP/s"] = benchmark::Counter(3.0 * forward_flops() * state.iterations(),
                                                   benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Conv2dForwardBackward)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
