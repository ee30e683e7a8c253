// Layer and batch normalization (functional forms): forward values against float64 references
// computed here, running-statistics updates, float32 (oneDNN) against float64 (loops), gradients
// against finite differences, PyTorch reference fixtures, and the errors bad operands raise.
#include "autograd/normalization.h"

#include <cmath>
#include <optional>

#include "kernels/normalization.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_tensors_close;
using kasmina::testing::expect_values;
using kasmina::testing::random_leaf;
using Inputs = std::vector<Tensor>;
using Values = std::vector<double>;

namespace {

Tensor random_tensor(const Shape& shape, DType dtype = DType::f32, double scale = 1.0, double shift = 0.0) {
    NoGradGuard no_grad;
    return (Tensor::randn(shape, {.dtype = DType::f64}) * scale + shift).to(dtype);
}

Values host(const Tensor& t) { return t.defined() ? t.contiguous().to_vector<double>() : Values{}; }

// Reference layer norm over rows of n values: output, and per row mean and rstd.
struct LayerNormReference {
    Values output, mean, rstd;
};
LayerNormReference reference_layer_norm(const Values& x, int64_t n, const Values& weight, const Values& bias,
                                        double eps) {
    const int64_t rows = static_cast<int64_t>(x.size()) / n;
    LayerNormReference ref{Values(x.size()), Values(rows), Values(rows)};
    for (int64_t r = 0; r < rows; ++r) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; ++i) mean += x[r * n + i] / n;
        for (int64_t i = 0; i < n; ++i) var += (x[r * n + i] - mean) * (x[r * n + i] - mean) / n;
        ref.mean[r] = mean;
        ref.rstd[r] = 1.0 / std::sqrt(var + eps);
        for (int64_t i = 0; i < n; ++i) {
            double y = (x[r * n + i] - mean) * ref.rstd[r];
            if (!weight.empty()) y *= weight[i];
            if (!bias.empty()) y += bias[i];
            ref.output[r * n + i] = y;
        }
    }
    return ref;
}

// Reference batch norm on x [N, C, S]: with `mean`/`var` given (eval) or from the batch (training).
struct BatchNormReference {
    Values output, mean, biased_var;
};
BatchNormReference reference_batch_norm(const Values& x, int64_t batch, int64_t channels, int64_t spatial,
                                        const Values& weight, const Values& bias, double eps,
                                        std::optional<std::pair<Values, Values>> running = std::nullopt) {
    BatchNormReference ref{Values(x.size()), Values(channels), Values(channels)};
    const double count = static_cast<double>(batch * spatial);
    auto at = [&](int64_t n, int64_t c, int64_t s) { return (n * channels + c) * spatial + s; };
    for (int64_t c = 0; c < channels; ++c) {
        if (running) {
            ref.mean[c] = running->first[c];
            ref.biased_var[c] = running->second[c];
        } else {
            for (int64_t n = 0; n < batch; ++n)
                for (int64_t s = 0; s < spatial; ++s) ref.mean[c] += x[at(n, c, s)] / count;
            for (int64_t n = 0; n < batch; ++n)
                for (int64_t s = 0; s < spatial; ++s) {
                    const double d = x[at(n, c, s)] - ref.mean[c];
                    ref.biased_var[c] += d * d / count;
                }
        }
        const double invstd = 1.0 / std::sqrt(ref.biased_var[c] + eps);
        for (int64_t n = 0; n < batch; ++n)
            for (int64_t s = 0; s < spatial; ++s) {
                double y = (x[at(n, c, s)] - ref.mean[c]) * invstd;
                if (!weight.empty()) y *= weight[c];
                if (!bias.empty()) y += bias[c];
                ref.output[at(n, c, s)] = y;
            }
    }
    return ref;
}

int64_t spatial_of(const Shape& shape) {
    int64_t spatial = 1;
    for (size_t d = 2; d < shape.size(); ++d) spatial *= shape[d];
    return spatial;
}

double tolerance_for(DType dtype) { return dtype == DType::f32 ? 2e-5 : 1e-12; }

// Gradients of sum(out * upstream) for a normalization function of (x, weight, bias).
struct Gradients {
    Tensor input, weight, bias;
};
template <typename Function>
Gradients gradients_of(Function function, const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& upstream) {
    Tensor xl = x.detach().clone().set_requires_grad(true);
    Tensor wl = weight.detach().clone().set_requires_grad(true);
    Tensor bl = bias.detach().clone().set_requires_grad(true);
    function(xl, wl, bl).backward(upstream);
    return {xl.grad(), wl.grad(), bl.grad()};
}

}  // namespace

// ---- layer norm: forward -----------------------------------------------------------------------------

TEST(LayerNorm, NormalizesTheLastDimWithAndWithoutAffine) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = random_tensor({3, 4, 7}, dtype, 2.0, 0.5);
        const Tensor weight = random_tensor({7}, dtype), bias = random_tensor({7}, dtype);
        const auto affine = reference_layer_norm(host(x), 7, host(weight), host(bias), 1e-5);
        expect_values(layer_norm(x, {7}, weight, bias), affine.output, tolerance_for(dtype));
        const auto plain = reference_layer_norm(host(x), 7, {}, {}, 1e-5);
        expect_values(layer_norm(x, {7}), plain.output, tolerance_for(dtype));
        const auto weight_only = reference_layer_norm(host(x), 7, host(weight), {}, 1e-3);
        expect_values(layer_norm(x, {7}, weight, {}, 1e-3), weight_only.output, tolerance_for(dtype));
        const auto bias_only = reference_layer_norm(host(x), 7, {}, host(bias), 1e-5);
        expect_values(layer_norm(x, {7}, {}, bias), bias_only.output, tolerance_for(dtype));
    }
}

TEST(LayerNorm, NormalizesTwoTrailingDims) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = random_tensor({2, 3, 4, 5}, dtype, 3.0, -1.0);
        const Tensor weight = random_tensor({4, 5}, dtype), bias = random_tensor({4, 5}, dtype);
        const auto ref = reference_layer_norm(host(x), 20, host(weight), host(bias), 1e-5);
        const Tensor out = layer_norm(x, {4, 5}, weight, bias);
        EXPECT_EQ(out.shape(), x.shape());
        expect_values(out, ref.output, tolerance_for(dtype));
        expect_values(layer_norm(x, {4, 5}), reference_layer_norm(host(x), 20, {}, {}, 1e-5).output,
                      tolerance_for(dtype));
    }
}

TEST(LayerNorm, KernelReturnsRowMeanAndRstd) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = random_tensor({2, 3, 6}, dtype, 1.5, 2.0);
        const auto ref = reference_layer_norm(host(x), 6, {}, {}, 1e-5);
        const kernels::LayerNormForward forward = kernels::layer_norm(x, 6, {}, {}, 1e-5);
        EXPECT_EQ(forward.mean.shape(), Shape({6}));
        EXPECT_EQ(forward.rstd.shape(), Shape({6}));
        EXPECT_EQ(forward.rstd.dtype(), dtype);
        expect_values(forward.mean, ref.mean, tolerance_for(dtype));
        expect_values(forward.rstd, ref.rstd, tolerance_for(dtype));
    }
}

TEST(LayerNorm, NonContiguousInput) {
    const Tensor base = random_tensor({6, 4});
    const Tensor x = base.t();  // [4, 6], column-major
    ASSERT_FALSE(x.is_contiguous());
    expect_values(layer_norm(x, {6}), reference_layer_norm(host(x), 6, {}, {}, 1e-5).output, 2e-5);
}

TEST(LayerNorm, Float32AgreesWithFloat64ForwardAndBackward) {
    // The larger shapes take the multi-threaded loops; rows of 5000 span several reduction blocks.
    for (const Shape& shape : {Shape{16, 33}, Shape{300, 130}, Shape{8, 5000}}) {
        const int64_t n = shape[1];
        const Tensor x = random_tensor(shape, DType::f64, 2.0, 1.0);
        const Tensor weight = random_tensor({n}, DType::f64), bias = random_tensor({n}, DType::f64);
        const Tensor upstream = random_tensor(shape, DType::f64);
        auto function = [n](const Tensor& a, const Tensor& w, const Tensor& b) { return layer_norm(a, {n}, w, b); };
        expect_values(function(x, weight, bias),
                      reference_layer_norm(host(x), n, host(weight), host(bias), 1e-5).output, 1e-12);
        expect_tensors_close(function(x.to(DType::f32), weight.to(DType::f32), bias.to(DType::f32)),
                             function(x, weight, bias), 1e-5);
        const Gradients wide = gradients_of(function, x, weight, bias, upstream);
        const Gradients narrow = gradients_of(function, x.to(DType::f32), weight.to(DType::f32), bias.to(DType::f32),
                                              upstream.to(DType::f32));
        expect_tensors_close(narrow.input, wide.input, 1e-4);
        expect_tensors_close(narrow.weight, wide.weight, 1e-4);
        expect_tensors_close(narrow.bias, wide.bias, 1e-4);
    }
}

TEST(LayerNorm, ParameterGradientsWithoutAnInputGradient) {
    // Only weight and bias require grad: the backward computes no input gradient.
    const Tensor x = random_tensor({6, 9}, DType::f64), upstream = random_tensor({6, 9}, DType::f64);
    for (DType dtype : {DType::f32, DType::f64}) {
        Tensor weight = random_tensor({9}, DType::f64).to(dtype).set_requires_grad(true);
        Tensor bias = Tensor::zeros({9}, {.dtype = dtype}).set_requires_grad(true);
        layer_norm(x.to(dtype), {9}, weight, bias).backward(upstream.to(dtype));
        const auto normalized = reference_layer_norm(host(x), 9, {}, {}, 1e-5).output;
        const Values dy = host(upstream);
        Values expected_weight(9, 0.0), expected_bias(9, 0.0);
        for (size_t i = 0; i < dy.size(); ++i) {
            expected_weight[i % 9] += dy[i] * normalized[i];
            expected_bias[i % 9] += dy[i];
        }
        expect_values(weight.grad(), expected_weight, dtype == DType::f32 ? 1e-5 : 1e-12);
        expect_values(bias.grad(), expected_bias, dtype == DType::f32 ? 1e-5 : 1e-12);
    }
}

TEST(LayerNorm, ConstantRowsGiveTheBias) {
    // Variance 0: (x - mean) = 0 exactly, times rsqrt(eps), then + bias (as PyTorch). Gradients stay finite.
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = Tensor::full({3, 5}, 2.75, {.dtype = dtype});
        const Tensor weight = random_tensor({5}, dtype), bias = random_tensor({5}, dtype);
        const Tensor out = layer_norm(x, {5}, weight, bias);
        const Values b = host(bias);
        expect_values(out,
                      Values{b[0], b[1], b[2], b[3], b[4], b[0], b[1], b[2], b[3], b[4], b[0], b[1], b[2], b[3], b[4]},
                      1e-6);
        const kernels::LayerNormForward forward = kernels::layer_norm(x, 5, weight, bias, 1e-5);
        expect_values(forward.rstd, Values(3, 1.0 / std::sqrt(1e-5)), 1e-6);
        const Gradients grads =
            gradients_of([](const Tensor& a, const Tensor& w, const Tensor& c) { return layer_norm(a, {5}, w, c); }, x,
                         weight, bias, random_tensor({3, 5}, dtype));
        for (double value : host(grads.input)) EXPECT_TRUE(std::isfinite(value));
        for (double value : host(grads.weight)) EXPECT_NEAR(value, 0.0, 1e-6);
    }
}

TEST(LayerNorm, MatchesPyTorchFixtureOverTwoDims) {
    const SafetensorsContent fixture =
        load_safetensors(std::string(KASMINA_FIXTURES_DIR) + "/layers/layernorm_two_dims.safetensors");
    const TensorMap& t = fixture.tensors;
    const Gradients grads = gradients_of(
        [](const Tensor& a, const Tensor& w, const Tensor& b) {
            return layer_norm(a, {3, 5}, w, b);
        },
        t.at("input"), t.at("param.weight"), t.at("param.bias"), t.at("grad_output"));
    expect_tensors_close(layer_norm(t.at("input"), {3, 5}, t.at("param.weight"), t.at("param.bias")), t.at("output"),
                         2e-5);
    expect_tensors_close(grads.input, t.at("grad.input"), 2e-5);
    expect_tensors_close(grads.weight, t.at("grad.weight"), 2e-5);
    expect_tensors_close(grads.bias, t.at("grad.bias"), 2e-5);
}

// ---- layer norm: errors --------------------------------------------------------------------------------

TEST(LayerNorm, RejectsAnInputThatDoesNotEndWithTheNormalizedShape) {
    const Tensor x = Tensor::randn({2, 3});
    EXPECT_THROW_WITH(
        layer_norm(x, {4}), ShapeError,
        "layer_norm: input [2, 3] does not end with normalized_shape [4] (expected input of shape [*, 4])");
    EXPECT_THROW_WITH(layer_norm(x, {2, 3, 1}), ShapeError, "normalized_shape [2, 3, 1]");
    EXPECT_THROW_WITH(layer_norm(x, {}), ShapeError, "layer_norm");
    EXPECT_THROW_WITH(kernels::layer_norm(x, 4, {}, {}, 1e-5), ShapeError, "layer_norm: input [2, 3]");
}

TEST(LayerNorm, RejectsParametersOfAnotherShapeOrDtype) {
    const Tensor x = Tensor::randn({2, 3});
    EXPECT_THROW_WITH(layer_norm(x, {3}, Tensor::ones({4})), ShapeError,
                      "layer_norm: weight [4] does not match normalized_shape [3]");
    EXPECT_THROW_WITH(layer_norm(x, {3}, {}, Tensor::ones({1, 3})), ShapeError, "bias [1, 3]");
    EXPECT_THROW_WITH(layer_norm(x, {3}, Tensor::ones({3}, {.dtype = DType::f64})), DTypeError,
                      "layer_norm: weight is float64");
    EXPECT_THROW_WITH(layer_norm(Tensor::ones({2, 3}, {.dtype = DType::i64}), {3}), DTypeError, "layer_norm");
    EXPECT_THROW_WITH(kernels::layer_norm(x, 3, Tensor::ones({2}), {}, 1e-5), ShapeError, "expected 3 elements");
}

// ---- batch norm: forward ---------------------------------------------------------------------------------

TEST(BatchNorm, TrainingNormalizesWithBatchStatisticsForEveryRank) {
    for (const Shape& shape : {Shape{6, 4}, Shape{3, 4, 5}, Shape{2, 4, 3, 3}}) {
        for (DType dtype : {DType::f32, DType::f64}) {
            const Tensor x = random_tensor(shape, dtype, 2.0, 1.0);
            const Tensor weight = random_tensor({4}, dtype), bias = random_tensor({4}, dtype);
            const auto ref =
                reference_batch_norm(host(x), shape[0], 4, spatial_of(shape), host(weight), host(bias), 1e-5);
            const kernels::BatchNormForward forward = kernels::batch_norm(x, {}, {}, weight, bias, true, 0.1, 1e-5);
            EXPECT_EQ(forward.output.shape(), shape);
            expect_values(forward.output, ref.output, tolerance_for(dtype));
            expect_values(forward.save_mean, ref.mean, tolerance_for(dtype));
            Values invstd;
            for (double v : ref.biased_var) invstd.push_back(1.0 / std::sqrt(v + 1e-5));
            expect_values(forward.save_invstd, invstd, tolerance_for(dtype));
            const auto plain = reference_batch_norm(host(x), shape[0], 4, spatial_of(shape), {}, {}, 1e-5);
            expect_values(batch_norm(x, {}, {}, {}, {}, true, 0.1, 1e-5), plain.output, tolerance_for(dtype));
        }
    }
}

TEST(BatchNorm, EvalNormalizesWithRunningStatistics) {
    for (const Shape& shape : {Shape{5, 3}, Shape{2, 3, 4}, Shape{2, 3, 2, 3}}) {
        for (DType dtype : {DType::f32, DType::f64}) {
            const Tensor x = random_tensor(shape, dtype);
            const Tensor running_mean = random_tensor({3}, dtype, 0.5);
            const Tensor running_var = Tensor::from_vector<double>({0.5, 1.5, 2.0}, {3}).to(dtype);
            const Tensor weight = random_tensor({3}, dtype), bias = random_tensor({3}, dtype);
            const auto ref = reference_batch_norm(host(x), shape[0], 3, spatial_of(shape), host(weight), host(bias),
                                                  1e-5, std::pair{host(running_mean), host(running_var)});
            const Values mean_before = host(running_mean), var_before = host(running_var);
            expect_values(batch_norm(x, running_mean, running_var, weight, bias, false, 0.1, 1e-5), ref.output,
                          tolerance_for(dtype));
            expect_values(running_mean, mean_before, 0.0);
            expect_values(running_var, var_before, 0.0);
        }
    }
}

TEST(BatchNorm, TrainingUpdatesRunningStatisticsWithUnbiasedVariance) {
    for (double momentum : {0.1, 1.0}) {
        for (const Shape& shape : {Shape{6, 3}, Shape{2, 3, 4}, Shape{2, 3, 2, 2}}) {
            for (DType dtype : {DType::f32, DType::f64}) {
                const Tensor x = random_tensor(shape, dtype, 1.5, 0.5);
                Tensor running_mean = Tensor::from_vector<double>({0.2, -0.1, 0.0}, {3}).to(dtype);
                Tensor running_var = Tensor::from_vector<double>({1.0, 0.5, 2.0}, {3}).to(dtype);
                const Values mean_before = host(running_mean), var_before = host(running_var);
                const uint64_t version = running_mean.version();
                const auto ref = reference_batch_norm(host(x), shape[0], 3, spatial_of(shape), {}, {}, 1e-5);
                const double count = static_cast<double>(shape[0] * spatial_of(shape));
                batch_norm(x, running_mean, running_var, {}, {}, true, momentum, 1e-5);
                Values expected_mean, expected_var;
                for (int c = 0; c < 3; ++c) {
                    expected_mean.push_back((1 - momentum) * mean_before[c] + momentum * ref.mean[c]);
                    expected_var.push_back((1 - momentum) * var_before[c] +
                                           momentum * ref.biased_var[c] * count / (count - 1));
                }
                expect_values(running_mean, expected_mean, tolerance_for(dtype));
                expect_values(running_var, expected_var, tolerance_for(dtype));
                EXPECT_GT(running_mean.version(), version);  // an in-place write, visible to autograd
            }
        }
    }
}

// The count a module keeps (num_batches_tracked) rides the forward: advanced once per training call,
// also for an empty batch, never in eval; anything but one int64 element is refused before any update.
TEST(BatchNorm, BatchesTrackedAdvancesWithTheRunningStatistics) {
    const Tensor x = random_tensor({4, 3, 5});
    Tensor running_mean = Tensor::zeros({3}), running_var = Tensor::ones({3});
    Tensor batches = Tensor::scalar(7.0, {.dtype = DType::i64});
    const uint64_t version = batches.version();
    batch_norm(x, running_mean, running_var, {}, {}, true, 0.1, 1e-5, batches);
    EXPECT_EQ(batches.item<int64_t>(), 8);
    EXPECT_GT(batches.version(), version);
    batch_norm(Tensor::empty({0, 3, 5}), running_mean, running_var, {}, {}, true, 0.1, 1e-5, batches);
    EXPECT_EQ(batches.item<int64_t>(), 9);
    batch_norm(x, running_mean, running_var, {}, {}, false, 0.1, 1e-5, batches);
    EXPECT_EQ(batches.item<int64_t>(), 9);

    const Values mean_before = host(running_mean);
    EXPECT_THROW(batch_norm(x, running_mean, running_var, {}, {}, true, 0.1, 1e-5, Tensor::scalar(1.0)), DTypeError);
    EXPECT_THROW(batch_norm(x, running_mean, running_var, {}, {}, true, 0.1, 1e-5,
                            Tensor::zeros({2}, {.dtype = DType::i64})),
                 DTypeError);
    expect_values(running_mean, mean_before, 0.0);
}

TEST(BatchNorm, StridedRunningStatisticsAreUpdatedInPlace) {
    const Tensor x = random_tensor({4, 2});
    Tensor storage = Tensor::zeros({2, 2});
    Tensor running_mean = storage.select(1, 0), running_var = storage.select(1, 1);  // stride 2 views
    running_var.fill_(1.0);
    batch_norm(x, running_mean, running_var, {}, {}, true, 1.0, 1e-5);
    const auto ref = reference_batch_norm(host(x), 4, 2, 1, {}, {}, 1e-5);
    expect_values(running_mean, ref.mean, 1e-5);
    expect_values(running_var, {ref.biased_var[0] * 4 / 3, ref.biased_var[1] * 4 / 3}, 1e-5);
}

TEST(BatchNorm, NonContiguousInput) {
    // An NHWC buffer viewed as NCHW.
    const Tensor nhwc = random_tensor({2, 3, 3, 4});
    const Tensor x = nhwc.permute({0, 3, 1, 2});
    ASSERT_FALSE(x.is_contiguous());
    const auto ref = reference_batch_norm(host(x), 2, 4, 9, {}, {}, 1e-5);
    expect_values(batch_norm(x, {}, {}, {}, {}, true, 0.1, 1e-5), ref.output, 2e-5);
}

TEST(BatchNorm, Float32AgreesWithFloat64ForwardAndBackward) {
    // The larger shapes take the multi-threaded loops; runs of 3000 span several reduction blocks.
    for (const Shape& shape :
         {Shape{32, 8}, Shape{4, 8, 9}, Shape{4, 8, 5, 5}, Shape{5000, 8}, Shape{8, 8, 30, 30}, Shape{2, 8, 3000}}) {
        for (bool training : {true, false}) {
            const Tensor x = random_tensor(shape, DType::f64, 2.0, 1.0);
            const Tensor weight = random_tensor({8}, DType::f64), bias = random_tensor({8}, DType::f64);
            const Tensor running_mean = random_tensor({8}, DType::f64, 0.3),
                         running_var = Tensor::full({8}, 1.7, {.dtype = DType::f64});
            const Tensor upstream = random_tensor(shape, DType::f64);
            auto function_for = [training](const Tensor& rm, const Tensor& rv) {
                return [=](const Tensor& a, const Tensor& w, const Tensor& b) {
                    return batch_norm(a, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5);
                };
            };
            const auto wide_function = function_for(running_mean, running_var);
            const auto narrow_function = function_for(running_mean.to(DType::f32), running_var.to(DType::f32));
            const Tensor x32 = x.to(DType::f32), w32 = weight.to(DType::f32), b32 = bias.to(DType::f32);
            const auto ref = reference_batch_norm(
                host(x), shape[0], 8, spatial_of(shape), host(weight), host(bias), 1e-5,
                training ? std::nullopt : std::optional{std::pair{host(running_mean), host(running_var)}});
            expect_values(wide_function(x, weight, bias), ref.output, 1e-12);
            expect_tensors_close(narrow_function(x32, w32, b32), wide_function(x, weight, bias), 2e-5);
            const Gradients wide = gradients_of(wide_function, x, weight, bias, upstream);
            const Gradients narrow = gradients_of(narrow_function, x32, w32, b32, upstream.to(DType::f32));
            expect_tensors_close(narrow.input, wide.input, 1e-4);
            expect_tensors_close(narrow.weight, wide.weight, 1e-4);
            expect_tensors_close(narrow.bias, wide.bias, 1e-4);
        }
    }
}

TEST(BatchNorm, ParameterGradientsWithoutAnInputGradient) {
    for (const Shape& shape : {Shape{6, 3}, Shape{2, 3, 4}}) {
        const Tensor x = random_tensor(shape, DType::f64), upstream = random_tensor(shape, DType::f64);
        const auto ref = reference_batch_norm(host(x), shape[0], 3, spatial_of(shape), {}, {}, 1e-5);
        const Values dy = host(upstream);
        Values expected_weight(3, 0.0), expected_bias(3, 0.0);
        const int64_t spatial = spatial_of(shape);
        for (size_t i = 0; i < dy.size(); ++i) {
            const size_t channel = (i / spatial) % 3;
            expected_weight[channel] += dy[i] * ref.output[i];
            expected_bias[channel] += dy[i];
        }
        for (DType dtype : {DType::f32, DType::f64}) {
            Tensor weight = Tensor::ones({3}, {.dtype = dtype}).set_requires_grad(true);
            Tensor bias = Tensor::zeros({3}, {.dtype = dtype}).set_requires_grad(true);
            batch_norm(x.to(dtype), {}, {}, weight, bias, true, 0.1, 1e-5).backward(upstream.to(dtype));
            expect_values(weight.grad(), expected_weight, dtype == DType::f32 ? 1e-5 : 1e-12);
            expect_values(bias.grad(), expected_bias, dtype == DType::f32 ? 1e-5 : 1e-12);
        }
    }
}

TEST(BatchNorm, ConstantChannelsGiveTheBias) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = Tensor::full({4, 2, 3}, -1.25, {.dtype = dtype});
        const Tensor weight = Tensor::from_vector<double>({2.0, -3.0}, {2}).to(dtype);
        const Tensor bias = Tensor::from_vector<double>({0.5, 0.25}, {2}).to(dtype);
        Tensor running_mean = Tensor::zeros({2}, {.dtype = dtype}), running_var = Tensor::ones({2}, {.dtype = dtype});
        const kernels::BatchNormForward forward =
            kernels::batch_norm(x, running_mean, running_var, weight, bias, true, 0.1, 1e-5);
        expect_values(forward.output, {0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25,
                                       0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25},
                      1e-6);
        expect_values(forward.save_invstd, {1.0 / std::sqrt(1e-5), 1.0 / std::sqrt(1e-5)}, 1e-6);
        expect_values(running_mean, {-0.125, -0.125}, 1e-6);
        expect_values(running_var, {0.9, 0.9}, 1e-6);
        const Gradients grads =
            gradients_of([](const Tensor& a, const Tensor& w,
                            const Tensor& b) { return batch_norm(a, {}, {}, w, b, true, 0.1, 1e-5); },
                         x, weight, bias, random_tensor({4, 2, 3}, dtype));
        for (double value : host(grads.input)) EXPECT_TRUE(std::isfinite(value));
    }
}

TEST(BatchNorm, MatchesPyTorchFixturesInTrainingAndEval) {
    for (const char* name : {"batchnorm2d_train", "batchnorm1d_nc_train", "batchnorm2d_eval_after_train"}) {
        SCOPED_TRACE(name);
        const SafetensorsContent fixture =
            load_safetensors(std::string(KASMINA_FIXTURES_DIR) + "/layers/" + name + ".safetensors");
        const TensorMap& t = fixture.tensors;
        const bool training = fixture.metadata.at("mode") == "train";
        Tensor running_mean = t.at("param.running_mean").clone(), running_var = t.at("param.running_var").clone();
        Tensor x = t.at("input").clone().set_requires_grad(true);
        Tensor weight = t.at("param.weight").clone().set_requires_grad(true);
        Tensor bias = t.at("param.bias").clone().set_requires_grad(true);
        const Tensor out = batch_norm(x, running_mean, running_var, weight, bias, training, 0.1, 1e-5);
        out.backward(t.at("grad_output"));
        expect_tensors_close(out, t.at("output"), 2e-5);
        expect_tensors_close(x.grad(), t.at("grad.input"), 2e-5);
        expect_tensors_close(weight.grad(), t.at("grad.weight"), 2e-5);
        expect_tensors_close(bias.grad(), t.at("grad.bias"), 2e-5);
        expect_tensors_close(running_mean, t.at("after.running_mean"), 2e-5);
        expect_tensors_close(running_var, t.at("after.running_var"), 2e-5);
    }
}

TEST(BatchNorm, EvalBackwardRaisesWhenRunningStatisticsChangedInPlace) {
    const Tensor running_mean = Tensor::zeros({3}, {.dtype = DType::f64}),
                 running_var = Tensor::ones({3}, {.dtype = DType::f64});
    const Tensor x = random_leaf({4, 3});
    const Tensor out = batch_norm(x, running_mean, running_var, {}, {}, false, 0.1, 1e-5);
    batch_norm(x.detach(), running_mean, running_var, {}, {}, true, 0.1, 1e-5);  // a training step in between
    EXPECT_THROW_WITH(sum(out).backward(), AutogradError, "modified in place");
}

// ---- batch norm: errors ----------------------------------------------------------------------------------

TEST(BatchNorm, OneValuePerChannelIsAnErrorOnlyInTraining) {
    const Tensor running_mean = Tensor::zeros({3}), running_var = Tensor::ones({3});
    EXPECT_THROW_WITH(batch_norm(Tensor::randn({1, 3}), running_mean, running_var, {}, {}, true, 0.1, 1e-5), ShapeError,
                      "batch_norm: Expected more than 1 value per channel when training, got input size [1, 3]");
    EXPECT_THROW_WITH(batch_norm(Tensor::randn({1, 3, 1, 1}), {}, {}, {}, {}, true, 0.1, 1e-5), ShapeError,
                      "got input size [1, 3, 1, 1]");
    expect_values(running_mean, {0, 0, 0}, 0.0);  // nothing updated before the error
    EXPECT_NO_THROW(batch_norm(Tensor::randn({1, 3}), running_mean, running_var, {}, {}, false, 0.1, 1e-5));
    EXPECT_NO_THROW(batch_norm(Tensor::randn({1, 3, 2}), {}, {}, {}, {}, true, 0.1, 1e-5));
}

TEST(BatchNorm, RejectsParametersThatDoNotMatchTheChannels) {
    const Tensor x = Tensor::randn({2, 4, 3});
    EXPECT_THROW_WITH(batch_norm(x, {}, {}, Tensor::ones({3}), {}, true, 0.1, 1e-5), ShapeError,
                      "batch_norm: weight [3] does not match input [2, 4, 3] (expected 4 elements, one per channel)");
    EXPECT_THROW_WITH(batch_norm(x, {}, {}, {}, Tensor::ones({5}), true, 0.1, 1e-5), ShapeError, "bias [5]");
    EXPECT_THROW_WITH(batch_norm(x, Tensor::zeros({3}), Tensor::ones({3}), {}, {}, false, 0.1, 1e-5), ShapeError,
                      "running_mean [3]");
    EXPECT_THROW_WITH(batch_norm(x, Tensor::zeros({4}), Tensor::ones({2}), {}, {}, true, 0.1, 1e-5), ShapeError,
                      "running_var [2]");
    EXPECT_THROW_WITH(batch_norm(x, {}, {}, Tensor::ones({4}, {.dtype = DType::f64}), {}, true, 0.1, 1e-5), DTypeError,
                      "batch_norm: weight is float64");
}

TEST(BatchNorm, RejectsBadInputsAndMissingRunningStatistics) {
    EXPECT_THROW_WITH(batch_norm(Tensor::randn({4}), {}, {}, {}, {}, true, 0.1, 1e-5), ShapeError,
                      "batch_norm: expected an input [N, C] or [N, C, *] with at least 2 dims, got [4]");
    EXPECT_THROW_WITH(batch_norm(Tensor::ones({2, 3}, {.dtype = DType::i64}), {}, {}, {}, {}, true, 0.1, 1e-5),
                      DTypeError, "batch_norm");
    EXPECT_THROW_WITH(batch_norm(Tensor::randn({2, 3}), {}, {}, {}, {}, false, 0.1, 1e-5), Error,
                      "running_mean and running_var must be given in evaluation mode");
    EXPECT_THROW_WITH(batch_norm(Tensor::randn({2, 3}), Tensor::zeros({3}), {}, {}, {}, true, 0.1, 1e-5), Error,
                      "both be given");
}

// ---- gradients against finite differences -------------------------------------------------------------------

TEST(NormalizationGradcheck, LayerNormOverOneAndTwoDims) {
    EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], {5}, v[1], v[2]); },
                     {random_leaf({3, 5}, 1.5, 0.5), random_leaf({5}), random_leaf({5})});
    EXPECT_GRADCHECK(
        [](const Inputs& v) {
            return layer_norm(v[0], {3, 4}, v[1], v[2]);
        },
        {random_leaf({2, 3, 4}), random_leaf({3, 4}), random_leaf({3, 4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], {4}); }, {random_leaf({2, 3, 4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], {4}, v[1]); },
                     {random_leaf({3, 4}), random_leaf({4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], {4}, {}, v[1]); },
                     {random_leaf({3, 4}), random_leaf({4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0].t(), {3}, v[1], v[2]); },
                     {random_leaf({3, 4}), random_leaf({3}), random_leaf({3})});
}

TEST(NormalizationGradcheck, BatchNormTrainingOnTwoThreeAndFourDims) {
    const Tensor running_mean = Tensor::zeros({3}, {.dtype = DType::f64}),
                 running_var = Tensor::ones({3}, {.dtype = DType::f64});
    auto train = [&](const Inputs& v) {
        return batch_norm(v[0], running_mean, running_var, v[1], v[2], true, 0.1, 1e-5);
    };
    EXPECT_GRADCHECK(train, {random_leaf({5, 3}), random_leaf({3}), random_leaf({3})});
    EXPECT_GRADCHECK(train, {random_leaf({2, 3, 4}), random_leaf({3}), random_leaf({3})});
    EXPECT_GRADCHECK(train, {random_leaf({2, 3, 2, 3}), random_leaf({3}), random_leaf({3})});
    EXPECT_GRADCHECK([](const Inputs& v) { return batch_norm(v[0], {}, {}, {}, {}, true, 0.1, 1e-5); },
                     {random_leaf({2, 3, 4})});
}

TEST(NormalizationGradcheck, BatchNormEvalTreatsRunningStatisticsAsConstants) {
    const Tensor running_mean = Tensor::from_vector<double>({0.1, -0.3, 0.2}, {3});
    const Tensor running_var = Tensor::from_vector<double>({0.8, 1.3, 2.1}, {3});
    auto eval = [&](const Inputs& v) {
        return batch_norm(v[0], running_mean, running_var, v[1], v[2], false, 0.1, 1e-5);
    };
    EXPECT_GRADCHECK(eval, {random_leaf({5, 3}), random_leaf({3}), random_leaf({3})});
    EXPECT_GRADCHECK(eval, {random_leaf({2, 3, 2, 2}), random_leaf({3}), random_leaf({3})});
}

TEST(NormalizationDevices, OperandsOnDifferentDevicesRaise) {
    if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
    EXPECT_THROW_WITH(layer_norm(Tensor::zeros({2, 3}), {3}, Tensor::ones({3}, {.device = Device::cuda()})),
                      DeviceError, "layer_norm: operands are on different devices");
    EXPECT_THROW_WITH(batch_norm(Tensor::zeros({2, 3}), Tensor::zeros({3}, {.device = Device::cuda()}),
                                 Tensor::ones({3}, {.device = Device::cuda()}), {}, {}, false, 0.1, 1e-5),
                      DeviceError, "batch_norm: operands are on different devices");
}
