#include "layers/normalization.h"

#include "autograd/normalization.h"
#include "autograd/ops.h"
#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

namespace kasmina::nn {

LayerNorm::LayerNorm(Shape normalized_shape, LayerNormOptions options)
    : normalized_shape_(std::move(normalized_shape)), options_(options) {
    if (normalized_shape_.empty()) raise<ShapeError>("LayerNorm", "normalized_shape must have at least one dimension");
    if (options.elementwise_affine) {
        weight = register_parameter("weight", Tensor::ones(normalized_shape_));
        if (options.bias) bias = register_parameter("bias", Tensor::zeros(normalized_shape_));
    }
}

std::string LayerNorm::extra_repr() const {
    std::string shape = "(";
    for (size_t i = 0; i < normalized_shape_.size(); ++i) shape += (i ? ", " : "") + std::to_string(normalized_shape_[i]);
    shape += normalized_shape_.size() == 1 ? ",)" : ")";
    return make_message(shape, ", eps=", options_.eps, ", elementwise_affine=", py_bool(options_.elementwise_affine));
}

Tensor LayerNorm::forward(const Tensor& input) { return layer_norm(input, normalized_shape_, weight, bias, options_.eps); }

BatchNorm::BatchNorm(int64_t num_features, BatchNormOptions options) : num_features_(num_features), options_(options) {
    if (num_features <= 0) raise<ShapeError>("BatchNorm", "num_features must be positive, got ", num_features);
    if (options.affine) {
        weight = register_parameter("weight", Tensor::ones({num_features}));
        bias = register_parameter("bias", Tensor::zeros({num_features}));
    }
    if (options.track_running_stats) {
        running_mean = register_buffer("running_mean", Tensor::zeros({num_features}));
        running_var = register_buffer("running_var", Tensor::ones({num_features}));
        num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, {.dtype = DType::i64}));
    }
}

std::string BatchNorm::extra_repr() const {
    const std::string momentum = options_.momentum ? make_message(*options_.momentum) : "None";
    return make_message(num_features_, ", eps=", options_.eps, ", momentum=", momentum, ", affine=", py_bool(options_.affine),
                        ", track_running_stats=", py_bool(options_.track_running_stats));
}

double BatchNorm::average_factor() const {
    if (!counts_batches()) return options_.momentum.value_or(0.0);
    if (options_.momentum) return *options_.momentum;
    return 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>() + 1);
}

void BatchNorm::count_batch() {
    NoGradGuard no_grad;
    kernels::add_into(num_batches_tracked, Tensor::scalar(1.0, {.dtype = DType::i64, .device = num_batches_tracked.device()}));
    num_batches_tracked.impl()->storage->bump_version();
}

Tensor BatchNorm::forward(const Tensor& input) {
    if (!is_floating(input.dtype()))
        raise<DTypeError>(type_name().c_str(), "expected a floating input, got ", input.describe());
    check_input_rank(input);
    if (input.size(1) != num_features_)
        raise<ShapeError>(type_name().c_str(), "expected ", num_features_, " channels in dimension 1, got input ",
                          shape_str(input.shape()));
    if (is_training() && input.numel() / num_features_ <= 1)
        raise<ShapeError>(type_name().c_str(), "Expected more than 1 value per channel when training, got input size ",
                          shape_str(input.shape()));
    // The batch is counted only once batch_norm has succeeded, so a raising forward changes no buffer
    // (batch_norm validates everything before it updates the running statistics).
    const bool use_batch_stats = is_training() || !options_.track_running_stats;
    if (use_batch_stats && replica_sum_) {
        Tensor output = synchronized_batch_norm(input);
        if (counts_batches()) count_batch();
        return output;
    }
    // Counted on the device with the running statistics (no launch of its own).
    return batch_norm(input, running_mean, running_var, weight, bias, use_batch_stats, average_factor(), options_.eps,
                      counts_batches() ? num_batches_tracked : Tensor());
}

// The global batch's statistics from per-replica sums (two passes: the mean first, then the centred
// squares, so the variance does not suffer from cancellation). The counts travel with the sums, so
// replicas may hold batches of different sizes.
Tensor BatchNorm::synchronized_batch_norm(const Tensor& input) {
    std::vector<int64_t> dims;
    Shape stat_shape(static_cast<size_t>(input.dim()), 1);
    stat_shape[1] = num_features_;
    for (int64_t d = 0; d < input.dim(); ++d)
        if (d != 1) dims.push_back(d);
    const double local_count = static_cast<double>(input.numel() / num_features_);
    const Tensor totals = replica_sum_(cat({sum(input, dims), Tensor::full({1}, local_count, {.dtype = input.dtype(), .device = input.device()})}));
    const Tensor count = totals.narrow(0, num_features_, 1);
    const Tensor batch_mean = totals.narrow(0, 0, num_features_) / count;
    const Tensor centered = input - batch_mean.reshape(stat_shape);
    const Tensor batch_var = replica_sum_(sum(centered * centered, dims)) / count;  // biased, as normalization uses
    Tensor output = centered * rsqrt(batch_var + options_.eps).reshape(stat_shape);
    if (weight.defined()) output = output * weight.reshape(stat_shape) + bias.reshape(stat_shape);
    if (is_training() && options_.track_running_stats) {
        NoGradGuard no_grad;
        const double factor = average_factor();
        const Tensor unbiased = batch_var.detach() * count.detach() / (count.detach() - 1.0);
        copy_into(running_mean, running_mean * (1.0 - factor) + batch_mean.detach() * factor);
        copy_into(running_var, running_var * (1.0 - factor) + unbiased * factor);
        running_mean.impl()->storage->bump_version();
        running_var.impl()->storage->bump_version();
    }
    return output;
}

void BatchNorm1d::check_input_rank(const Tensor& input) const {
    if (input.dim() != 2 && input.dim() != 3)
        raise<ShapeError>("BatchNorm1d", "expected 2D or 3D input (N, C) or (N, C, L), got ", input.dim(), "D input ",
                          shape_str(input.shape()));
}

void BatchNorm2d::check_input_rank(const Tensor& input) const {
    if (input.dim() != 4)
        raise<ShapeError>("BatchNorm2d", "expected 4D input (N, C, H, W), got ", input.dim(), "D input ", shape_str(input.shape()));
}

}  // namespace kasmina::nn
