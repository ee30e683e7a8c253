// Differentiable 2-D convolution (NCHW, torch.nn.functional.conv2d semantics): gradients flow to
// the input, the weight and the bias.
#pragma once

#include "kernels/convolution.h"
#include "runtime/tensor.h"

namespace kasmina {

// x [N, C, H, W], weight [O, C / groups, KH, KW], bias [O] (optional) -> [N, O, OH, OW]
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const kernels::Conv2dParams& params = {});

}  // namespace kasmina
