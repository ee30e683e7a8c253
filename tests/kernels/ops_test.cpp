// Forward values of every op against hand-computed or float64 references, on float32 (oneDNN path)
// and float64 (loop path), with broadcasting, non-contiguous inputs and the errors bad input raises.
#include <cmath>
#include <limits>

#include "kernels/kernels.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_tensors_close;
using kasmina::testing::expect_values;

namespace {
Tensor f32(std::vector<float> values, const Shape& shape) { return Tensor::from_vector<float>(values, shape); }
Tensor f64(std::vector<double> values, const Shape& shape) { return Tensor::from_vector<double>(values, shape); }

// Reference matmul in float64 over row-major host copies: a [B, M, K] @ b [B, K, N].
std::vector<double> reference_matmul(const Tensor& a, const Tensor& b, int64_t batch, int64_t m, int64_t k, int64_t n) {
    const auto av = a.contiguous().to_vector<double>(), bv = b.contiguous().to_vector<double>();
    std::vector<double> out(batch * m * n, 0.0);
    for (int64_t z = 0; z < batch; ++z)
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j)
                for (int64_t p = 0; p < k; ++p) out[(z * m + i) * n + j] += av[(z * m + i) * k + p] * bv[(z * k + p) * n + j];
    return out;
}
}  // namespace

TEST(Elementwise, ArithmeticWithBroadcasting) {
    const Tensor a = f32({1, 2, 3, 4, 5, 6}, {2, 3});
    const Tensor row = f32({10, 20, 30}, {3});
    const Tensor column = f32({2, 4}, {2, 1});
    expect_values(a + row, {11, 22, 33, 14, 25, 36});
    expect_values(a - column, {-1, 0, 1, 0, 1, 2});
    expect_values(a * column, {2, 4, 6, 16, 20, 24});
    expect_values(a / column, {0.5, 1, 1.5, 1, 1.25, 1.5});
    expect_values(pow(a, 2.0), {1, 4, 9, 16, 25, 36});
    expect_values(2.0 - a, {1, 0, -1, -2, -3, -4});
    expect_values(-a, {-1, -2, -3, -4, -5, -6});
    expect_values(maximum(a, f32({3}, {1})), {3, 3, 3, 4, 5, 6});
    expect_values(minimum(a, f32({3}, {1})), {1, 2, 3, 3, 3, 3});
}

TEST(Elementwise, NonContiguousOperands) {
    const Tensor a = Tensor::arange(6, {.dtype = DType::f32}).reshape({2, 3});
    expect_values(a.t() + a.t(), {0, 6, 2, 8, 4, 10});
    expect_values(a.t() * f32({1, -1}, {2}), {0, -3, 1, -4, 2, -5});
}

TEST(Elementwise, IntegerArithmetic) {
    const Tensor a = Tensor::from_vector<int64_t>({1, -2, 3}, {3});
    expect_values(a * a + a, {2, 2, 12});
    expect_values(abs(a), {1, 2, 3});
    EXPECT_THROW_WITH(div(a, a), DTypeError, "expected floating operands");
}

TEST(Elementwise, UnaryFunctionsMatchReferenceValues) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = f64({-2.0, -0.5, 0.0, 0.5, 2.0}, {5}).to(dtype);
        const double tolerance = dtype == DType::f32 ? 2e-6 : 1e-12;
        std::vector<double> expected_exp, expected_tanh, expected_sigmoid, expected_gelu, expected_gelu_tanh;
        for (double v : {-2.0, -0.5, 0.0, 0.5, 2.0}) {
            expected_exp.push_back(std::exp(v));
            expected_tanh.push_back(std::tanh(v));
            expected_sigmoid.push_back(1.0 / (1.0 + std::exp(-v)));
            expected_gelu.push_back(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
            expected_gelu_tanh.push_back(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
        }
        expect_values(exp(x), expected_exp, tolerance);
        expect_values(tanh(x), expected_tanh, tolerance);
        expect_values(sigmoid(x), expected_sigmoid, tolerance);
        expect_values(gelu(x), expected_gelu, tolerance);
        expect_values(gelu(x, "tanh"), expected_gelu_tanh, tolerance);
        expect_values(relu(x), {0, 0, 0, 0.5, 2}, tolerance);
        expect_values(abs(x), {2, 0.5, 0, 0.5, 2}, tolerance);
        expect_values(sign(x), {-1, -1, 0, 1, 1}, tolerance);
        expect_values(neg(x), {2, 0.5, 0, -0.5, -2}, tolerance);
        const Tensor positive = f64({0.25, 1.0, 4.0}, {3}).to(dtype);
        expect_values(log(positive), {std::log(0.25), 0.0, std::log(4.0)}, tolerance);
        expect_values(sqrt(positive), {0.5, 1, 2}, tolerance);
        expect_values(rsqrt(positive), {2, 1, 0.5}, tolerance);
    }
    EXPECT_THROW_WITH(gelu(f32({1}, {1}), "fast"), Error, "approximate must be 'none' or 'tanh'");
    EXPECT_THROW_WITH(exp(Tensor::arange(3)), DTypeError, "exp: expected a floating tensor");
}

TEST(Elementwise, SigmoidIsStableForLargeMagnitudes) {
    expect_values(sigmoid(f64({-1000, 1000}, {2})), {0, 1});
}

TEST(Elementwise, ClampWhereMaskedFillComparisons) {
    const Tensor x = f32({-3, -1, 0, 2, 5}, {5});
    expect_values(clamp(x, -1.0, 2.0), {-1, -1, 0, 2, 2});
    expect_values(clamp(x, std::nullopt, 0.0), {-3, -1, 0, 0, 0});
    const Tensor mask = gt(x, Tensor::scalar(0.0));
    EXPECT_EQ(mask.dtype(), DType::boolean);
    expect_values(mask, {0, 0, 0, 1, 1});
    expect_values(where(mask, x, f32({100}, {1})), {100, 100, 100, 2, 5});
    expect_values(masked_fill(x, mask, -7.0), {-3, -1, 0, -7, -7});
    expect_values(eq(x, f32({0}, {1})), {0, 0, 1, 0, 0});
    expect_values(le(x, f32({-1}, {1})), {1, 1, 0, 0, 0});
    expect_values(ne(x, x), {0, 0, 0, 0, 0});
    expect_values(ge(x, x), {1, 1, 1, 1, 1});
    expect_values(lt(x, x), {0, 0, 0, 0, 0});
    EXPECT_THROW_WITH(where(x, x, x), DTypeError, "condition must be bool");
    EXPECT_THROW_WITH(masked_fill(x, Tensor::zeros({2, 5}, {.dtype = DType::boolean}), 0.0), ShapeError,
                      "must broadcast to input [5]");
}

TEST(Elementwise, MismatchedOperandsRaiseNamedErrors) {
    EXPECT_THROW_WITH(add(Tensor::zeros({2, 3}), Tensor::zeros({4})), ShapeError, "add: shapes [2, 3] and [4] do not broadcast");
    EXPECT_THROW_WITH(mul(Tensor::zeros({2}), Tensor::zeros({2}, {.dtype = DType::f64})), DTypeError,
                      "mul: operands have different dtypes");
}

TEST(Reductions, SumMeanOverAnyDims) {
    const Tensor x = Tensor::arange(24, {.dtype = DType::f32}).reshape({2, 3, 4});
    expect_values(sum(x), {276});
    expect_values(sum(x, {0}), {12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34});
    expect_values(sum(x, {1, 2}), {66, 210});
    expect_values(sum(x, {-1}, true).reshape({6}), {6, 22, 38, 54, 70, 86});
    EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1, 4}));
    expect_values(mean(x, {0, 2}), {7.5, 11.5, 15.5});
    expect_values(sum(x.permute({2, 0, 1}), {0}).reshape({6}), {6, 22, 38, 54, 70, 86});
    EXPECT_THROW_WITH(sum(x, {1, 1}), ShapeError, "listed twice");
    EXPECT_THROW_WITH(sum(x, {3}), ShapeError, "dimension 3 out of range");
}

TEST(Reductions, VarianceBiasedAndUnbiased) {
    const Tensor x = f64({1, 2, 3, 4, 10, 20, 30, 40}, {2, 4});
    expect_values(var(x, {1}), {5.0 / 3.0, 500.0 / 3.0});
    expect_values(var(x, {1}, false), {1.25, 125});
    expect_values(var(x, {0}, true, true), {40.5, 162, 364.5, 648});
}

TEST(Reductions, MaxArgmaxAmaxLogsumexp) {
    const Tensor x = f32({1, 7, 3, 9, 2, 9}, {2, 3});
    auto [values, indices] = max(x, 1);
    expect_values(values, {7, 9});
    expect_values(indices, {1, 0});
    EXPECT_EQ(indices.dtype(), DType::i64);
    expect_values(argmax(x, 0), {1, 0, 1});
    expect_values(amax(x, {0}), {9, 7, 9});
    expect_values(amin(x, {1}), {1, 2});
    expect_values(max(x), {9});
    expect_values(logsumexp(x, {1}), {std::log(std::exp(1.0) + std::exp(7.0) + std::exp(3.0)),
                                      std::log(2 * std::exp(9.0) + std::exp(2.0))},
                  1e-6);
    expect_values(logsumexp(f32({1000, 1000}, {2}), {0}), {1000 + std::log(2.0)});
}

TEST(Reductions, MaxPropagatesNaN) {
    const Tensor x = f32({1, NAN, 3}, {3});
    EXPECT_TRUE(std::isnan(max(x).item()));
    EXPECT_EQ(argmax(x, 0).item<int64_t>(), 1);
}

TEST(Matmul, TwoDimensionalFloat32AndFloat64MatchReference) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor a = Tensor::randn({5, 7}, {.dtype = dtype}), b = Tensor::randn({7, 3}, {.dtype = dtype});
        expect_values(matmul(a, b), reference_matmul(a, b, 1, 5, 7, 3), 1e-5);
    }
}

TEST(Matmul, TransposedOperandsUseStridesWithoutCopy) {
    const Tensor a = Tensor::randn({7, 5}), b = Tensor::randn({3, 7});
    expect_values(matmul(a.t(), b.t()), reference_matmul(a.t(), b.t(), 1, 5, 7, 3), 1e-5);
}

TEST(Matmul, BatchedWithBroadcastBatchDims) {
    const Tensor a = Tensor::randn({2, 1, 4, 3}), b = Tensor::randn({5, 3, 2});
    const Tensor out = matmul(a, b);
    EXPECT_EQ(out.shape(), (Shape{2, 5, 4, 2}));
    const Tensor a_full = a.expand({2, 5, 4, 3}).contiguous().reshape({10, 4, 3});
    const Tensor b_full = b.unsqueeze(0).expand({2, 5, 3, 2}).contiguous().reshape({10, 3, 2});
    expect_values(out, reference_matmul(a_full, b_full, 10, 4, 3, 2), 1e-5);
    const Tensor folded = matmul(a.expand({2, 5, 4, 3}), Tensor::randn({3, 6}));
    EXPECT_EQ(folded.shape(), (Shape{2, 5, 4, 6}));
}

TEST(Matmul, VectorOperandsFollowNumPy) {
    const Tensor v = f32({1, 2, 3}, {3}), m = Tensor::arange(6, {.dtype = DType::f32}).reshape({3, 2});
    expect_values(matmul(v, v), {14});
    EXPECT_EQ(matmul(v, v).dim(), 0);
    expect_values(matmul(v, m), {16, 22});
    expect_values(matmul(m.t(), v), {16, 22});
}

TEST(Matmul, MismatchedInnerDimensionRaises) {
    EXPECT_THROW_WITH(matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})), ShapeError,
                      "matmul: inner dimensions differ: [2, 3] @ [4, 5]");
}

TEST(Linear, MatchesMatmulPlusBiasForAnyLeadingShape) {
    const Tensor x = Tensor::randn({2, 3, 4}), w = Tensor::randn({5, 4}), b = Tensor::randn({5});
    const Tensor out = linear(x, w, b);
    EXPECT_EQ(out.shape(), (Shape{2, 3, 5}));
    expect_tensors_close(out, matmul(x, w.t()) + b, 1e-5);
    expect_tensors_close(linear(x.to(DType::f64), w.to(DType::f64)), matmul(x, w.t()), 1e-5);
    EXPECT_THROW_WITH(linear(x, Tensor::randn({5, 3}), b), ShapeError, "linear: input [2, 3, 4] does not match weight [5, 3]");
    EXPECT_THROW_WITH(linear(x, w, Tensor::randn({4})), ShapeError, "bias [4] does not match weight [5, 4]");
}

TEST(Softmax, RowsSumToOneAndMatchReference) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = f64({1, 2, 3, -1, 0, 1000}, {2, 3}).to(dtype);
        const double tolerance = dtype == DType::f32 ? 1e-5 : 1e-12;
        const Tensor y = softmax(x, 1);
        const double z = std::exp(-2.0) + std::exp(-1.0) + 1.0;
        expect_values(y, {std::exp(-2.0) / z, std::exp(-1.0) / z, 1.0 / z, 0, 0, 1}, tolerance);
        expect_values(log_softmax(x, -1).select(0, 0), {-2 - std::log(z), -1 - std::log(z), -std::log(z)}, tolerance);
        expect_values(sum(softmax(x, 0), {0}), {1, 1, 1}, tolerance);
    }
}

TEST(Softmax, NonContiguousInputAlongMiddleDim) {
    const Tensor x = Tensor::randn({3, 4, 5}).permute({2, 0, 1});  // [5, 3, 4]
    const Tensor y = softmax(x, 1);
    expect_values(sum(y, {1}), std::vector<double>(20, 1.0), 1e-6);
    expect_tensors_close(y, exp(log_softmax(x.to(DType::f64), 1)), 1e-6);
}

TEST(Joining, CatStackSplit) {
    const Tensor a = Tensor::arange(4, {.dtype = DType::f32}).reshape({2, 2}), b = f32({9, 9}, {2, 1});
    expect_values(cat({a, b}, 1), {0, 1, 9, 2, 3, 9});
    expect_values(cat({a, a}, 0).select(0, 2), {0, 1});
    EXPECT_EQ(stack({a, a, a}, 1).shape(), (Shape{2, 3, 2}));
    const auto pieces = split(Tensor::arange(5), 2);
    ASSERT_EQ(pieces.size(), 3u);
    expect_values(pieces[2], {4});
    const auto sized = split_with_sizes(Tensor::arange(5), {1, 4});
    expect_values(sized[1], {1, 2, 3, 4});
    EXPECT_THROW_WITH(cat({a, Tensor::zeros({3, 3})}, 1), ShapeError, "cat: tensor [3, 3] does not match [2, 2]");
    EXPECT_THROW_WITH(split_with_sizes(Tensor::arange(5), {1, 1}), ShapeError, "sum to 2");
}

TEST(Indexing, IndexSelectGatherEmbeddingOneHot) {
    const Tensor x = Tensor::arange(12, {.dtype = DType::f32}).reshape({3, 4});
    const Tensor index = Tensor::from_vector<int64_t>({2, 0, 2}, {3});
    expect_values(index_select(x, 0, index), {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
    expect_values(index_select(x, 1, Tensor::from_vector<int64_t>({3}, {1})), {3, 7, 11});
    const Tensor picks = Tensor::from_vector<int64_t>({1, 0, 3, 3, 2, 0}, {3, 2});
    expect_values(gather(x, 1, picks), {1, 0, 7, 7, 10, 8});
    const Tensor looked_up = embedding(x, Tensor::from_vector<int64_t>({0, 2, 1, 0}, {2, 2}));
    EXPECT_EQ(looked_up.shape(), (Shape{2, 2, 4}));
    expect_values(looked_up.select(0, 1).select(0, 0), {4, 5, 6, 7});
    expect_values(one_hot(Tensor::from_vector<int64_t>({2, 0}, {2}), 3), {0, 0, 1, 1, 0, 0});
    EXPECT_THROW_WITH(index_select(x, 0, Tensor::from_vector<int64_t>({3}, {1})), ShapeError, "index 3 out of range");
    EXPECT_THROW_WITH(index_select(x, 0, f32({0}, {1})), DTypeError, "index must be int64 or int32");
    EXPECT_THROW_WITH(gather(x, 1, Tensor::from_vector<int64_t>({0}, {1})), ShapeError, "must have the input's rank 2");
    EXPECT_THROW_WITH(one_hot(Tensor::from_vector<int64_t>({5}, {1}), 3), ShapeError, "out of range");
}

TEST(Losses, CrossEntropyMatchesHandComputedValues) {
    const Tensor logits = f64({1, 2, 3, 1, 1, 1}, {2, 3});
    const Tensor target = Tensor::from_vector<int64_t>({2, 0}, {2});
    const double z0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    const double loss0 = z0 - 3.0, loss1 = std::log(3.0);
    expect_values(cross_entropy(logits, target, Reduction::none), {loss0, loss1});
    expect_values(cross_entropy(logits, target), {(loss0 + loss1) / 2});
    expect_values(cross_entropy(logits, target, Reduction::sum), {loss0 + loss1});
    // Label smoothing s: (1 - s) * nll + s * mean_c(-log p_c)
    const double smooth0 = (3 * z0 - 6.0) / 3.0, smooth1 = std::log(3.0);
    expect_values(cross_entropy(logits, target, Reduction::mean, 0.1),
                  {(0.9 * loss0 + 0.1 * smooth0 + 0.9 * loss1 + 0.1 * smooth1) / 2});
    EXPECT_THROW_WITH(cross_entropy(logits, Tensor::from_vector<int64_t>({0}, {1})), ShapeError,
                      "target [1] does not match logits [2, 3]");
    EXPECT_THROW_WITH(cross_entropy(logits, f64({0, 1}, {2})), DTypeError, "int64 class indices");
    EXPECT_THROW_WITH(cross_entropy(logits, Tensor::from_vector<int64_t>({3, 0}, {2})), ShapeError, "out of range");
}

TEST(Losses, CrossEntropyWithSpatialDims) {
    const Tensor logits = Tensor::randn({2, 3, 4}, {.dtype = DType::f64});
    const Tensor target = Tensor::from_vector<int64_t>({0, 1, 2, 0, 2, 2, 1, 0}, {2, 4});
    const Tensor flat = cross_entropy(logits.permute({0, 2, 1}).reshape({8, 3}), target.reshape({8}));
    expect_values(cross_entropy(logits, target), {flat.item()}, 1e-12);
}

TEST(Losses, MseLoss) {
    const Tensor a = f32({1, 2, 3}, {3}), b = f32({1, 0, 6}, {3});
    expect_values(mse_loss(a, b), {13.0 / 3.0});
    expect_values(mse_loss(a, b, Reduction::sum), {13});
    EXPECT_THROW_WITH(mse_loss(a, Tensor::zeros({2})), ShapeError, "must have the same shape");
}

TEST(Dropout, ZeroesAboutPAndScalesTheRest) {
    Generator generator(5);
    const Tensor x = Tensor::ones({100000});
    const Tensor y = dropout(x, 0.3, true, &generator);
    const std::vector<float> values = y.to_vector<float>();
    int64_t zeros = 0;
    for (float v : values) {
        if (v == 0.f) ++zeros;
        else EXPECT_NEAR(v, 1.0 / 0.7, 1e-6);
    }
    EXPECT_NEAR(static_cast<double>(zeros) / values.size(), 0.3, 0.01);
    EXPECT_EQ(dropout(x, 0.3, false).impl(), x.impl());
    Generator again(5);
    EXPECT_EQ(dropout(x, 0.3, true, &again).to_vector<float>(), values);
    EXPECT_THROW_WITH(dropout(x, 1.5, true), Error, "probability must be in [0, 1]");
}

TEST(Elementwise, PowOfTwoTensorsMatchesReference) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const double tolerance = dtype == DType::f32 ? 1e-6 : 1e-12;
        expect_values(pow(f64({2, 4, 9, 0.5}, {4}).to(dtype), f64({3, 0.5, -1, 2}, {4}).to(dtype)), {8, 2, 1.0 / 9.0, 0.25},
                      tolerance);
        const Tensor broadcast = pow(f64({2, 3}, {2, 1}).to(dtype), f64({0, 1, 2.5}, {3}).to(dtype));
        EXPECT_EQ(broadcast.shape(), (Shape{2, 3}));
        expect_values(broadcast, {1, 2, std::pow(2.0, 2.5), 1, 3, std::pow(3.0, 2.5)}, tolerance);
    }
}

TEST(Elementwise, WhereWithShapesThatDoNotBroadcastRaisesNamingAllThree) {
    const Tensor condition = Tensor::from_vector<bool>({true, false, true}, {3});
    EXPECT_THROW_WITH(where(condition, Tensor::zeros({2, 3}), Tensor::zeros({4})), ShapeError,
                      "where: condition [3], input [2, 3] and other [4] do not broadcast");
}

TEST(Elementwise, IntegerInputsToFloatingOnlyOpsRaiseNamingTheOp) {
    const Tensor integers = Tensor::from_vector<int64_t>({1, 2, 3}, {3});
    EXPECT_THROW_WITH(pow(integers, integers), DTypeError, "pow: expected floating operands, got int64[3]");
    EXPECT_THROW_WITH(pow(integers, 2.0), DTypeError, "pow: expected floating operands");
    EXPECT_THROW_WITH(mse_loss(integers, integers), DTypeError,
                      "mse_loss: expected floating input and target of the same dtype, got input int64[3]");
    EXPECT_THROW_WITH(mse_loss(f32({1, 2, 3}, {3}), integers), DTypeError, "and target int64[3]");
    EXPECT_THROW_WITH(dropout(integers, 0.5, true), DTypeError, "dropout: expected a floating tensor, got int64[3]");
}

TEST(Reductions, KeepdimKeepsReducedDimsAsOnes) {
    const Tensor x = Tensor::arange(24, {.dtype = DType::f64}).reshape({2, 3, 4});  // x[i, j, k] = 12 i + 4 j + k
    const Tensor means = mean(x, {1}, true);
    EXPECT_EQ(means.shape(), (Shape{2, 1, 4}));
    expect_values(means, {4, 5, 6, 7, 16, 17, 18, 19});
    auto [values, indices] = max(x, 2, true);
    EXPECT_EQ(values.shape(), (Shape{2, 3, 1}));
    EXPECT_EQ(indices.shape(), (Shape{2, 3, 1}));
    expect_values(values, {3, 7, 11, 15, 19, 23});
    expect_values(indices, {3, 3, 3, 3, 3, 3});
    const Tensor small = f64({1, 7, 3, 9, 2, 9}, {2, 3});
    const Tensor lse = logsumexp(small, {1}, true);
    EXPECT_EQ(lse.shape(), (Shape{2, 1}));
    expect_values(lse, {std::log(std::exp(1.0) + std::exp(7.0) + std::exp(3.0)), std::log(2 * std::exp(9.0) + std::exp(2.0))},
                  1e-12);
}

TEST(Reductions, LogsumexpOverSeveralDimsMatchesReference) {
    const Tensor x = Tensor::randn({2, 3, 4}, {.dtype = DType::f64});
    const std::vector<double> v = x.to_vector<double>();
    std::vector<double> expected(3, 0.0);  // over dims 0 and 2, one value per j
    for (int64_t i = 0; i < 2; ++i)
        for (int64_t j = 0; j < 3; ++j)
            for (int64_t k = 0; k < 4; ++k) expected[j] += std::exp(v[(i * 3 + j) * 4 + k]);
    for (double& e : expected) e = std::log(e);
    expect_values(logsumexp(x, {0, 2}), expected, 1e-12);
    const Tensor kept = logsumexp(x, {2, 0}, true);
    EXPECT_EQ(kept.shape(), (Shape{1, 3, 1}));
    expect_values(kept, expected, 1e-12);
    expect_values(logsumexp(x.to(DType::f32), {0, 2}), expected, 1e-6);
    double total = 0.0;
    for (double e : v) total += std::exp(e);
    expect_values(logsumexp(x, {0, 1, 2}), {std::log(total)}, 1e-12);
}

TEST(Reductions, OutOfRangeDimsRaiseNamingTheOp) {
    const Tensor x = Tensor::zeros({2, 3});
    EXPECT_THROW_WITH(mean(x, {2}), ShapeError, "mean: dimension 2 out of range for a tensor of rank 2 (expected in [-2, 1])");
    EXPECT_THROW_WITH(var(x, {-3}), ShapeError, "var: dimension -3 out of range for a tensor of rank 2");
    EXPECT_THROW_WITH(max(x, 2), ShapeError, "max: dimension 2 out of range for a tensor of shape [2, 3]");
    EXPECT_THROW_WITH(logsumexp(x, {0, 5}), ShapeError, "logsumexp: dimension 5 out of range for a tensor of rank 2");
    EXPECT_THROW_WITH(logsumexp(x, {1, -1}), ShapeError, "logsumexp: dimension listed twice in [1, -1]");
}

TEST(Softmax, OutOfRangeDimRaisesNamingTheOp) {
    const Tensor x = Tensor::zeros({2, 3});
    EXPECT_THROW_WITH(softmax(x, 2), ShapeError, "softmax: dimension 2 out of range for a tensor of shape [2, 3] (expected in [-2, 1])");
    EXPECT_THROW_WITH(log_softmax(x, -3), ShapeError, "log_softmax: dimension -3 out of range for a tensor of shape [2, 3]");
}

TEST(Joining, StackPlacesInputsAlongTheNewDim) {
    const Tensor a = Tensor::arange(4, {.dtype = DType::f32}).reshape({2, 2}), b = f32({10, 11, 12, 13}, {2, 2});
    expect_values(stack({a, b}, 0), {0, 1, 2, 3, 10, 11, 12, 13});
    expect_values(stack({a, b}, 1), {0, 1, 10, 11, 2, 3, 12, 13});
    const Tensor last = stack({a, b}, -1);
    EXPECT_EQ(last.shape(), (Shape{2, 2, 2}));
    expect_values(last, {0, 10, 1, 11, 2, 12, 3, 13});
    expect_values(stack({a.t(), b}, 0), {0, 2, 1, 3, 10, 11, 12, 13});
}

TEST(Joining, StackOfMismatchedShapesRaises) {
    EXPECT_THROW_WITH(stack({Tensor::zeros({2, 2}), Tensor::zeros({2, 3})}, 0), ShapeError,
                      "stack: all tensors must have the same shape, got [2, 2] and [2, 3]");
    EXPECT_THROW_WITH(stack({Tensor::zeros({2, 2})}, 3), ShapeError, "stack: dimension 3 out of range for a tensor of rank 3");
}

TEST(Indexing, GatherIndexOutOfRangeRaisesWithShapes) {
    const Tensor x = Tensor::zeros({3, 4});
    EXPECT_THROW_WITH(gather(x, 1, Tensor::from_vector<int64_t>({0, 4, 1, 1}, {2, 2})), ShapeError,
                      "gather: index 4 out of range for gathered dimension of size 4 (expected in [0, 3]; input [3, 4], index [2, 2])");
    EXPECT_THROW_WITH(gather(x, 0, Tensor::from_vector<int64_t>({-1}, {1, 1})), ShapeError, "gather: index -1 out of range");
}

TEST(Views, ReshapeAndViewToAWrongElementCountRaise) {
    const Tensor x = Tensor::zeros({2, 3});
    EXPECT_THROW_WITH(x.reshape({4, 2}), ShapeError,
                      "reshape: shape [4, 2] is invalid for input [2, 3] of size 6 (expected 6 elements, got 8)");
    EXPECT_THROW_WITH(x.view({5}), ShapeError, "view: shape [5] is invalid for input [2, 3] of size 6");
    EXPECT_THROW_WITH(x.reshape({4, -1}), ShapeError, "reshape: shape [4, -1] is invalid for input [2, 3] of size 6");
}

TEST(Views, PermuteTransposeSqueezeWithBadDimsRaise) {
    const Tensor x = Tensor::zeros({2, 3, 4});
    EXPECT_THROW_WITH(x.permute({0, 1}), ShapeError, "permute: got 2 dims [0, 1] for input [2, 3, 4] (expected 3 dims");
    EXPECT_THROW_WITH(x.permute({1, 1, 0}), ShapeError, "permute: dimension 1 repeated in [1, 1, 0] for input [2, 3, 4]");
    EXPECT_THROW_WITH(x.permute({0, 1, 3}), ShapeError, "permute: dimension 3 out of range for a tensor of shape [2, 3, 4]");
    EXPECT_THROW_WITH(x.transpose(0, 3), ShapeError, "transpose: dimension 3 out of range for a tensor of shape [2, 3, 4] (expected in [-3, 2])");
    EXPECT_THROW_WITH(x.squeeze(-4), ShapeError, "squeeze: dimension -4 out of range for a tensor of shape [2, 3, 4]");
}

TEST(Devices, ToTheTensorsOwnDeviceReturnsTheSameTensor) {
    const Tensor x = f32({1, 2, 3}, {3});
    const Tensor moved = x.to(Device::cpu());
    EXPECT_EQ(moved.impl(), x.impl());  // no copy: the same tensor, as PyTorch's .to() on the same device
    expect_values(moved, {1, 2, 3});
    Tensor leaf = Tensor::ones({2}).set_requires_grad(true);
    const Tensor same = leaf.to(Device::cpu());
    EXPECT_TRUE(same.requires_grad());
    EXPECT_TRUE(same.is_leaf());
}

TEST(Devices, OperandsOnDifferentDevicesRaise) {
    if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
    const Tensor x = Tensor::zeros({2}, {.device = Device::cuda()});
    EXPECT_THROW_WITH(add(x, Tensor::zeros({2})), DeviceError, "different devices");
}

TEST(FiniteFlag, FindsANonFiniteElementAnywhereInAnyLayout) {
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = Tensor::randn({300, 400}).to(dtype);  // large enough for the threaded loop
        EXPECT_TRUE(kernels::finite_flag(x).item<bool>());
        for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()}) {
            for (int64_t at : {int64_t{0}, int64_t{123 * 400 + 7}, int64_t{300 * 400 - 1}}) {
                Tensor y = x.clone();
                y.view({-1}).narrow(0, at, 1).fill_(bad);
                EXPECT_FALSE(kernels::finite_flag(y).item<bool>()) << dtype_name(dtype) << " " << bad << " at " << at;
                EXPECT_FALSE(kernels::finite_flag(y.transpose(0, 1)).item<bool>()) << "a non-contiguous view";
            }
        }
        EXPECT_TRUE(kernels::finite_flag(Tensor::full({3}, 3e38).to(dtype)).item<bool>()) << "large but finite";
    }
    EXPECT_TRUE(kernels::finite_flag(Tensor::zeros({0})).item<bool>());
    EXPECT_TRUE(kernels::finite_flag(Tensor::zeros({4}, {.dtype = DType::i64})).item<bool>());
    EXPECT_THROW_WITH(kernels::finite_flag(Tensor()), Error, "finite_flag");
}

TEST(FiniteFlag, IsABoolScalarOnTheTensorsDevice) {
    const Tensor x = Tensor::randn({50, 40});
    const Tensor flag = kernels::finite_flag(x);
    EXPECT_EQ(flag.dtype(), DType::boolean);
    EXPECT_EQ(flag.dim(), 0);
    EXPECT_TRUE(flag.item<bool>());
    Tensor y = x.clone();
    y.view({-1}).narrow(0, 1999, 1).fill_(std::numeric_limits<double>::infinity());
    EXPECT_FALSE(kernels::finite_flag(y).item<bool>());
    EXPECT_TRUE(kernels::finite_flag(Tensor::zeros({3}, {.dtype = DType::i64})).item<bool>());
}
