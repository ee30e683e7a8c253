// Every standard layer at the BENCHMARKS.md CPU sizes, forward alone (no graph) and forward +
// backward (gradient of the sum of outputs, all parameter gradients), layer in training mode.
// The PyTorch peer for the same shapes: bench/peer_layers.py.
#include <benchmark/benchmark.h>

#include "bench/layer_workloads.h"

using namespace kasmina;
using namespace kasmina::bench;

namespace {

void BM_LayerForward(benchmark::State& state, const std::string& name) {
    LayerWorkload w = make_layer_workload(name);
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(w.forward(w.input));
}

void BM_LayerForwardBackward(benchmark::State& state, const std::string& name) {
    LayerWorkload w = make_layer_workload(name);
    Tensor x = w.input.clone().set_requires_grad(true);
    for (auto _ : state) {
        w.module->zero_grad();
        x.set_grad({});
        sum(w.forward(x)).backward();
    }
}

}  // namespace

#define KASMINA_LAYER_BENCH(name)                                                                                \
    BENCHMARK_CAPTURE(BM_LayerForward, name, std::string(#name))->Unit(benchmark::kMicrosecond)->MinTime(0.5);   \
    BENCHMARK_CAPTURE(BM_LayerForwardBackward, name, std::string(#name))->Unit(benchmark::kMicrosecond)->MinTime(0.5);

KASMINA_LAYER_BENCH(linear)
KASMINA_LAYER_BENCH(conv2d)
KASMINA_LAYER_BENCH(mha)
KASMINA_LAYER_BENCH(layernorm)
KASMINA_LAYER_BENCH(batchnorm2d)
KASMINA_LAYER_BENCH(batchnorm1d)
