// The differentiable seed blend of SPEC.md: with d the layer's own output, k_i the outputs of the
// active seeds' kernels and a_i their alphas, S = sum a_i and A = min(S, 1):
//   out = (1 - A) * d + A * (sum_i a_i * k_i) / S
// Gradients flow to d, every k_i and (when `alphas` requires grad) the alphas.
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace kasmina {

// alphas: a 1-D CPU tensor [n] (the host mirror of the seed state; never read from a device).
// guards (optional): one per kernel output, undefined or a 0-d bool on d's device; a false guard
// replaces that output by d, in the value and the gradients (kernels/blend.h).
Tensor blend_seeds(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const Tensor& alphas,
                   const std::vector<Tensor>& guards = {});

// The coefficients {1 - A, A a_1 / S, ..., A a_n / S} for host alphas (all zero: d passes through).
std::vector<double> blend_coefficients(const std::vector<double>& alphas);

}  // namespace kasmina
