// The Kasmina workloads of BENCHMARKS.md shared by bench/bench_kasmina.cpp and kasmina-bench:
// kasmina_active (a layer with 2 of 4 bottleneck seeds active next to the same composition written
// with plain modules and elementwise ops).
#pragma once

#include <optional>

#include "bench/layer_workloads.h"
#include "layers/kasmina/kasmina_api.h"

namespace kasmina::bench {

using namespace kasmina::morph;

inline constexpr double kAlpha = 0.3;
inline constexpr int64_t kWidth = 64;

// The composition with plain modules: d = host(x); k_i = kernel_i(x); blend written out.
struct Composition {
    std::function<Tensor(const Tensor&)> host;
    std::vector<KernelNetwork> kernels;
    Tensor forward(const Tensor& x) const {
        const Tensor d = host(x);
        const double total = kAlpha * static_cast<double>(kernels.size()), strength = std::min(total, 1.0);
        Tensor mixed;
        for (const KernelNetwork& kernel : kernels) {
            const Tensor term = kernel.forward(x) * kAlpha;
            mixed = mixed.defined() ? mixed + term : term;
        }
        return d * (1.0 - strength) + mixed * (strength / total);
    }
};

struct ActivePair {
    std::shared_ptr<nn::Module> host_copy;  // keeps the composition's host alive
    Composition composition;
    std::shared_ptr<nn::Module> kasmina;
    Tensor input;
};

// The kasmina_active workload: the layer `name` ("linear" or "conv2d") with 2 of 4 seeds holding
// bottleneck kernels of width 64 at alpha 0.3, next to the same composition from plain modules.
inline ActivePair make_active_pair(const std::string& name, const std::shared_ptr<KernelCache>& cache,
                                   Device device = Device::cpu(), std::optional<Shape> input = std::nullopt) {
    LayerWorkload original = make_layer_workload(name, device, input);
    std::vector<KernelArtifact> artifacts;
    std::shared_ptr<nn::Module> kasmina;
    Generator generator(3);
    if (name == "linear") {
        auto& linear = static_cast<nn::Linear&>(*original.module);
        for (int i = 0; i < 2; ++i)
            artifacts.push_back(
                make_linear_bottleneck(linear.in_features(), linear.out_features(), kWidth, kAlpha, "b", &generator));
        kasmina = std::make_shared<KasminaLayer>(static_cast<nn::Linear&>(*original.module), KasminaOptions{.cache = cache});
    } else {
        auto& conv = static_cast<nn::Conv2d&>(*original.module);
        for (int i = 0; i < 2; ++i)
            artifacts.push_back(make_conv_bottleneck(conv.in_channels(), conv.out_channels(), kWidth, {3, 3}, {1, 1}, {1, 1},
                                                     {1, 1}, kAlpha, "b", &generator));
        kasmina = std::make_shared<KasminaConv2dLayer>(static_cast<nn::Conv2d&>(*original.module), KasminaOptions{.cache = cache});
    }
    auto& layer = dynamic_cast<KasminaLayerBase&>(*kasmina);
    ActivePair pair{original.module, {original.forward, {}}, kasmina, original.input};
    for (int i = 0; i < 2; ++i) {
        const uint64_t id = cache->store()->write(serialize_artifact(artifacts[i]));
        layer.load_kernel(i, id);  // seeds 0 and 1 of 4; trainable, alpha 0.3 (the artifact's)
        pair.composition.kernels.emplace_back(artifacts[i], true);
        pair.composition.kernels.back().to(device);
    }
    return pair;
}

}  // namespace kasmina::bench
