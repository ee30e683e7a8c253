// Every standard layer at the BENCHMARKS.md CPU sizes, forward alone (no graph) and forward +
// backward (gradient of the sum of outputs, all parameter gradients), layer in training mode.
// The PyTorch peer for the same shapes: bench/peer_layers.py.
#include <benchmark/benchmark.h>

#include "bench/layer_workloads.h"

using namespace kasmina;
using namespace kasmina::bench;

namespace {

// Each iteration ends with the device idle (synchronize), so host timing measures the GPU work.
void BM_LayerForward(benchmark::State& state, const std::string& name, Device device) {
    if (device.is_cuda() && !cuda_is_available()) return state.SkipWithError("no CUDA device");
    LayerWorkload w = make_layer_workload(name, device);
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) w.forward(w.input);
    synchronize(device);
    for (auto _ : state) {
        benchmark::DoNotOptimize(w.forward(w.input));
        synchronize(device);
    }
}

void BM_LayerForwardBackward(benchmark::State& state, const std::string& name, Device device) {
    if (device.is_cuda() && !cuda_is_available()) return state.SkipWithError("no CUDA device");
    LayerWorkload w = make_layer_workload(name, device);
    Tensor x = w.input.clone().set_requires_grad(true);
    auto step = [&] {
        w.module->zero_grad();
        x.set_grad({});
        sum(w.forward(x)).backward();
    };
    for (int i = 0; i < 3; ++i) step();
    synchronize(device);
    for (auto _ : state) {
        step();
        synchronize(device);
    }
}

}  // namespace

#define KASMINA_LAYER_BENCH(name)                                                                                          \
    BENCHMARK_CAPTURE(BM_LayerForward, name, std::string(#name), Device::cpu())->Unit(benchmark::kMicrosecond)->MinTime(0.5); \
    BENCHMARK_CAPTURE(BM_LayerForwardBackward, name, std::string(#name), Device::cpu())                                   \
        ->Unit(benchmark::kMicrosecond)                                                                                     \
        ->MinTime(0.5);                                                                                                     \
    BENCHMARK_CAPTURE(BM_LayerForward, name##_cuda, std::string(#name), Device::cuda())                                   \
        ->Unit(benchmark::kMicrosecond)                                                                                     \
        ->MinTime(0.5);                                                                                                     \
    BENCHMARK_CAPTURE(BM_LayerForwardBackward, name##_cuda, std::string(#name), Device::cuda())                           \
        ->Unit(benchmark::kMicrosecond)                                                                                     \
        ->MinTime(0.5);

KASMINA_LAYER_BENCH(linear)
KASMINA_LAYER_BENCH(conv2d)
KASMINA_LAYER_BENCH(mha)
KASMINA_LAYER_BENCH(layernorm)
KASMINA_LAYER_BENCH(batchnorm2d)
KASMINA_LAYER_BENCH(batchnorm1d)
