// The backward engine: accumulation, shared subgraphs, retain_graph, no-grad, detach, version
// counters and the errors misuse raises.
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_values;

TEST(Backward, AccumulatesIntoLeafGradients) {
    Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3}).set_requires_grad(true);
    sum(x * x).backward();
    expect_values(x.grad(), {2, 4, 6});
    sum(x * 3.0).backward();  // accumulates, as in PyTorch
    expect_values(x.grad(), {5, 7, 9});
}

TEST(Backward, SharedSubexpressionsSumTheirGradients) {
    Tensor x = Tensor::from_vector<double>({2}, {1}).set_requires_grad(true);
    const Tensor y = x * x;
    (y * y + y).backward(Tensor::ones({1}, {.dtype = DType::f64}));  // d/dx (x^4 + x^2) = 4x^3 + 2x
    expect_values(x.grad(), {36});
}

TEST(Backward, ExplicitGradientForNonScalarOutput) {
    Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad(true);
    (x * 2.0).backward(Tensor::from_vector<double>({1, 10}, {2}));
    expect_values(x.grad(), {2, 20});
}

TEST(Backward, ImplicitGradientNeedsAOneElementOutput) {
    Tensor x = Tensor::ones({2}).set_requires_grad(true);
    EXPECT_THROW_WITH((x * 2.0).backward(), AutogradError, "one-element outputs");
}

TEST(Backward, GradientShapeMustMatchOutput) {
    Tensor x = Tensor::ones({2}).set_requires_grad(true);
    EXPECT_THROW_WITH((x * 2.0).backward(Tensor::ones({3})), ShapeError, "does not match output");
}

TEST(Backward, GraphIsFreedUnlessRetained) {
    Tensor x = Tensor::ones({1}).set_requires_grad(true);
    const Tensor y = exp(x);
    y.backward({}, /*retain_graph=*/true);
    y.backward();
    expect_values(x.grad(), {2 * std::exp(1.0)}, 1e-6);
    EXPECT_THROW_WITH(y.backward(), AutogradError, "already been freed");
}

TEST(Backward, OnATensorWithoutGradRaises) {
    EXPECT_THROW_WITH(Tensor::ones({1}).backward(), AutogradError, "does not require grad");
}

TEST(GradMode, NoGradGuardStopsRecording) {
    Tensor x = Tensor::ones({2}).set_requires_grad(true);
    {
        NoGradGuard no_grad;
        const Tensor y = x * 2.0;
        EXPECT_FALSE(y.requires_grad());
        EXPECT_EQ(y.grad_fn(), nullptr);
    }
    EXPECT_TRUE((x * 2.0).requires_grad());
}

TEST(GradMode, DetachSharesStorageWithoutHistory) {
    Tensor x = Tensor::ones({2}).set_requires_grad(true);
    const Tensor y = x * 2.0;
    const Tensor detached = y.detach();
    EXPECT_FALSE(detached.requires_grad());
    EXPECT_TRUE(detached.same_storage(y));
    EXPECT_TRUE(y.requires_grad());
}

TEST(GradMode, OnlyFloatingLeavesCanRequireGrad) {
    EXPECT_THROW_WITH(Tensor::arange(3).set_requires_grad(true), DTypeError, "only floating tensors");
    Tensor x = Tensor::ones({1}).set_requires_grad(true);
    Tensor y = x * 2.0;
    EXPECT_THROW_WITH(y.set_requires_grad(false), AutogradError, "leaf tensors");
}

TEST(VersionCounter, InPlaceChangeOfASavedTensorIsDetected) {
    Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad(true);
    Tensor y = x * 1.0;        // non-leaf, saved by exp below through its output
    Tensor z = exp(y);         // saves z
    Tensor w = sum(z * z);     // saves z (for z*z)
    {
        NoGradGuard no_grad;
        z.fill_(0.0);          // modifies a saved tensor
    }
    EXPECT_THROW_WITH(w.backward(), AutogradError, "modified in place");
}

TEST(VersionCounter, ViewsShareTheCounter) {
    Tensor x = Tensor::zeros({2, 2});
    const Tensor row = x.select(0, 0);
    const uint64_t before = x.version();
    Tensor(row).fill_(1.0);
    EXPECT_EQ(x.version(), before + 1);
}

TEST(InPlace, WritingALeafThatRequiresGradRaisesInGradMode) {
    Tensor x = Tensor::ones({2}).set_requires_grad(true);
    EXPECT_THROW_WITH(x.fill_(0.0), AutogradError, "in-place write to a tensor that requires grad");
    {
        NoGradGuard no_grad;
        x.fill_(3.0);
    }
    expect_values(x, {3, 3});
}

TEST(Backward, IntegerOutputsCarryNoGradient) {
    Tensor x = Tensor::randn({3, 4}).set_requires_grad(true);
    auto [values, indices] = max(x, 1);
    EXPECT_TRUE(values.requires_grad());
    EXPECT_FALSE(indices.requires_grad());
    sum(values).backward();
    EXPECT_DOUBLE_EQ(sum(x.grad()).item(), 3.0);
}

TEST(Backward, ThroughAnMlpMatchesManualGradients) {
    // loss = sum(relu(x W^T + b)); d loss / d b = count of positive pre-activations per unit.
    const Tensor x = Tensor::randn({6, 3}, {.dtype = DType::f64});
    Tensor w = Tensor::randn({4, 3}, {.dtype = DType::f64}).set_requires_grad(true);
    Tensor b = Tensor::randn({4}, {.dtype = DType::f64}).set_requires_grad(true);
    const Tensor pre = linear(x, w, b);
    sum(relu(pre)).backward();
    const Tensor positive = gt(pre.detach(), Tensor::scalar(0.0, {.dtype = DType::f64})).to(DType::f64);
    expect_values(b.grad(), sum(positive, {0}).to_vector<double>(), 1e-12);
    expect_values(w.grad(), matmul(positive.t(), x).to_vector<double>(), 1e-12);
}

TEST(Backward, DtypeConversionReturnsGradientInTheSourceDtype) {
    Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad(true);
    sum(x.to(DType::f32) * 3.0).backward();
    EXPECT_EQ(x.grad().dtype(), DType::f64);
    expect_values(x.grad(), {3, 3});
}

// A leaf adopts a fresh dense gradient instead of copying it, but never one another handle can see:
// the same gradient reaching two leaves (add's backward passes it on unchanged) is copied for the
// first, and a later backward accumulates into each leaf's own buffer.
TEST(Engine, LeavesAdoptOnlyGradientsNothingElseHolds) {
    const Tensor x = Tensor::randn({4, 3}).set_requires_grad(true);
    const Tensor y = Tensor::randn({4, 3}).set_requires_grad(true);
    const Tensor w = Tensor::randn({3, 3}).set_requires_grad(true);
    const Tensor upstream = Tensor::randn({4, 3});
    (x + y).backward(upstream);
    EXPECT_FALSE(x.grad().same_storage(y.grad()));
    EXPECT_FALSE(x.grad().same_storage(upstream));
    EXPECT_FALSE(y.grad().same_storage(upstream));
    (x + y).backward(upstream);
    kasmina::testing::expect_tensors_close(x.grad(), upstream * 2.0, 1e-6);
    kasmina::testing::expect_tensors_close(y.grad(), upstream * 2.0, 1e-6);
    // matmul's backward makes fresh gradients: adopted, and still right after accumulating.
    matmul(x.detach(), w).backward(upstream);
    const Tensor expected = matmul(x.detach().t(), upstream);
    kasmina::testing::expect_tensors_close(w.grad(), expected, 1e-5);
    matmul(x.detach(), w).backward(upstream);
    kasmina::testing::expect_tensors_close(w.grad(), expected * 2.0, 1e-5);
}
