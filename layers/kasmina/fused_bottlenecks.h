// Runs several seeds' bottleneck kernels ([projection, activation, projection], the blueprint of
// make_linear_bottleneck / make_conv_bottleneck) as two projections instead of two per seed: their
// first projections read the same layer input, so they become one GEMM (or convolution) over the
// weights concatenated along the output dim; their second projections become one more over the
// weights concatenated along the input dim, each scaled by the seed's share of the group's alpha.
// The result is sum_i share_i * k_i, differentiable with respect to every kernel weight and the input.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "layers/kasmina/kernel_network.h"

namespace kasmina::morph {

// The shape of a kernel that fuses: projection -> relu|gelu -> projection, both projections linear or
// both conv2d with groups 1. Two kernels fuse together when their forms are equal.
struct BottleneckForm {
    KernelOpType projection = KernelOpType::linear;
    KernelOpType activation = KernelOpType::relu;
    kernels::Conv2dParams first_conv, second_conv;  // conv2d only
    bool first_bias = false, second_bias = false;
    bool operator==(const BottleneckForm& other) const;
};

// The kernel's form, or nothing when its op list is not a fusable bottleneck.
std::optional<BottleneckForm> bottleneck_form(const KernelNetwork& network);

// A group's concatenated (and share-scaled) weights, rebuilt on every call that records gradients (the
// graph must reach each kernel weight) and otherwise kept while the networks, shares and weights
// (storage and version) are unchanged: an inference forward then queues only the two projections and
// the activation, not the half dozen small copies and scalings that build the weights. Thread-safe.
class FusedWeightsCache {
public:
    struct Weights {
        Tensor first_weight, first_bias, second_weight, second_bias;
        std::vector<Tensor> sources;  // the kernels' weights they were built from
    };
    // The entry for `key` (see run_fused_bottlenecks), or build() stored under it.
    Weights get(const std::vector<uint64_t>& key, const std::function<Weights()>& build);

private:
    static constexpr size_t kEntries = 4;
    std::mutex mutex_;
    std::vector<std::pair<std::vector<uint64_t>, Weights>> entries_;  // most recently used last
};

// sum_i shares[i] * networks[i]->forward(input), with every network of the same form (checked). With a
// cache, a call that records no gradient reuses the fused weights of an earlier one when they still hold.
Tensor run_fused_bottlenecks(const std::vector<const KernelNetwork*>& networks, const std::vector<double>& shares,
                             const Tensor& input, FusedWeightsCache* cache = nullptr);

}  // namespace kasmina::morph
