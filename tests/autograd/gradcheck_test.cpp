// Every differentiable op's backward against float64 central differences, including broadcasting
// and non-contiguous (transposed) inputs.
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::random_leaf;
using kasmina::testing::random_transposed_leaf;
using Inputs = std::vector<Tensor>;

TEST(Gradcheck, BinaryArithmeticWithBroadcasting) {
    const Tensor a = random_leaf({2, 3}), row = random_leaf({3}), column = random_leaf({2, 1}, 0.5, 2.0);
    EXPECT_GRADCHECK([](const Inputs& x) { return x[0] + x[1]; }, {a, row});
    EXPECT_GRADCHECK([](const Inputs& x) { return x[0] - x[1]; }, {a, column});
    EXPECT_GRADCHECK([](const Inputs& x) { return x[0] * x[1]; }, {a, row});
    EXPECT_GRADCHECK([](const Inputs& x) { return x[0] / x[1]; }, {a, column});
    EXPECT_GRADCHECK([](const Inputs& x) { return 3.0 * x[0] - x[0] / 2.0 + 1.0; }, {a});
}

TEST(Gradcheck, PowMaximumMinimum) {
    const Tensor base = random_leaf({2, 3}, 0.3, 2.0), exponent = random_leaf({3}, 0.5);
    EXPECT_GRADCHECK([](const Inputs& x) { return pow(x[0], x[1]); }, {base, exponent});
    EXPECT_GRADCHECK([](const Inputs& x) { return pow(x[0], 3.0); }, {random_leaf({4})});
    EXPECT_GRADCHECK([](const Inputs& x) { return maximum(x[0], x[1]); }, {random_leaf({2, 3}), random_leaf({3})});
    EXPECT_GRADCHECK([](const Inputs& x) { return minimum(x[0], x[1]); }, {random_leaf({2, 3}), random_leaf({2, 1})});
}

TEST(Gradcheck, UnaryFunctions) {
    const Tensor x = random_leaf({3, 4});
    const Tensor positive = random_leaf({3, 4}, 0.2, 2.0);
    EXPECT_GRADCHECK([](const Inputs& v) { return neg(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return exp(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return log(v[0]); }, {positive});
    EXPECT_GRADCHECK([](const Inputs& v) { return sqrt(v[0]); }, {positive});
    EXPECT_GRADCHECK([](const Inputs& v) { return rsqrt(v[0]); }, {positive});
    EXPECT_GRADCHECK([](const Inputs& v) { return abs(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return relu(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return gelu(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return gelu(v[0], "tanh"); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return sigmoid(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return tanh(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return clamp(v[0], -0.5, 0.5); }, {x});
}

TEST(Gradcheck, UnaryFunctionsOnTransposedInputs) {
    const Tensor x = random_transposed_leaf({3, 4});
    ASSERT_FALSE(x.is_contiguous());
    EXPECT_GRADCHECK([](const Inputs& v) { return gelu(v[0]) * tanh(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return exp(v[0]) + v[0]; }, {x});
}

TEST(Gradcheck, WhereAndMaskedFill) {
    const Tensor condition = Tensor::from_vector<bool>({true, false, true}, {3});
    EXPECT_GRADCHECK([&](const Inputs& v) { return where(condition, v[0], v[1]); }, {random_leaf({2, 3}), random_leaf({3})});
    EXPECT_GRADCHECK([&](const Inputs& v) { return masked_fill(v[0], condition, 4.0); }, {random_leaf({2, 3})});
}

TEST(Gradcheck, Reductions) {
    const Tensor x = random_leaf({2, 3, 4});
    EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0]); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0], {0, 2}); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return mean(v[0], {1}, true); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return var(v[0], {2}); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return var(v[0], {0, 1}, false, true); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return amax(v[0], {1}); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return amin(v[0], {0, 2}); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return max(v[0], 2).first; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return max(v[0], 0, true).first; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return logsumexp(v[0], {1}); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0], {1}); }, {random_transposed_leaf({3, 4})});
}

TEST(Gradcheck, MatmulShapes) {
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_leaf({3, 4}), random_leaf({4, 2})});
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_leaf({2, 3, 4}), random_leaf({4, 2})});
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_leaf({2, 1, 3, 4}), random_leaf({3, 4, 2})});
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_leaf({4}), random_leaf({4, 3})});
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_leaf({4}), random_leaf({4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); }, {random_transposed_leaf({3, 4}), random_transposed_leaf({4, 2})});
}

TEST(Gradcheck, Linear) {
    EXPECT_GRADCHECK([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                     {random_leaf({2, 3, 4}), random_leaf({5, 4}), random_leaf({5})});
    EXPECT_GRADCHECK([](const Inputs& v) { return linear(v[0], v[1]); }, {random_transposed_leaf({3, 4}), random_leaf({2, 4})});
}

TEST(Gradcheck, SoftmaxAndLogSoftmax) {
    const Tensor x = random_leaf({2, 3, 4});
    EXPECT_GRADCHECK([](const Inputs& v) { return softmax(v[0], 1); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return softmax(v[0], -1); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return log_softmax(v[0], 0); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return log_softmax(v[0], 1); }, {random_transposed_leaf({3, 4})});
}

TEST(Gradcheck, ViewsAndCopies) {
    const Tensor x = random_leaf({2, 3, 4});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].reshape({4, 6}) * 2.0; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].transpose(0, 2).contiguous(); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].permute({1, 2, 0}) * 1.5; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].slice(2, 1, 4, 2) * 3.0; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return exp(v[0].narrow(1, 1, 2)); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].select(1, 2) * 2.0; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].unsqueeze(1).squeeze(1).flatten(); }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].unsqueeze(0).expand({3, 2, 3, 4}) * 1.0; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].clone() * 2.0; }, {x});
    EXPECT_GRADCHECK([](const Inputs& v) { return v[0].slice(1, 1, 3).t().select(0, 1) * 2.0; }, {random_transposed_leaf({3, 4})});
}

TEST(Gradcheck, JoiningAndSplitting) {
    EXPECT_GRADCHECK([](const Inputs& v) { return cat({v[0], v[1]}, 1); }, {random_leaf({2, 3}), random_leaf({2, 2})});
    EXPECT_GRADCHECK([](const Inputs& v) { return stack({v[0], v[1]}, 0); }, {random_leaf({2, 3}), random_leaf({2, 3})});
    EXPECT_GRADCHECK([](const Inputs& v) { return split(v[0], 2, 1)[1] * 2.0; }, {random_leaf({2, 5})});
}

TEST(Gradcheck, IndexingOps) {
    const Tensor index = Tensor::from_vector<int64_t>({2, 0, 2}, {3});
    EXPECT_GRADCHECK([&](const Inputs& v) { return index_select(v[0], 0, index); }, {random_leaf({3, 4})});
    EXPECT_GRADCHECK([&](const Inputs& v) { return index_select(v[0], 1, index); }, {random_leaf({2, 3})});
    const Tensor picks = Tensor::from_vector<int64_t>({1, 1, 0, 2}, {2, 2});
    EXPECT_GRADCHECK([&](const Inputs& v) { return gather(v[0], 1, picks); }, {random_leaf({2, 3})});
    const Tensor tokens = Tensor::from_vector<int64_t>({0, 3, 3, 1}, {2, 2});
    EXPECT_GRADCHECK([&](const Inputs& v) { return embedding(v[0], tokens); }, {random_leaf({4, 3})});
}

TEST(Gradcheck, Losses) {
    const Tensor target = Tensor::from_vector<int64_t>({1, 0, 3}, {3});
    EXPECT_GRADCHECK([&](const Inputs& v) { return cross_entropy(v[0], target); }, {random_leaf({3, 4})});
    EXPECT_GRADCHECK([&](const Inputs& v) { return cross_entropy(v[0], target, Reduction::sum, 0.2); }, {random_leaf({3, 4})});
    EXPECT_GRADCHECK([&](const Inputs& v) { return cross_entropy(v[0], target, Reduction::none); }, {random_transposed_leaf({3, 4})});
    EXPECT_GRADCHECK([](const Inputs& v) { return mse_loss(v[0], v[1]); }, {random_leaf({2, 3}), random_leaf({2, 3})});
}

TEST(Gradcheck, Dropout) {
    // The mask is drawn once per call from the same seed, so every evaluation sees the same mask.
    EXPECT_GRADCHECK([](const Inputs& v) {
        Generator generator(11);
        return dropout(v[0], 0.4, true, &generator);
    }, {random_leaf({4, 5})});
}

TEST(Gradcheck, ReportsAWrongGradient) {
    // x * x with a stale saved value would be wrong; here we check the checker itself with a
    // function whose forward is non-differentiable (sign): analytic 0 vs numerical spike at 0.
    const Tensor x = Tensor::zeros({1}, {.dtype = DType::f64}).set_requires_grad(true);
    const GradcheckResult result = gradcheck([](const Inputs& v) { return sign(v[0]); }, {x});
    EXPECT_FALSE(result.passed);
    EXPECT_NE(result.message.find("input 0 element 0"), std::string::npos);
}

// ---- every op's backward on non-contiguous inputs -------------------------------------------------

namespace {

// A non-contiguous float64 leaf of `shape` holding randn * scale + shift: every other element of the
// last dim of a dense [..., 2 * last] tensor, starting at element 1 (so stride 2 and offset 1).
Tensor strided_leaf(const Shape& shape, double scale = 1.0, double shift = 0.0) {
    Shape dense_shape = shape;
    dense_shape.back() *= 2;
    Tensor view;
    {
        NoGradGuard no_grad;
        view = (Tensor::randn(dense_shape, {.dtype = DType::f64}) * scale + shift).slice(-1, 1, dense_shape.back(), 2);
    }
    return view.set_requires_grad(true);
}

// A non-contiguous float64 leaf of shape [a, b, c]: the permute({1, 2, 0}) view of a dense [c, a, b].
Tensor permuted_leaf(const Shape& shape) {
    Tensor view;
    {
        NoGradGuard no_grad;
        view = Tensor::randn({shape[2], shape[0], shape[1]}, {.dtype = DType::f64}).permute({1, 2, 0});
    }
    return view.set_requires_grad(true);
}

struct NonContiguousCase {
    std::string name;
    std::function<Inputs()> make_inputs;  // at least one is a non-contiguous leaf
    GradcheckFunction function;
};

const Tensor& row_mask() {
    static const Tensor mask = Tensor::from_vector<bool>({true, false, false, true}, {4});
    return mask;
}

std::vector<NonContiguousCase> non_contiguous_cases() {
    using kasmina::testing::random_transposed_leaf;
    const auto transposed = [] { return Inputs{random_transposed_leaf({3, 4})}; };
    const auto positive = [] { return Inputs{strided_leaf({3, 4}, 0.3, 2.0)}; };
    const auto three_dims = [] { return Inputs{permuted_leaf({2, 3, 4})}; };
    return {
        {"add", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 4})}; }, [](const Inputs& v) { return v[0] + v[1]; }},
        {"sub", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({4})}; }, [](const Inputs& v) { return v[0] - v[1]; }},
        {"mul", [] { return Inputs{strided_leaf({3, 4}), random_transposed_leaf({3, 4})}; }, [](const Inputs& v) { return v[0] * v[1]; }},
        {"div", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 4}, 0.3, 2.0)}; },
         [](const Inputs& v) { return v[0] / v[1]; }},
        {"pow", [] { return Inputs{strided_leaf({3, 4}, 0.3, 2.0), random_transposed_leaf({3, 4})}; },
         [](const Inputs& v) { return pow(v[0], v[1]); }},
        {"pow_scalar_exponent", positive, [](const Inputs& v) { return pow(v[0], 2.5); }},
        {"neg", transposed, [](const Inputs& v) { return neg(v[0]); }},
        {"log", positive, [](const Inputs& v) { return log(v[0]); }},
        {"sqrt", positive, [](const Inputs& v) { return sqrt(v[0]); }},
        {"rsqrt", positive, [](const Inputs& v) { return rsqrt(v[0]); }},
        {"abs", transposed, [](const Inputs& v) { return abs(v[0]); }},
        {"relu", transposed, [](const Inputs& v) { return relu(v[0]); }},
        {"sigmoid", transposed, [](const Inputs& v) { return sigmoid(v[0]); }},
        {"clamp", transposed, [](const Inputs& v) { return clamp(v[0], -0.5, 0.5); }},
        {"where", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 4})}; },
         [](const Inputs& v) { return where(row_mask(), v[0], v[1]); }},
        {"masked_fill", transposed, [](const Inputs& v) { return masked_fill(v[0], row_mask(), -2.0); }},
        {"mean", three_dims, [](const Inputs& v) { return mean(v[0], {0, 2}); }},
        {"var", three_dims, [](const Inputs& v) { return var(v[0], {1}); }},
        {"max_values_along_dim", three_dims, [](const Inputs& v) { return max(v[0], 1).first; }},
        {"logsumexp", three_dims, [](const Inputs& v) { return logsumexp(v[0], {2}); }},
        {"logsumexp_over_two_dims", three_dims, [](const Inputs& v) { return logsumexp(v[0], {0, 2}); }},
        {"logsumexp_keepdim", three_dims, [](const Inputs& v) { return logsumexp(v[0], {1}, true); }},
        {"softmax", three_dims, [](const Inputs& v) { return softmax(v[0], 1); }},
        {"cat", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 2})}; },
         [](const Inputs& v) { return cat({v[0], v[1]}, 1); }},
        {"stack", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 4})}; },
         [](const Inputs& v) { return stack({v[0], v[1]}, 1); }},
        {"split", [] { return Inputs{random_transposed_leaf({3, 5})}; }, [](const Inputs& v) { return split(v[0], 2, 1)[1] * 2.0; }},
        {"index_select", transposed,
         [](const Inputs& v) { return index_select(v[0], 1, Tensor::from_vector<int64_t>({3, 0, 3}, {3})); }},
        {"gather", transposed,
         [](const Inputs& v) { return gather(v[0], 1, Tensor::from_vector<int64_t>({3, 0, 1, 1, 2, 3}, {3, 2})); }},
        {"embedding", [] { return Inputs{random_transposed_leaf({4, 3})}; },
         [](const Inputs& v) { return embedding(v[0], Tensor::from_vector<int64_t>({0, 3, 3, 1}, {2, 2})); }},
        {"mse_loss", [] { return Inputs{random_transposed_leaf({3, 4}), strided_leaf({3, 4})}; },
         [](const Inputs& v) { return mse_loss(v[0], v[1]); }},
        {"dropout", [] { return Inputs{random_transposed_leaf({4, 5})}; },
         [](const Inputs& v) {
             Generator generator(11);  // the same mask on every evaluation
             return dropout(v[0], 0.4, true, &generator);
         }},
    };
}

class GradcheckNonContiguous : public ::testing::TestWithParam<NonContiguousCase> {};

}  // namespace

TEST_P(GradcheckNonContiguous, MatchesFiniteDifferences) {
    const Inputs inputs = GetParam().make_inputs();
    bool any_strided = false;
    for (const Tensor& input : inputs) any_strided = any_strided || !input.is_contiguous();
    ASSERT_TRUE(any_strided);
    EXPECT_GRADCHECK(GetParam().function, inputs);
}

INSTANTIATE_TEST_SUITE_P(EveryOp, GradcheckNonContiguous, ::testing::ValuesIn(non_contiguous_cases()),
                         [](const ::testing::TestParamInfo<NonContiguousCase>& info) { return info.param.name; });
