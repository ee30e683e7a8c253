// The fused seed blend: out = c0 * d + sum_i c_i * k_i in one pass over memory, and its backward
// (scaled gradients plus the dot products that give the gradient of the blend weights).
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace kasmina::kernels {

// d and every k_i share shape, dtype and device; coefficients = {c0, c_1, ..., c_n}.
// guards (optional): one per k_i, undefined or a 0-d bool on d's device; where a guard is false, k_i is
// replaced by d (the seed falls back to the layer's own path) and never read — on a GPU without the
// guard leaving the device. The backward then gives k_i no gradient and d its share.
Tensor blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
             const std::vector<Tensor>& guards = {});

struct BlendBackward {
    Tensor grad_d;                       // c0 * grad (undefined unless requested)
    std::vector<Tensor> grad_kernels;    // c_i * grad
    double grad_dot_d = 0.0;             // sum(grad * d)
    std::vector<double> grad_dot_kernels;  // sum(grad * k_i)
};
// One pass over grad, d and the k_i. Dot products are computed only when `need_dots`.
BlendBackward blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                             const std::vector<double>& coefficients, bool need_grad_d, bool need_dots,
                             const std::vector<Tensor>& guards = {});

}  // namespace kasmina::kernels
