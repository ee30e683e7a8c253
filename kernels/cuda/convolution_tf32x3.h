// Float32 2-D convolutions as implicit GEMMs on tensor cores at float32 accuracy (3xTF32, the main
// loop of tf32x3_gemm.cuh): the image is read as its im2col matrix tile by tile, never built. Used by
// convolution.cu next to cuDNN, which keeps every geometry these do not take; which of the two runs
// is kernels/settings.h's set_convolution_tensor_cores.
#pragma once

#include "kernels/convolution.h"

namespace kasmina::kernels::cuda {

// True when the forward (out = conv2d(x, weight) + bias) runs here: float32, groups 1, the device
// has TF32 tensor cores, x, weight and out contiguous, C * KH * KW a multiple of 4, and the sizes fit
// the kernel's 32-bit indices. (The weights are reordered into a workspace first: [O, KH, KW, C].)
bool tf32x3_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& out);
// Queues out [N, O, OH, OW] = conv2d(x, weight) (+ bias [O] when defined) on the current stream.
void tf32x3_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                           const Tensor& out);

// True when the input gradient runs here: stride 1, padding at most dilation * (K - 1) in each
// dimension (it is then the forward over grad_output with the kernel flipped and its channels
// swapped), and that forward applies.
bool tf32x3_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                         const Tensor& grad_input);
// Queues grad_input [N, C, H, W] = the gradient of conv2d(x, weight)'s input for grad_output.
void tf32x3_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                 const Tensor& grad_input);

// True when the weight gradient runs here: float32, groups 1, tensor cores, grad_output, x and
// grad_weight contiguous, OH * OW a multiple of 4 and grad_output 16-byte aligned, sizes within the
// kernel's 32-bit indices.
bool tf32x3_conv2d_backward_weights_applies(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                            const Tensor& grad_weight);
// Queues grad_weight [O, C, KH, KW] = the gradient of conv2d(x, weight)'s weight for grad_output
// (the sum over images and pixels split among blocks and added in a fixed order).
void tf32x3_conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                    const Tensor& grad_weight);

}  // namespace kasmina::kernels::cuda
