// Layer and batch normalization kernels with PyTorch semantics (torch.nn.functional.layer_norm /
// batch_norm): the dispatch functions check operands and allocate outputs; the backends fill them.
// No autograd here: autograd/normalization.h records the graph on top of these.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace kasmina::kernels {

// ---- layer normalization ------------------------------------------------------------------------
// x [*, D] where D is the product of the trailing dims holding `normalized_numel` elements;
// rows = x.numel() / normalized_numel.
//   output [x.shape] = (x - mean) * rstd * weight + bias
//   mean [rows], rstd [rows] = 1 / sqrt(biased variance + eps)   (same dtype as x)
struct LayerNormForward {
    Tensor output, mean, rstd;
};
// weight and bias are optional (undefined) and hold normalized_numel elements (any shape).
LayerNormForward layer_norm(const Tensor& x, int64_t normalized_numel, const Tensor& weight, const Tensor& bias,
                            double eps);

// input [x.shape]; weight and bias [normalized_numel] (flat: the caller reshapes to its parameter's
// shape). A gradient is undefined unless asked for; weight may be undefined (no affine scale).
struct LayerNormGrads {
    Tensor input, weight, bias;
};
LayerNormGrads layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                   int64_t normalized_numel, const Tensor& weight, bool need_input, bool need_weight,
                                   bool need_bias);

// ---- batch normalization ------------------------------------------------------------------------
// x [N, C] or [N, C, *]; weight, bias, running_mean, running_var [C] (each optional, but eval needs
// both running statistics).
// Training: normalizes with the batch statistics over N and the trailing dims (biased variance) and,
// when running_mean/running_var are defined, updates them in place:
//   running_mean = (1 - momentum) * running_mean + momentum * batch_mean
//   running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)
// with n = N * prod(*) values per channel; n == 1 raises ShapeError (as PyTorch), n == 0 leaves the
// running statistics untouched and returns NaN save_mean/save_invstd.
// batches_tracked, an int64 scalar on x's device or undefined, is advanced by one in training, on the
// device with the running statistics (a module's num_batches_tracked, counted without a launch of its own).
// Eval: normalizes with the running statistics and returns save_mean/save_invstd undefined.
//   output [x.shape]; save_mean [C], save_invstd [C] = 1 / sqrt(batch_var + eps)
struct BatchNormForward {
    Tensor output, save_mean, save_invstd;
};
BatchNormForward batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps,
                            const Tensor& batches_tracked = {});

// input [x.shape]; weight and bias [C]. Training backward differentiates through the batch statistics
// (save_mean, save_invstd); eval backward treats running_mean/running_var as constants.
struct BatchNormGrads {
    Tensor input, weight, bias;
};
BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
                                   const Tensor& save_invstd, const Tensor& running_mean, const Tensor& running_var,
                                   bool training, double eps, bool need_input, bool need_weight, bool need_bias);

// ---- CPU backend (kernels/cpu/normalization.cpp) ---------------------------------------------------
// Declared here rather than in cpu/cpu_kernels.h so the op family stays in its own files. Every tensor
// is contiguous, checked and allocated by the dispatch functions above; they only fill outputs.
namespace cpu {
#include "kernels/normalization_backend.inc"
}  // namespace cpu

}  // namespace kasmina::kernels
