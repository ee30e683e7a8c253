// Runs several seeds' bottleneck kernels ([projection, activation, projection], the blueprint of
// make_linear_bottleneck / make_conv_bottleneck) as two projections instead of two per seed: their
// first projections read the same layer input, so they become one GEMM (or convolution) over the
// weights concatenated along the output dim; their second projections become one more over the
// weights concatenated along the input dim, each scaled by the seed's share of the group's alpha.
// The result is sum_i share_i * k_i, differentiable with respect to every kernel weight and the input.
#pragma once

#include <optional>
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

// sum_i shares[i] * networks[i]->forward(input), with every network of the same form (checked).
Tensor run_fused_bottlenecks(const std::vector<const KernelNetwork*>& networks, const std::vector<double>& shares,
                             const Tensor& input);

}  // namespace kasmina::morph
