// Layer and batch normalization: the forward call, then its gradient right below it, with the operand
// shapes in a comment (the autograd/functions.cpp pattern, kept beside the normalization kernels).
#include "autograd/normalization.h"

#include "autograd/node.h"
#include "kernels/normalization.h"

namespace kasmina {

using autograd::needs_grad;
using autograd::record;
using autograd::SavedTensor;
using Grads = std::vector<Tensor>;

// out [*, D...] = (x - mean) * rstd * weight [D...] + bias [D...], statistics per row over D... (biased)
// mean, rstd [rows];  xhat = (x - mean) * rstd, g = grad * weight
// grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row; grad_weight = sum_rows(grad * xhat);
// grad_bias = sum_rows(grad)
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
    const auto rank = static_cast<int64_t>(normalized_shape.size());
    if (rank == 0) raise<ShapeError>("layer_norm", "normalized_shape must have at least one dim, got []");
    bool matches = x.dim() >= rank;
    for (int64_t d = 0; matches && d < rank; ++d) matches = x.size(x.dim() - rank + d) == normalized_shape[d];
    if (!matches)
        raise<ShapeError>("layer_norm", "input ", shape_str(x.shape()), " does not end with normalized_shape ",
                          shape_str(normalized_shape), " (expected input of shape [*, ",
                          shape_str(normalized_shape).substr(1), ")");
    for (const auto& [name, parameter] : {std::pair{"weight", &weight}, std::pair{"bias", &bias}})
        if (parameter->defined() && parameter->shape() != normalized_shape)
            raise<ShapeError>("layer_norm", name, " ", shape_str(parameter->shape()),
                              " does not match normalized_shape ", shape_str(normalized_shape));
    const int64_t normalized_numel = shape_numel(normalized_shape);

    kernels::LayerNormForward forward = kernels::layer_norm(x, normalized_numel, weight, bias, eps);
    if (!needs_grad({&x, &weight, &bias})) return forward.output;
    const bool need_x = x.requires_grad(), need_weight = weight.defined() && weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    SavedTensor saved_x(x), saved_weight(weight);
    const Tensor mean = forward.mean, rstd = forward.rstd;  // produced here, never modified by the caller
    return record("layer_norm", forward.output, {x, weight, bias}, [=](const Grads& g) {
        const kernels::LayerNormGrads grads =
            kernels::layer_norm_backward(g[0], saved_x.unpack("layer_norm"), mean, rstd, normalized_numel,
                                         saved_weight.unpack("layer_norm"), need_x, need_weight, need_bias);
        return Grads{grads.input, need_weight ? grads.weight.reshape(normalized_shape) : Tensor(),
                     need_bias ? grads.bias.reshape(normalized_shape) : Tensor()};
    });
}

// out [N, C, *] = (x - mean[c]) * invstd[c] * weight[c] + bias[c]
// training: mean, invstd [C] from the batch (over N and *); the gradient flows through them:
//   grad_x = weight * invstd * (grad - mean(grad) - xhat * mean(grad * xhat)) per channel
// eval: running_mean, running_var [C] are constants: grad_x = grad * weight * invstd
// both: grad_weight = sum(grad * xhat), grad_bias = sum(grad) per channel
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps, const Tensor& batches_tracked) {
    kernels::BatchNormForward forward =
        kernels::batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, batches_tracked);
    if (!needs_grad({&x, &weight, &bias})) return forward.output;
    const bool need_x = x.requires_grad(), need_weight = weight.defined() && weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    SavedTensor saved_x(x), saved_weight(weight);
    // Eval uses the running statistics as they are now: saving them catches a later in-place update.
    SavedTensor saved_running_mean(training ? Tensor() : running_mean);
    SavedTensor saved_running_var(training ? Tensor() : running_var);
    const Tensor save_mean = forward.save_mean, save_invstd = forward.save_invstd;
    const Shape weight_shape = weight.defined() ? weight.shape() : Shape{};
    const Shape bias_shape = bias.defined() ? bias.shape() : Shape{};
    return record("batch_norm", forward.output, {x, weight, bias}, [=](const Grads& g) {
        const kernels::BatchNormGrads grads = kernels::batch_norm_backward(
            g[0], saved_x.unpack("batch_norm"), saved_weight.unpack("batch_norm"), save_mean, save_invstd,
            saved_running_mean.unpack("batch_norm"), saved_running_var.unpack("batch_norm"), training, eps, need_x,
            need_weight, need_bias);
        return Grads{grads.input, need_weight ? grads.weight.reshape(weight_shape) : Tensor(),
                     need_bias ? grads.bias.reshape(bias_shape) : Tensor()};
    });
}

}  // namespace kasmina
