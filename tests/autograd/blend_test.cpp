// The seed blend: SPEC.md's formula against hand-computed values (1, 2 and 4 seeds, alphas summing
// above 1), float64 gradient checks including the alphas, and bad operands.
#include "autograd/blend.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_values;
using kasmina::testing::random_leaf;
using Inputs = std::vector<Tensor>;

namespace {
Tensor alphas_of(std::vector<double> values, bool requires_grad = false) {
    Tensor t = Tensor::from_vector<double>(values, {static_cast<int64_t>(values.size())});
    if (requires_grad) t.set_requires_grad(true);
    return t;
}

// out = (1 - A) d + A * sum(a_i k_i) / S with S = sum a_i, A = min(S, 1), element by element.
std::vector<double> reference(const std::vector<double>& d, const std::vector<std::vector<double>>& ks,
                              const std::vector<double>& alphas) {
    double total = 0;
    for (double a : alphas) total += a;
    const double blend = std::min(total, 1.0);
    std::vector<double> out(d.size());
    for (size_t j = 0; j < d.size(); ++j) {
        double mixed = 0;
        for (size_t i = 0; i < ks.size(); ++i) mixed += alphas[i] * ks[i][j];
        out[j] = (1 - blend) * d[j] + blend * mixed / total;
    }
    return out;
}
}  // namespace

TEST(BlendSeeds, OneSeedIsALinearInterpolation) {
    const Tensor d = Tensor::from_vector<float>({1, 2, 3}, {3}), k = Tensor::from_vector<float>({5, 6, 7}, {3});
    expect_values(blend_seeds(d, {k}, alphas_of({0.25})), {2, 3, 4});
}

TEST(BlendSeeds, TwoAndFourSeedsMatchTheFormula) {
    const std::vector<double> d{1, -2, 0.5, 4};
    const std::vector<std::vector<double>> ks{{2, 2, 2, 2}, {-1, 0, 1, 3}, {0.5, 0.5, -0.5, 1}, {10, -10, 5, 0}};
    std::vector<Tensor> kernels;
    for (const auto& k : ks) kernels.push_back(Tensor::from_vector<double>(k, {4}));
    const Tensor base = Tensor::from_vector<double>(d, {4});
    for (const std::vector<double>& alphas : {std::vector<double>{0.2, 0.3}, std::vector<double>{0.7, 0.9}}) {
        const std::vector<Tensor> two(kernels.begin(), kernels.begin() + 2);
        const std::vector<std::vector<double>> two_ref(ks.begin(), ks.begin() + 2);
        expect_values(blend_seeds(base, two, alphas_of(alphas)), reference(d, two_ref, alphas), 1e-12);
    }
    const std::vector<double> four_alphas{0.3, 0.4, 0.5, 0.6};  // sum 1.8 > 1: d drops out entirely
    expect_values(blend_seeds(base, kernels, alphas_of(four_alphas)), reference(d, ks, four_alphas), 1e-12);
}

TEST(BlendSeeds, ZeroAlphasReturnTheLayerOutputExactly) {
    const Tensor d = Tensor::randn({64}), k = Tensor::randn({64});
    EXPECT_EQ(blend_seeds(d, {k}, alphas_of({0.0})).to_vector<float>(), d.to_vector<float>());
}

TEST(BlendSeeds, GradcheckThroughOutputKernelsAndAlphasBelowOne) {
    const GradcheckResult result = gradcheck(
        [](const Inputs& v) { return blend_seeds(v[0], {v[1], v[2]}, v[3]); },
        {random_leaf({2, 3}), random_leaf({2, 3}), random_leaf({2, 3}), alphas_of({0.2, 0.35}, true)});
    EXPECT_TRUE(result.passed) << result.message;
}

TEST(BlendSeeds, GradcheckWithAlphasSummingAboveOne) {
    const GradcheckResult result = gradcheck(
        [](const Inputs& v) { return blend_seeds(v[0], {v[1], v[2], v[3]}, v[4]); },
        {random_leaf({4}), random_leaf({4}), random_leaf({4}), random_leaf({4}), alphas_of({0.6, 0.5, 0.7}, true)});
    EXPECT_TRUE(result.passed) << result.message;
}

TEST(BlendSeeds, RejectsMismatchedOperands) {
    const Tensor d = Tensor::zeros({2, 3});
    EXPECT_THROW_WITH(blend_seeds(d, {Tensor::zeros({3, 2})}, alphas_of({0.5})), ShapeError,
                      "kernel output 0 has shape [3, 2], the layer output [2, 3]");
    EXPECT_THROW_WITH(blend_seeds(d, {Tensor::zeros({2, 3})}, alphas_of({0.5, 0.5})), ShapeError, "one value per kernel output");
    EXPECT_THROW_WITH(blend_seeds(d, {Tensor::zeros({2, 3}, {.dtype = DType::f64})}, alphas_of({0.5})), DTypeError,
                      "different dtypes");
    EXPECT_THROW_WITH(blend_seeds(d, {Tensor::zeros({2, 3})}, alphas_of({-0.5})), Error, "non-negative");
}

// A false guard replaces its output by d in the value, the gradients and the alpha gradients — even a
// NaN output never leaks — and a true or missing guard changes nothing.
TEST(BlendSeeds, AFalseGuardReplacesItsOutputByTheLayerOutput) {
    const Tensor d = random_leaf({3, 4});
    const Tensor k0 = random_leaf({3, 4});
    Tensor k1 = Tensor::full({3, 4}, std::numeric_limits<double>::quiet_NaN(), {.dtype = DType::f64}).set_requires_grad(true);
    const Tensor alphas = alphas_of({0.4, 0.3}, true);
    const Tensor off = Tensor::scalar(0.0).to(DType::boolean), on = Tensor::scalar(1.0).to(DType::boolean);
    const Tensor out = blend_seeds(d, {k0, k1}, alphas, {on, off});
    // Reference: the same blend with k1 replaced by d.
    const Tensor d_ref = d.detach().clone().set_requires_grad(true), k0_ref = k0.detach().clone().set_requires_grad(true);
    const Tensor alphas_ref = alphas_of({0.4, 0.3}, true);
    const Tensor expected = blend_seeds(d_ref, {k0_ref, d_ref}, alphas_ref);
    kasmina::testing::expect_tensors_close(out, expected, 1e-12);
    const Tensor weights = Tensor::randn({3, 4}, {.dtype = DType::f64});
    sum(out * weights).backward();
    sum(expected * weights).backward();
    kasmina::testing::expect_tensors_close(d.grad(), d_ref.grad(), 1e-12);
    kasmina::testing::expect_tensors_close(k0.grad(), k0_ref.grad(), 1e-12);
    kasmina::testing::expect_tensors_close(k1.grad(), Tensor::zeros({3, 4}, {.dtype = DType::f64}), 0.0);
    kasmina::testing::expect_tensors_close(alphas.grad(), alphas_ref.grad(), 1e-12);
    // True and missing guards are the plain blend.
    kasmina::testing::expect_tensors_close(blend_seeds(d, {k0}, alphas_of({0.5}), {on}), blend_seeds(d, {k0}, alphas_of({0.5})), 0.0);
    kasmina::testing::expect_tensors_close(blend_seeds(d, {k0}, alphas_of({0.5}), {Tensor()}), blend_seeds(d, {k0}, alphas_of({0.5})), 0.0);
    EXPECT_THROW(blend_seeds(d, {k0}, alphas_of({0.5}), {on, on}), ShapeError);
    EXPECT_THROW(blend_seeds(d, {k0}, alphas_of({0.5}), {Tensor::ones({2}).to(DType::boolean)}), ShapeError);
}
