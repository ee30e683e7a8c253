// conv2d: the forward call, then its gradient right below it (as autograd/functions.cpp does for
// the other ops). The backward closure runs with grad mode off, on the kernels of the device.
#include "autograd/convolution.h"

#include <array>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"

namespace kasmina {
namespace {

// A 1 x 1 convolution with stride 1, no padding and one group is a product per image,
// out[n] = W [O, C] x[n] [C, H * W]. On the GPU that runs as one batched GEMM (tensor cores at float32
// accuracy): cuDNN's fastest deterministic algorithm for it ran at ~14 TFLOP/s (237 us for 64 -> 128
// channels on [64, 64, 56, 56], H100). The gradients are the product's and the bias sum's. Anything
// else, including operands that would not pass kernels::conv2d's checks, takes the convolution kernels.
bool runs_as_product(const Tensor& x, const Tensor& weight, const Tensor& bias, const kernels::Conv2dParams& params) {
    const auto same = [&](const Tensor& t) { return t.device() == x.device() && t.dtype() == x.dtype(); };
    return x.defined() && weight.defined() && x.device().is_cuda() && is_floating(x.dtype()) && x.dim() == 4 &&
           x.numel() > 0 && weight.dim() == 4 && same(weight) && weight.size(1) == x.size(1) && weight.size(2) == 1 &&
           weight.size(3) == 1 && params.groups == 1 && params.stride == std::array<int64_t, 2>{1, 1} &&
           params.padding == std::array<int64_t, 2>{0, 0} &&
           (!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0) && same(bias)));
}

Tensor pointwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    const int64_t images = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
    const int64_t outputs = weight.size(0);
    Tensor out = matmul(weight.reshape({outputs, channels}), x.reshape({images, channels, height * width}));
    if (bias.defined()) out = out + bias.reshape({1, outputs, 1});
    return out.reshape({images, outputs, height, width});
}

}  // namespace

// out [N, O, OH, OW] = conv2d(x [N, C, H, W], weight [O, C / groups, KH, KW]) + bias [O]
// grad_x [N, C, H, W] = transposed convolution of grad with weight;
// grad_weight [O, C / groups, KH, KW] = correlation of x with grad; grad_bias [O] = sum of grad over N, OH, OW.
// Both x and weight are saved (each gradient needs the other operand, and both need the shapes),
// as PyTorch does.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const kernels::Conv2dParams& params) {
    if (runs_as_product(x, weight, bias, params)) return pointwise_conv2d(x, weight, bias);
    Tensor out = kernels::conv2d(x, weight, bias, params);
    if (!autograd::needs_grad({&x, &weight, &bias})) return out;
    const bool has_bias = bias.defined();
    const bool need_x = x.requires_grad(), need_w = weight.requires_grad(), need_b = has_bias && bias.requires_grad();
    const autograd::SavedTensor saved_x(x), saved_w(weight);
    return autograd::record("conv2d", out, {x, weight, bias}, [=](const std::vector<Tensor>& g) {
        kernels::Conv2dGrads grads = kernels::conv2d_backward(g[0], saved_x.unpack("conv2d"), saved_w.unpack("conv2d"),
                                                              has_bias, params, need_x, need_w, need_b);
        return std::vector<Tensor>{grads.input, grads.weight, grads.bias};
    });
}

}  // namespace kasmina
