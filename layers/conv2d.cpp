#include "layers/conv2d.h"

#include "autograd/convolution.h"
#include "layers/init.h"

namespace kasmina::nn {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel_size, Conv2dOptions options)
    : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {
    if (options.groups <= 0 || in_channels % options.groups != 0 || out_channels % options.groups != 0)
        raise<ShapeError>("Conv2d", "in_channels (", in_channels, ") and out_channels (", out_channels,
                          ") must be divisible by groups (", options.groups, ")");
    if (kernel_size[0] <= 0 || kernel_size[1] <= 0)
        raise<ShapeError>("Conv2d", "kernel_size must be positive, got (", kernel_size[0], ", ", kernel_size[1], ")");
    params_ = {options.stride, options.padding, options.dilation, options.groups};
    const int64_t fan_in = in_channels / options.groups * kernel_size[0] * kernel_size[1];
    weight = register_parameter(
        "weight", init::kaiming_uniform_default({out_channels, in_channels / options.groups, kernel_size[0], kernel_size[1]}, fan_in));
    if (options.bias) bias = register_parameter("bias", init::kaiming_uniform_default({out_channels}, fan_in));
}

std::string Conv2d::extra_repr() const {
    std::string text = make_message(in_channels_, ", ", out_channels_, ", kernel_size=(", kernel_size_[0], ", ", kernel_size_[1],
                                    "), stride=(", params_.stride[0], ", ", params_.stride[1], ")");
    if (params_.padding != std::array<int64_t, 2>{0, 0})
        text += make_message(", padding=(", params_.padding[0], ", ", params_.padding[1], ")");
    if (params_.dilation != std::array<int64_t, 2>{1, 1})
        text += make_message(", dilation=(", params_.dilation[0], ", ", params_.dilation[1], ")");
    if (params_.groups != 1) text += make_message(", groups=", params_.groups);
    if (!bias.defined()) text += ", bias=False";
    return text;
}

Tensor Conv2d::forward(const Tensor& input) {
    if (input.dim() == 3) return forward(input.unsqueeze(0)).squeeze(0);
    if (input.dim() != 4 || input.size(1) != in_channels_)
        raise<ShapeError>("Conv2d", "expected input [N, ", in_channels_, ", H, W] or [", in_channels_, ", H, W], got ",
                          shape_str(input.shape()));
    return conv2d(input, weight, bias, params_);
}

}  // namespace kasmina::nn
