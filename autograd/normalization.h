// Differentiable layer and batch normalization, the functional forms of torch.nn.functional.layer_norm
// and batch_norm: gradients flow to the input, weight and bias; running statistics are buffers.
#pragma once

#include "runtime/shape.h"
#include "runtime/tensor.h"

namespace kasmina {

// Normalizes x over its trailing dims equal to normalized_shape (biased variance), then applies
// weight and bias (optional, of normalized_shape).
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);

// x [N, C] or [N, C, *]; running_mean, running_var, weight, bias [C], each optional (eval needs the
// running statistics). Training normalizes with the batch statistics and updates defined running
// statistics in place (running = (1 - momentum) * running + momentum * batch, unbiased variance);
// eval normalizes with the running statistics, which are then constants for the gradient.
// batches_tracked (optional, an int64 scalar on x's device: a module's num_batches_tracked) is advanced
// by one in training, together with the running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps, const Tensor& batches_tracked = {});

}  // namespace kasmina
