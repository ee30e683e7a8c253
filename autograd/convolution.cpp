// conv2d: the forward call, then its gradient right below it (as autograd/functions.cpp does for
// the other ops). The backward closure runs with grad mode off, on the kernels of the device.
#include "autograd/convolution.h"

#include <vector>

#include "autograd/node.h"

namespace kasmina {

// out [N, O, OH, OW] = conv2d(x [N, C, H, W], weight [O, C / groups, KH, KW]) + bias [O]
// grad_x [N, C, H, W] = transposed convolution of grad with weight;
// grad_weight [O, C / groups, KH, KW] = correlation of x with grad; grad_bias [O] = sum of grad over N, OH, OW.
// Both x and weight are saved (each gradient needs the other operand, and both need the shapes),
// as PyTorch does.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const kernels::Conv2dParams& params) {
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
