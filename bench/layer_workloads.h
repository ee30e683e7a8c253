// The BENCHMARKS.md CPU workloads for the standard layers (shared by the layer and Kasmina suites):
// a freshly initialized module (seed 1), its input, and how to call it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "kasmina.h"

namespace kasmina::bench {

struct LayerWorkload {
    std::shared_ptr<nn::Module> module;
    Tensor input;
    std::function<Tensor(const Tensor&)> forward;
};

inline LayerWorkload make_layer_workload(const std::string& name) {
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

}  // namespace kasmina::bench
