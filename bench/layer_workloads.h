// The BENCHMARKS.md CPU workloads for the standard layers (shared by the layer and Kasmina suites):
// a freshly initialized module (seed 1), its input, and how to call it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kasmina.h"

namespace kasmina::bench {

struct LayerWorkload {
    std::shared_ptr<nn::Module> module;
    Tensor input;
    std::function<Tensor(const Tensor&)> forward;
};

// CPU sizes by default; on a CUDA device the GPU set (H100 column of BENCHMARKS.md). `input_override`
// replaces the input shape; the layer's sizes follow from it (features, channels, embedding).
inline LayerWorkload make_layer_workload(const std::string& name, Device device = Device::cpu(),
                                         std::optional<Shape> input_override = std::nullopt) {
    manual_seed(1);
    const bool gpu = device.is_cuda();
    if (input_override) {
        const Shape& in = *input_override;
        auto need = [&](size_t rank) {
            if (in.size() != rank)
                raise<ShapeError>("make_layer_workload", name, " takes a ", rank, "-D input, got ", shape_str(in));
        };
        std::shared_ptr<nn::Module> module;
        if (name == "linear") need(2), module = std::make_shared<nn::Linear>(in[1], in[1]);
        else if (name == "conv2d") need(4), module = std::make_shared<nn::Conv2d>(in[1], in[1], 3, nn::Conv2dOptions{.padding = {1, 1}});
        else if (name == "mha") need(3), module = std::make_shared<nn::MultiheadAttention>(in[2], in[2] % 16 == 0 ? 16 : 1,
                                                                                       nn::MultiheadAttentionOptions{.batch_first = true});
        else if (name == "layernorm") need(2), module = std::make_shared<nn::LayerNorm>(Shape{in[1]});
        else if (name == "batchnorm2d") need(4), module = std::make_shared<nn::BatchNorm2d>(in[1]);
        else if (name == "batchnorm1d") need(2), module = std::make_shared<nn::BatchNorm1d>(in[1]);
        else raise<Error>("make_layer_workload", "unknown workload '", name, "'");
        module->to(device);
        auto raw = module.get();
        return {module, Tensor::randn(in).to(device), [raw](const Tensor& x) { return raw->forward(x); }};
    }
    std::shared_ptr<nn::Module> module;
    Shape input;
    if (name == "linear") {
        module = std::make_shared<nn::Linear>(gpu ? 1024 : 512, gpu ? 1024 : 512);
        input = gpu ? Shape{8192, 1024} : Shape{256, 512};
    } else if (name == "conv2d") {
        const int64_t channels = gpu ? 64 : 32;
        module = std::make_shared<nn::Conv2d>(channels, channels, 3, nn::Conv2dOptions{.padding = {1, 1}});
        input = gpu ? Shape{64, 64, 56, 56} : Shape{8, 32, 32, 32};
    } else if (name == "mha") {
        module = std::make_shared<nn::MultiheadAttention>(gpu ? 1024 : 256, gpu ? 16 : 8,
                                                          nn::MultiheadAttentionOptions{.batch_first = true});
        input = gpu ? Shape{32, 512, 1024} : Shape{8, 64, 256};
    } else if (name == "layernorm") {
        module = std::make_shared<nn::LayerNorm>(Shape{gpu ? 1024 : 512});
        input = gpu ? Shape{16384, 1024} : Shape{2048, 512};
    } else if (name == "batchnorm2d") {
        module = std::make_shared<nn::BatchNorm2d>(gpu ? 64 : 32);
        input = gpu ? Shape{64, 64, 56, 56} : Shape{8, 32, 32, 32};
    } else {
        module = std::make_shared<nn::BatchNorm1d>(gpu ? 1024 : 512);
        input = gpu ? Shape{8192, 1024} : Shape{256, 512};
    }
    module->to(device);
    auto raw = module.get();
    return {module, Tensor::randn(input).to(device), [raw](const Tensor& x) { return raw->forward(x); }};
}

}  // namespace kasmina::bench
