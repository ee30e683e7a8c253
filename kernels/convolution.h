// 2-D convolution over NCHW tensors with PyTorch semantics (torch.nn.functional.conv2d): the
// dispatch point (checks, output allocation) and the backend entry points it calls.
#pragma once

#include <array>
#include <cstdint>

#include "runtime/tensor.h"

namespace kasmina {

// Geometry of a convolution; each pair is (height, width). Padding is symmetric (PyTorch's
// `padding=(ph, pw)`), dilation 1 is a dense kernel, groups splits channels into independent blocks.
// Declared in kasmina and named kernels::Conv2dParams below: argument-dependent lookup then sends an
// unqualified conv2d(x, weight, bias, params) to the differentiable kasmina::conv2d alone, instead of
// finding kernels::conv2d too and calling the pair ambiguous.
struct Conv2dParams {
    std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1};
    int64_t groups = 1;
};

}  // namespace kasmina

namespace kasmina::kernels {

using kasmina::Conv2dParams;

// [N, O, OH, OW] for input [N, C, H, W] and weight [O, C / groups, KH, KW], where
// OH = (H + 2 * padding - dilation * (KH - 1) - 1) / stride + 1 (and likewise OW).
// Raises ShapeError naming conv2d when the shapes or parameters do not fit together.
Shape conv2d_output_shape(const Shape& input, const Shape& weight, const Conv2dParams& params);

// x [N, C, H, W], weight [O, C / groups, KH, KW], bias [O] or undefined -> [N, O, OH, OW].
// float32 or float64, all operands on one device with one dtype; any strides.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params);

// Gradients of conv2d: input [N, C, H, W], weight [O, C / groups, KH, KW], bias [O]; each left
// undefined unless asked for (a bias gradient is only produced when `has_bias`).
struct Conv2dGrads {
    Tensor input, weight, bias;
};
// grad_output [N, O, OH, OW] is the gradient of conv2d(x, weight, bias, params)'s output.
Conv2dGrads conv2d_backward(const Tensor& grad_output, const Tensor& x, const Tensor& weight, bool has_bias,
                            const Conv2dParams& params, bool need_input, bool need_weight, bool need_bias);

// ---- CPU backend (kernels/cpu/convolution.cpp) ---------------------------------------------------
// Called by the dispatch functions above with contiguous operands of checked shapes and dtypes
// (float32: oneDNN, float64: direct loops) and contiguous outputs to fill.
namespace cpu {
#include "kernels/convolution_backend.inc"
}  // namespace cpu

}  // namespace kasmina::kernels
