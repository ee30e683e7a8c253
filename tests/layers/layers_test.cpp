// Standard layers beyond the PyTorch fixtures: initialization distributions, float64 gradient
// checks of every layer, train/eval behaviour, and the errors bad input raises (module unchanged).
#include <cmath>

#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_values;
using Inputs = std::vector<Tensor>;

namespace {

// Gradcheck a module in float64: inputs and every parameter.
void expect_module_gradcheck(nn::Module& module, const std::function<Tensor(const Tensor&)>& forward, const Tensor& input) {
    module.to(DType::f64);
    Tensor x = input.to(DType::f64).detach().set_requires_grad(true);
    std::vector<Tensor> inputs{x};
    for (const Tensor& p : module.parameters()) inputs.push_back(p);
    const GradcheckResult result = gradcheck([&](const Inputs& v) { return forward(v[0]); }, inputs);
    EXPECT_TRUE(result.passed) << module.type_name() << ": " << result.message;
}

double sample_variance(const Tensor& t) { return var(t.flatten()).item(); }

}  // namespace

TEST(LayerInit, LinearAndConvUseKaimingUniformBounds) {
    nn::Linear linear(400, 300);
    const double bound = 1.0 / std::sqrt(400.0);
    EXPECT_LE(max(abs(linear.weight)).item(), bound);
    EXPECT_NEAR(sample_variance(linear.weight), bound * bound / 3.0, 0.05 * bound * bound);
    EXPECT_LE(max(abs(linear.bias)).item(), bound);
    nn::Conv2d conv(16, 32, 3, {.groups = 2});
    EXPECT_EQ(conv.weight.shape(), (Shape{32, 8, 3, 3}));
    EXPECT_LE(max(abs(conv.weight)).item(), 1.0 / std::sqrt(8.0 * 9.0));
}

TEST(LayerInit, AttentionUsesXavierAndZeroBiases) {
    nn::MultiheadAttention attention(64, 4);
    const double bound = std::sqrt(6.0 / (64.0 + 192.0));
    EXPECT_LE(max(abs(attention.in_proj_weight)).item(), bound);
    EXPECT_NEAR(sample_variance(attention.in_proj_weight), bound * bound / 3.0, 0.05 * bound * bound);
    expect_values(attention.in_proj_bias, std::vector<double>(192, 0.0));
    expect_values(attention.out_proj->bias, std::vector<double>(64, 0.0));
}

TEST(LayerInit, NormsStartAtIdentity) {
    nn::BatchNorm2d norm(3);
    expect_values(norm.weight, {1, 1, 1});
    expect_values(norm.bias, {0, 0, 0});
    expect_values(norm.running_mean, {0, 0, 0});
    expect_values(norm.running_var, {1, 1, 1});
    EXPECT_EQ(norm.num_batches_tracked.item<int64_t>(), 0);
    nn::LayerNorm layer_norm({2, 3});
    expect_values(layer_norm.weight, std::vector<double>(6, 1.0));
}

TEST(LayerGradcheck, Linear) {
    nn::Linear layer(3, 2);
    expect_module_gradcheck(layer, [&](const Tensor& x) { return layer.forward(x); }, Tensor::randn({2, 2, 3}));
}

TEST(LayerGradcheck, Conv2dWithStrideDilationAndGroups) {
    nn::Conv2d conv(4, 2, 3, {.stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}, .groups = 2});
    expect_module_gradcheck(conv, [&](const Tensor& x) { return conv.forward(x); }, Tensor::randn({2, 4, 5, 5}));
}

TEST(LayerGradcheck, LayerNormOverTwoDims) {
    nn::LayerNorm norm({2, 3});
    {
        NoGradGuard no_grad;
        norm.weight.copy_(Tensor::randn({2, 3}));
        norm.bias.copy_(Tensor::randn({2, 3}));
    }
    expect_module_gradcheck(norm, [&](const Tensor& x) { return norm.forward(x); }, Tensor::randn({3, 2, 3}));
}

TEST(LayerGradcheck, BatchNormTrainAndEval) {
    nn::BatchNorm1d norm(3);
    expect_module_gradcheck(norm, [&](const Tensor& x) { return norm.forward(x); }, Tensor::randn({4, 3, 2}));
    nn::BatchNorm2d eval_norm(2);
    eval_norm.eval();
    expect_module_gradcheck(eval_norm, [&](const Tensor& x) { return eval_norm.forward(x); }, Tensor::randn({2, 2, 3, 3}));
}

TEST(LayerGradcheck, MultiheadAttentionWithMasks) {
    nn::MultiheadAttention attention(4, 2, {.batch_first = true});
    const Tensor padding = Tensor::from_vector<bool>({false, false, true, false, false, false}, {2, 3});
    expect_module_gradcheck(
        attention,
        [&](const Tensor& x) {
            return attention.forward(x, x, x, {.key_padding_mask = padding, .need_weights = false, .is_causal = true}).first;
        },
        Tensor::randn({2, 3, 4}));
}

TEST(LayerBehaviour, BatchNormEvalUsesRunningStatistics) {
    nn::BatchNorm1d norm(2);
    const Tensor x = Tensor::randn({8, 2});
    norm.forward(x);
    norm.eval();
    const Tensor y = norm.forward(x);
    const Tensor expected = (x - norm.running_mean) / sqrt(norm.running_var + 1e-5);
    kasmina::testing::expect_tensors_close(y, expected, 1e-5);
    EXPECT_EQ(norm.num_batches_tracked.item<int64_t>(), 1);  // eval does not count
}

TEST(LayerBehaviour, BatchNormWithASingleValuePerChannelRaisesAndKeepsState) {
    nn::BatchNorm1d norm(3);
    EXPECT_THROW_WITH(norm.forward(Tensor::randn({1, 3})), ShapeError, "Expected more than 1 value per channel when training");
    EXPECT_EQ(norm.num_batches_tracked.item<int64_t>(), 0);
    norm.eval();
    EXPECT_EQ(norm.forward(Tensor::randn({1, 3})).shape(), (Shape{1, 3}));  // fine in eval
}

TEST(LayerBehaviour, DropoutIsIdentityInEval) {
    nn::Dropout dropout(0.5);
    const Tensor x = Tensor::randn({100});
    EXPECT_NE(dropout.forward(x).to_vector<float>(), x.to_vector<float>());
    dropout.eval();
    EXPECT_EQ(dropout.forward(x).to_vector<float>(), x.to_vector<float>());
}

TEST(LayerBehaviour, AttentionHeadsAreAddressable) {
    nn::MultiheadAttention attention(8, 2, {.batch_first = true});
    const Tensor x = Tensor::randn({2, 3, 8});
    const nn::AttentionHeads heads = attention.attend_heads(x, x, x, Tensor(), true);
    EXPECT_EQ(heads.context.shape(), (Shape{2, 2, 3, 4}));
    EXPECT_EQ(heads.weights.shape(), (Shape{2, 2, 3, 3}));
    kasmina::testing::expect_tensors_close(attention.project_heads(heads.context), attention.forward(x), 1e-6);
}

TEST(LayerBehaviour, SequentialAppliesChildrenInOrder) {
    nn::Sequential network{std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(6, 2), std::make_shared<nn::Tanh>()};
    const Tensor y = network.forward(Tensor::randn({4, 2, 3}));
    EXPECT_EQ(y.shape(), (Shape{4, 2}));
    EXPECT_LE(max(abs(y)).item(), 1.0);
}

TEST(LayerErrors, WrongRankOrChannelCount) {
    nn::Conv2d conv(3, 4, 3);
    EXPECT_THROW_WITH(conv.forward(Tensor::randn({2, 5, 8, 8})), ShapeError, "expected input [N, 3, H, W]");
    EXPECT_THROW_WITH(conv.forward(Tensor::randn({8, 8})), ShapeError, "Conv2d");
    nn::BatchNorm2d norm(3);
    EXPECT_THROW_WITH(norm.forward(Tensor::randn({2, 3, 4})), ShapeError, "expected 4D input");
    EXPECT_THROW_WITH(norm.forward(Tensor::randn({2, 4, 2, 2})), ShapeError, "expected 3 channels");
    EXPECT_EQ(norm.num_batches_tracked.item<int64_t>(), 0);
    nn::Linear linear(3, 2);
    EXPECT_THROW_WITH(linear.forward(Tensor::randn({2, 4})), ShapeError, "expected input [*, 3], got [2, 4]");
    nn::LayerNorm layer_norm({4});
    EXPECT_THROW_WITH(layer_norm.forward(Tensor::randn({2, 3})), ShapeError, "layer_norm");
}

TEST(LayerErrors, AttentionConfigurationAndMasks) {
    EXPECT_THROW_WITH(nn::MultiheadAttention(10, 3), ShapeError, "embed_dim (10) must be divisible by num_heads (3)");
    nn::MultiheadAttention attention(8, 2, {.batch_first = true});
    const Tensor x = Tensor::randn({2, 3, 8});
    EXPECT_THROW_WITH(attention.forward(x, x, x, {.attn_mask = Tensor::zeros({3, 4})}), ShapeError,
                      "the shape of the 2D attn_mask is [3, 4], but should be [3, 3]");
    EXPECT_THROW_WITH(attention.forward(x, x, x, {.key_padding_mask = Tensor::zeros({3, 3}, {.dtype = DType::boolean})}),
                      ShapeError, "key_padding_mask [3, 3] should be [2, 3]");
    EXPECT_THROW_WITH(attention.forward(x, x, x, {.attn_mask = Tensor::zeros({3, 3, 3})}), ShapeError,
                      "the shape of the 3D attn_mask is [3, 3, 3], but should be [4, 3, 3]");
    EXPECT_THROW_WITH(attention.forward(Tensor::randn({2, 3, 6}), x, x), ShapeError, "expected last dims");
}
