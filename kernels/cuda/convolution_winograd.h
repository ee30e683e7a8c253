// Float32 3x3 stride-1 convolutions by Winograd's F(2x2, 3x3) in one fused kernel on tensor cores at
// float32 accuracy (3xTF32): 2.25x fewer multiplications than the direct convolution, the input and
// output transforms done in registers and shared memory around the products. Used by convolution.cu
// for all three passes when kernels/settings.h's set_convolution_winograd is on.
#pragma once

#include "kernels/convolution.h"

namespace kasmina::kernels::cuda {

// True when the forward (out = conv2d(x, weight) + bias) runs here: float32, contiguous, a device with
// TF32 tensor cores, a 3x3 kernel, stride 1, dilation 1, groups 1, at least 16 input and output
// channels (below that the transforms cost more than the products save), sizes within 32-bit indices.
bool winograd_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                     const Tensor& out);
// Queues out [N, O, OH, OW] = conv2d(x, weight) (+ bias [O] when defined) on the current stream.
void winograd_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                             const Tensor& out);

// True when the input gradient runs here: the forward's conditions with padding at most 2 (the input
// gradient is then a forward over grad_output with the kernel turned and its channels swapped).
bool winograd_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight,
                                           const Conv2dParams& params, const Tensor& grad_input);
// Queues grad_input [N, C, H, W] = the gradient of conv2d(x, weight)'s input for grad_output.
void winograd_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& grad_input);

// True when the weight gradient runs here: the forward's conditions (x, grad_weight, grad_output).
bool winograd_conv2d_backward_weights_applies(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                              const Tensor& grad_weight);
// Queues grad_weight [O, C, 3, 3] = the gradient of conv2d(x, weight)'s weight for grad_output (the
// sum over tiles split among blocks and added in a fixed order, in float64).
void winograd_conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                      const Tensor& grad_weight);

}  // namespace kasmina::kernels::cuda
