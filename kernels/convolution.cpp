// conv2d dispatch: validates operands (ranks, channel and group counts, geometry, dtypes, devices),
// allocates outputs, makes operands contiguous, then calls the backend of the operands' device.
#include "kernels/convolution.h"

#include "kernels/backend.h"
#include "kernels/kernels.h"

namespace kasmina::kernels {
namespace {

void require_floating(const char* op, const Tensor& x) {
    if (x.dtype() != DType::f32 && x.dtype() != DType::f64)
        raise<DTypeError>(op, "expected float32 or float64 operands, got ", x.describe());
}

Tensor contiguous_copy(const Tensor& x) {
    if (x.is_contiguous()) return x;
    Tensor out = Tensor::empty(x.shape(), x.options());
    copy_into(out, x);
    return out;
}

std::string pair_str(const std::array<int64_t, 2>& pair) { return shape_str({pair[0], pair[1]}); }

// bias [O] read as [1, O, 1, 1], to broadcast over an output.
Tensor bias_as_channels(const Tensor& bias) {
    return detail::make_view(bias, {1, bias.size(0), 1, 1}, {0, bias.stride(0), 0, 0}, bias.offset());
}

}  // namespace

Shape conv2d_output_shape(const Shape& input, const Shape& weight, const Conv2dParams& params) {
    const auto& [stride, padding, dilation, groups] = params;
    if (stride[0] < 1 || stride[1] < 1) raise<ShapeError>("conv2d", "stride must be positive, got ", pair_str(stride));
    if (dilation[0] < 1 || dilation[1] < 1)
        raise<ShapeError>("conv2d", "dilation must be positive, got ", pair_str(dilation));
    if (padding[0] < 0 || padding[1] < 0)
        raise<ShapeError>("conv2d", "padding must be non-negative, got ", pair_str(padding));
    if (groups < 1) raise<ShapeError>("conv2d", "groups must be positive, got ", groups);
    if (input.size() != 4) raise<ShapeError>("conv2d", "input must be 4-D [N, C, H, W], got ", shape_str(input));
    if (weight.size() != 4)
        raise<ShapeError>("conv2d", "weight must be 4-D [out_channels, in_channels / groups, KH, KW], got ",
                          shape_str(weight));
    const int64_t channels = input[1], out_channels = weight[0];
    if (channels % groups != 0)
        raise<ShapeError>("conv2d", "groups ", groups, " must divide the input channels ", channels, " (input ",
                          shape_str(input), ")");
    if (out_channels % groups != 0)
        raise<ShapeError>("conv2d", "groups ", groups, " must divide the output channels ", out_channels, " (weight ",
                          shape_str(weight), ")");
    if (channels != weight[1] * groups)
        raise<ShapeError>("conv2d", "input ", shape_str(input), " has ", channels, " channels but weight ",
                          shape_str(weight), " with groups ", groups, " expects ", weight[1] * groups,
                          " (weight.size(1) * groups)");
    if (weight[2] < 1 || weight[3] < 1)
        raise<ShapeError>("conv2d", "kernel size must be positive, got weight ", shape_str(weight));
    Shape out{input[0], out_channels, 0, 0};
    for (int axis = 0; axis < 2; ++axis) {
        const int64_t padded = input[2 + axis] + 2 * padding[axis];
        const int64_t span = dilation[axis] * (weight[2 + axis] - 1) + 1;
        if (span > padded)
            raise<ShapeError>("conv2d", "kernel ", shape_str({weight[2], weight[3]}), " with dilation ",
                              pair_str(dilation), " spans ", span, " along ", axis == 0 ? "height" : "width",
                              ", more than the padded input's ", padded, " (input ", shape_str(input), ", weight ",
                              shape_str(weight), ", padding ", pair_str(padding), ")");
        out[2 + axis] = (padded - span) / stride[axis] + 1;
    }
    return out;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params) {
    if (!x.defined() || !weight.defined()) raise<Error>("conv2d", "input and weight must be defined");
    select_backend(common_device("conv2d", {&x, &weight, &bias}), "conv2d");
    require_floating("conv2d", x);
    check_same_dtype("conv2d", x, weight);
    if (bias.defined()) check_same_dtype("conv2d", x, bias);
    const Shape out_shape = conv2d_output_shape(x.shape(), weight.shape(), params);
    if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))
        raise<ShapeError>("conv2d", "bias ", shape_str(bias.shape()), " does not match weight ",
                          shape_str(weight.shape()), " (expected [", weight.size(0), "])");

    Tensor out = Tensor::empty(out_shape, x.options());
    if (out.numel() == 0) return out;
    if (x.numel() == 0) {
        // No channels or no pixels: every tap reads padding, so the output is the bias.
        if (bias.defined())
            copy_into(out, bias_as_channels(bias));
        else
            out.fill_(0.0);
        return out;
    }
    KASMINA_BACKEND(x.device(), conv2d_forward, contiguous_copy(x), contiguous_copy(weight), bias.defined() ? contiguous_copy(bias) : Tensor(),
                        params, out);
    return out;
}

Conv2dGrads conv2d_backward(const Tensor& grad_output, const Tensor& x, const Tensor& weight, bool has_bias,
                            const Conv2dParams& params, bool need_input, bool need_weight, bool need_bias) {
    if (!grad_output.defined() || !x.defined() || !weight.defined())
        raise<Error>("conv2d_backward", "grad_output, input and weight must be defined");
    select_backend(common_device("conv2d_backward", {&grad_output, &x, &weight}), "conv2d_backward");
    require_floating("conv2d_backward", x);
    check_same_dtype("conv2d_backward", x, weight);
    check_same_dtype("conv2d_backward", x, grad_output);
    const Shape out_shape = conv2d_output_shape(x.shape(), weight.shape(), params);
    if (grad_output.shape() != out_shape)
        raise<ShapeError>("conv2d_backward", "grad_output ", shape_str(grad_output.shape()),
                          " does not match the output shape ", shape_str(out_shape), " of input ", shape_str(x.shape()),
                          " and weight ", shape_str(weight.shape()));

    Conv2dGrads grads;
    need_bias = need_bias && has_bias;
    if (need_input) grads.input = Tensor::empty(x.shape(), x.options());
    if (need_weight) grads.weight = Tensor::empty(weight.shape(), weight.options());
    if (need_bias) grads.bias = Tensor::empty({weight.size(0)}, weight.options());
    if (!need_input && !need_weight && !need_bias) return grads;

    const Tensor grad = contiguous_copy(grad_output);
    if (grad.numel() == 0 || x.numel() == 0) {
        // No output, or an output made only of padding taps: nothing flows to input or weight.
        if (need_input) grads.input.fill_(0.0);
        if (need_weight) grads.weight.fill_(0.0);
        if (need_bias) {
            if (grad.numel() == 0)
                grads.bias.fill_(0.0);
            else
                KASMINA_BACKEND(x.device(), conv2d_backward_weights, grad, x, params, Tensor(), grads.bias);
        }
        return grads;
    }
    if (need_input) KASMINA_BACKEND(x.device(), conv2d_backward_data, grad, contiguous_copy(weight), params, grads.input);
    if (need_weight || need_bias)
        KASMINA_BACKEND(x.device(), conv2d_backward_weights, grad, contiguous_copy(x), params, grads.weight, grads.bias);
    return grads;
}

}  // namespace kasmina::kernels
