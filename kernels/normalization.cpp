// Layer and batch normalization entry points: validate operands (shapes against the normalized
// shape or the channel count, dtypes, devices), allocate outputs and bring operands to the dense
// layouts the backends take ([rows, n] for layer norm, [N, C, S] for batch norm).
#include "kernels/normalization.h"

#include <algorithm>
#include <cmath>

#include "kernels/backend.h"
#include "kernels/kernels.h"

namespace kasmina::kernels {
namespace {

// Operands share one device that this build has a backend for.
void require_backend(const char* op, std::initializer_list<const Tensor*> tensors) {
    select_backend(common_device(op, tensors), op);
}

void require_floating(const char* op, const Tensor& x) {
    if (x.dtype() != DType::f32 && x.dtype() != DType::f64)
        raise<DTypeError>(op, "expected a float32 or float64 input, got ", x.describe());
}

// An optional operand (weight, bias, running statistic) must match x's dtype and hold `count` elements.
void check_parameter(const char* op, const char* name, const Tensor& parameter, const Tensor& x, int64_t count,
                     const char* what) {
    if (!parameter.defined()) return;
    if (parameter.dtype() != x.dtype())
        raise<DTypeError>(op, name, " is ", parameter.describe(), " but the input is ", x.describe(),
                          " (convert one with .to(dtype))");
    if (parameter.numel() != count)
        raise<ShapeError>(op, name, " ", shape_str(parameter.shape()), " does not match input ", shape_str(x.shape()),
                          " (expected ", count, " elements, one per ", what, ")");
}

Tensor dense(const Tensor& x) {
    if (!x.defined() || x.is_contiguous()) return x;
    Tensor out = Tensor::empty(x.shape(), x.options());
    copy_into(out, x);
    return out;
}

// A dense tensor viewed with another shape of the same element count.
Tensor as_shape(const Tensor& x, const Shape& shape) {
    if (!x.defined()) return x;
    const Tensor contiguous = dense(x);
    return detail::make_view(contiguous, shape, contiguous_strides(shape), contiguous.offset());
}

// The gradient as the backends read it: dense with `shape`, or, on the GPU, the one element of a
// gradient that holds one value everywhere (every stride 0: the gradient of a sum arrives so), which
// the CUDA kernels read once instead of a materialized copy (normalization_backend.inc).
Tensor gradient_operand(const Tensor& grad, const Tensor& x, const Shape& shape) {
    const bool uniform = grad.numel() > 1 && std::all_of(grad.strides().begin(), grad.strides().end(),
                                                         [](int64_t stride) { return stride == 0; });
    if (uniform && x.device().is_cuda()) return detail::make_view(grad, Shape{1}, Shape{1}, grad.offset());
    return as_shape(grad, shape);
}

// The [N, C, S] view of a batch norm input [N, C, *].
Shape batch_norm_geometry(const Tensor& x) {
    int64_t spatial = 1;
    for (int64_t d = 2; d < x.dim(); ++d) spatial *= x.size(d);
    return {x.size(0), x.size(1), spatial};
}

}  // namespace

// ---- layer normalization ----------------------------------------------------------------------------

LayerNormForward layer_norm(const Tensor& x, int64_t normalized_numel, const Tensor& weight, const Tensor& bias,
                            double eps) {
    const char* op = "layer_norm";
    require_backend(op, {&x, &weight, &bias});
    require_floating(op, x);
    // normalized_numel must be the element count of some trailing dims of x.
    int64_t trailing = 1;
    bool found = normalized_numel == 1;
    for (int64_t d = x.dim() - 1; d >= 0 && !found && trailing <= normalized_numel; --d) {
        trailing *= x.size(d);
        found = trailing == normalized_numel;
    }
    if (normalized_numel < 1 || !found)
        raise<ShapeError>(op, "input ", shape_str(x.shape()), " has no trailing dims holding ", normalized_numel,
                          " elements to normalize over");
    check_parameter(op, "weight", weight, x, normalized_numel, "normalized element");
    check_parameter(op, "bias", bias, x, normalized_numel, "normalized element");

    const int64_t rows = x.numel() / normalized_numel;
    LayerNormForward result{Tensor::empty(x.shape(), x.options()), Tensor::empty({rows}, x.options()),
                            Tensor::empty({rows}, x.options())};
    if (rows == 0) return result;
    KASMINA_BACKEND(x.device(), layer_norm, as_shape(x, {rows, normalized_numel}), as_shape(weight, {normalized_numel}),
                    as_shape(bias, {normalized_numel}), eps, as_shape(result.output, {rows, normalized_numel}),
                    result.mean, result.rstd);
    return result;
}

LayerNormGrads layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                   int64_t normalized_numel, const Tensor& weight, bool need_input, bool need_weight,
                                   bool need_bias) {
    const char* op = "layer_norm_backward";
    require_backend(op, {&grad, &x, &mean, &rstd, &weight});
    require_floating(op, x);
    check_same_dtype(op, grad, x);
    if (grad.shape() != x.shape())
        raise<ShapeError>(op, "gradient ", shape_str(grad.shape()), " does not match input ", shape_str(x.shape()));
    if (normalized_numel < 1 || x.numel() % normalized_numel != 0)
        raise<ShapeError>(op, "input ", shape_str(x.shape()), " does not split into rows of ", normalized_numel);
    const int64_t rows = x.numel() / normalized_numel;
    check_parameter(op, "mean", mean, x, rows, "row");
    check_parameter(op, "rstd", rstd, x, rows, "row");
    check_parameter(op, "weight", weight, x, normalized_numel, "normalized element");

    LayerNormGrads grads;
    if (need_input) grads.input = Tensor::empty(x.shape(), x.options());
    if (need_weight) grads.weight = Tensor::empty({normalized_numel}, x.options());
    if (need_bias) grads.bias = Tensor::empty({normalized_numel}, x.options());
    if (rows == 0) {
        if (need_weight) grads.weight.zero_();
        if (need_bias) grads.bias.zero_();
        return grads;
    }
    if (!need_input && !need_weight && !need_bias) return grads;
    const Shape matrix{rows, normalized_numel};
    KASMINA_BACKEND(x.device(), layer_norm_backward, gradient_operand(grad, x, matrix), as_shape(x, matrix), dense(mean), dense(rstd),
                             as_shape(weight, {normalized_numel}), as_shape(grads.input, matrix), grads.weight,
                             grads.bias);
    return grads;
}

// ---- batch normalization ----------------------------------------------------------------------------

BatchNormForward batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps,
                            const Tensor& batches_tracked) {
    const char* op = "batch_norm";
    require_backend(op, {&x, &running_mean, &running_var, &weight, &bias, &batches_tracked});
    if (batches_tracked.defined() &&
        (batches_tracked.dtype() != DType::i64 || batches_tracked.numel() != 1 || !batches_tracked.is_contiguous()))
        raise<DTypeError>(op, "batches_tracked must be one contiguous int64 element, got ", batches_tracked.describe());
    if (batches_tracked.defined()) detail::check_inplace_allowed(batches_tracked, op);
    require_floating(op, x);
    if (x.dim() < 2)
        raise<ShapeError>(op, "expected an input [N, C] or [N, C, *] with at least 2 dims, got ", shape_str(x.shape()));
    const int64_t channels = x.size(1);
    check_parameter(op, "weight", weight, x, channels, "channel");
    check_parameter(op, "bias", bias, x, channels, "channel");
    check_parameter(op, "running_mean", running_mean, x, channels, "channel");
    check_parameter(op, "running_var", running_var, x, channels, "channel");
    if (running_mean.defined() != running_var.defined())
        raise<Error>(op, "running_mean and running_var must both be given or both be omitted");
    if (!training && !running_mean.defined())
        raise<Error>(op, "running_mean and running_var must be given in evaluation mode (training = false)");

    const Shape geometry = batch_norm_geometry(x);
    if (training && geometry[0] * geometry[2] == 1)
        raise<ShapeError>(op, "Expected more than 1 value per channel when training, got input size ",
                          shape_str(x.shape()));

    BatchNormForward result;
    result.output = Tensor::empty(x.shape(), x.options());
    const Tensor x_dense = as_shape(x, geometry), output = as_shape(result.output, geometry);
    if (!training) {
        if (x.numel() > 0)
            KASMINA_BACKEND(x.device(), batch_norm_inference, x_dense, dense(weight), dense(bias), dense(running_mean), dense(running_var), eps,
                                      output);
        return result;
    }
    result.save_mean = Tensor::empty({channels}, x.options());
    result.save_invstd = Tensor::empty({channels}, x.options());
    if (x.numel() == 0) {
        // No values: statistics of an empty batch are undefined, so leave the running ones untouched.
        result.save_mean.fill_(std::nan(""));
        result.save_invstd.fill_(std::nan(""));
        if (batches_tracked.defined()) {
            add_into(batches_tracked, Tensor::scalar(1.0, {.dtype = DType::i64, .device = x.device()}));
            batches_tracked.impl()->storage->bump_version();
        }
        return result;
    }
    // The running statistics are updated in place: through a dense copy when they are strided views.
    if (running_mean.defined()) {
        detail::check_inplace_allowed(running_mean, op);
        detail::check_inplace_allowed(running_var, op);
    }
    const Tensor mean_target = dense(running_mean), var_target = dense(running_var);
    KASMINA_BACKEND(x.device(), batch_norm_training, x_dense, dense(weight), dense(bias), eps, momentum, output, result.save_mean,
                             result.save_invstd, mean_target, var_target, batches_tracked);
    if (running_mean.defined()) {
        if (!mean_target.same_storage(running_mean)) copy_into(running_mean, mean_target);
        if (!var_target.same_storage(running_var)) copy_into(running_var, var_target);
        running_mean.impl()->storage->bump_version();
        running_var.impl()->storage->bump_version();
    }
    if (batches_tracked.defined()) batches_tracked.impl()->storage->bump_version();
    return result;
}

BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
                                   const Tensor& save_invstd, const Tensor& running_mean, const Tensor& running_var,
                                   bool training, double eps, bool need_input, bool need_weight, bool need_bias) {
    const char* op = "batch_norm_backward";
    require_backend(op, {&grad, &x, &weight, &save_mean, &save_invstd, &running_mean, &running_var});
    require_floating(op, x);
    check_same_dtype(op, grad, x);
    if (x.dim() < 2)
        raise<ShapeError>(op, "expected an input [N, C] or [N, C, *] with at least 2 dims, got ", shape_str(x.shape()));
    if (grad.shape() != x.shape())
        raise<ShapeError>(op, "gradient ", shape_str(grad.shape()), " does not match input ", shape_str(x.shape()));
    const int64_t channels = x.size(1);
    check_parameter(op, "weight", weight, x, channels, "channel");
    // The statistics the forward normalized with: the batch's in training, the running ones in eval.
    Tensor mean, invstd;
    if (training) {
        if (!save_mean.defined() || !save_invstd.defined())
            raise<Error>(op, "training backward needs save_mean and save_invstd from the forward");
        mean = save_mean;
        invstd = save_invstd;
    } else {
        if (!running_mean.defined() || !running_var.defined())
            raise<Error>(op, "evaluation backward needs running_mean and running_var");
        mean = running_mean;
        invstd = unary(UnaryOp::rsqrt, binary(BinaryOp::add, running_var, Tensor::full({}, eps, x.options())));
    }
    check_parameter(op, training ? "save_mean" : "running_mean", mean, x, channels, "channel");
    check_parameter(op, training ? "save_invstd" : "running_var", invstd, x, channels, "channel");

    BatchNormGrads grads;
    if (need_input) grads.input = Tensor::empty(x.shape(), x.options());
    if (need_weight) grads.weight = Tensor::empty({channels}, x.options());
    if (need_bias) grads.bias = Tensor::empty({channels}, x.options());
    if (x.numel() == 0) {
        if (need_weight) grads.weight.zero_();
        if (need_bias) grads.bias.zero_();
        return grads;
    }
    if (!need_input && !need_weight && !need_bias) return grads;
    const Shape geometry = batch_norm_geometry(x);
    KASMINA_BACKEND(x.device(), batch_norm_backward, gradient_operand(grad, x, geometry), as_shape(x, geometry), as_shape(weight, {channels}),
                             as_shape(mean, {channels}), as_shape(invstd, {channels}), training,
                             as_shape(grads.input, geometry), grads.weight, grads.bias);
    return grads;
}

}  // namespace kasmina::kernels
