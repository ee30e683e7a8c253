// Float32 3x3 convolutions by Winograd F(4x4, 3x3) on the GPU: the weights and 6 x 6 input tiles
// transformed, 36 products of [out channels x in channels] by [in channels x tiles] on the 3xTF32 GEMM,
// the products transformed back to 4 x 4 output tiles. A quarter of the direct convolution's
// multiplications; the transforms cost rounding (a few times the direct kernels' error, measured in
// tests/kernels/cuda_backend_test.cpp). Used by convolution.cu for the forward and the input gradient
// when kernels/settings.h's set_convolution_winograd is on (and measured faster than cuDNN unless the
// tensor-core kernels are forced on).
#pragma once

#include "kernels/convolution.h"

namespace kasmina::kernels::cuda {

// True when out = conv2d(x, weight) (+ bias) runs here: float32 and contiguous, groups 1, 3x3, stride 1,
// no dilation, C a multiple of 4, at least 4,096 output pixels over the batch, TF32 tensor cores,
// Winograd on, sizes within 32-bit indices.
bool winograd_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                     const Tensor& out);
// Queues out [N, O, OH, OW] = conv2d(x, weight) (+ bias [O] when defined) on the current stream.
void winograd_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                             const Tensor& out);

// True when the input gradient runs here: the forward over grad_output with the kernel turned by 180
// degrees and its channels swapped applies (so also padding at most 2).
bool winograd_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                           const Tensor& grad_input);
// Queues grad_input [N, C, H, W] = the gradient of conv2d(x, weight)'s input for grad_output.
void winograd_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& grad_input);

}  // namespace kasmina::kernels::cuda
