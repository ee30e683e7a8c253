// Every standard layer at the BENCHMARKS.md CPU sizes, forward alone (no graph) and forward +
// backward (gradient of the sum of outputs, all parameter gradients), layer in training mode.
// The PyTorch peer for the same shapes: bench/peer_layers.py.
#include <benchmark/benchmark.h>

#include <functional>
#include <memory>

#include "kasmina.h"

using namespace kasmina;

namespace {

struct Workload {
    std::shared_ptr<nn::Module> module;
    Tensor input;
    std::function<Tensor(const Tensor&)> forward;
};

Workload make_workload(const std::string& name) {
    manual_seed(1);
    if (name == "linear") {
        auto m = std::make_shared<nn::Linear>(512, 512);
        return {m, Tensor::randn({256, 512}), [m](const Tensor& x) { return m->forward(x); }};
    }
    if (name == "conv2d") {
        auto m = std::make_shared<nn::Conv2d>(32, 32, 3, nn::Conv2dOptions{.padding = {1, 1}});
        return {m, Tensor::randn({8, 32, 32, 32}), [m](const Tensor& x) { return m->forward(x); }};
    }
    if (name == "mha") {
        auto m = std::make_shared<nn::MultiheadAttention>(256, 8, nn::MultiheadAttentionOptions{.batch_first = true});
        return {m, Tensor::randn({8, 64, 256}), [m](const Tensor& x) { return m->forward(x); }};
    }
    if (name == "layernorm") {
        auto m = std::make_shared<nn::LayerNorm>(Shape{512});
        return {m, Tensor::randn({2048, 512}), [m](const Tensor& x) { return m->forward(x); }};
    }
    if (name == "batchnorm2d") {
        auto m = std::make_shared<nn::BatchNorm2d>(32);
        return {m, Tensor::randn({8, 32, 32, 32}), [m](const Tensor& x) { return m->forward(x); }};
    }
    auto m = std::make_shared<nn::BatchNorm1d>(512);
    return {m, Tensor::randn({256, 512}), [m](const Tensor& x) { return m->forward(x); }};
}

void BM_LayerForward(benchmark::State& state, const std::string& name) {
    Workload w = make_workload(name);
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(w.forward(w.input));
}

void BM_LayerForwardBackward(benchmark::State& state, const std::string& name) {
    Workload w = make_workload(name);
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
