// Standard layers beyond the PyTorch fixtures: initialization distributions, float64 gradient
// checks of every layer, train/eval behaviour, and the errors bad input raises (module unchanged).
#include <cmath>
#include <map>

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

// Gradcheck a module in float64 on several inputs (query, key, value, ...) and every parameter.
void expect_module_gradcheck(nn::Module& module, const std::function<Tensor(const Inputs&)>& forward, const Inputs& inputs) {
    module.to(DType::f64);
    std::vector<Tensor> all;
    for (const Tensor& input : inputs) all.push_back(input.to(DType::f64).detach().set_requires_grad(true));
    const size_t input_count = all.size();
    for (const Tensor& p : module.parameters()) all.push_back(p);
    const GradcheckResult result = gradcheck(
        [&](const Inputs& v) { return forward(Inputs(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(input_count))); }, all);
    EXPECT_TRUE(result.passed) << module.type_name() << ": " << result.message;
}

double sample_variance(const Tensor& t) { return var(t.flatten()).item(); }

// The value of each element of a float64 layer norm over the trailing `normalized` elements of each row.
std::vector<double> reference_layer_norm(const std::vector<double>& x, int64_t normalized, const std::vector<double>& weight,
                                         double eps) {
    std::vector<double> out(x.size());
    for (size_t row = 0; row < x.size() / normalized; ++row) {
        double mean = 0.0, variance = 0.0;
        for (int64_t i = 0; i < normalized; ++i) mean += x[row * normalized + i] / static_cast<double>(normalized);
        for (int64_t i = 0; i < normalized; ++i)
            variance += std::pow(x[row * normalized + i] - mean, 2) / static_cast<double>(normalized);
        for (int64_t i = 0; i < normalized; ++i)
            out[row * normalized + i] = (x[row * normalized + i] - mean) / std::sqrt(variance + eps) * weight[i];
    }
    return out;
}

// The per-head value projection of self-attention input x [B, S, E] (packed weights): [B, heads, S, head_dim].
Tensor value_heads(const nn::MultiheadAttention& attention, const Tensor& x) {
    const int64_t e = attention.embed_dim(), heads = attention.num_heads();
    const Tensor v = linear(x, attention.in_proj_weight.narrow(0, 2 * e, e), attention.in_proj_bias.narrow(0, 2 * e, e));
    return v.reshape({x.size(0), x.size(1), heads, e / heads}).transpose(1, 2);
}

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
    expect_values(layer_norm.bias, std::vector<double>(6, 0.0));
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

// ---- initialization ---------------------------------------------------------------------------------

TEST(LayerInit, Conv2dBiasUsesTheWeightFanInBound) {
    nn::Conv2d grouped(16, 256, 3, {.groups = 2});  // fan_in = 16 / 2 * 3 * 3 = 72
    const double grouped_bound = 1.0 / std::sqrt(72.0);
    EXPECT_LE(max(abs(grouped.bias)).item(), grouped_bound);
    EXPECT_GE(max(grouped.bias).item(), 0.8 * grouped_bound);  // spread over the whole interval
    EXPECT_LE(amin(grouped.bias).item(), -0.8 * grouped_bound);
    nn::Conv2d wide(8, 4096, 1);  // fan_in = 8
    const double bound = 1.0 / std::sqrt(8.0);
    EXPECT_LE(max(abs(wide.bias)).item(), bound);
    EXPECT_NEAR(sample_variance(wide.bias), bound * bound / 3.0, 0.1 * bound * bound / 3.0);
}

TEST(LayerInit, AttentionOutProjectionKeepsLinearInitAsPyTorch) {
    // torch.nn.MultiheadAttention._reset_parameters leaves out_proj.weight with Linear's kaiming-uniform
    // init (bound 1 / sqrt(fan_in)); only in_proj / q,k,v_proj weights are xavier-uniform.
    nn::MultiheadAttention attention(256, 4);
    const double bound = 1.0 / std::sqrt(256.0);
    EXPECT_LE(max(abs(attention.out_proj->weight)).item(), bound);
    EXPECT_NEAR(sample_variance(attention.out_proj->weight), bound * bound / 3.0, 0.05 * bound * bound / 3.0);
}

TEST(LayerInit, AttentionSeparateProjectionsUseXavierBounds) {
    nn::MultiheadAttention attention(128, 4, {.kdim = 96, .vdim = 160});
    const std::vector<std::pair<const Tensor*, double>> projections{{&attention.q_proj_weight, 128.0},
                                                                    {&attention.k_proj_weight, 96.0},
                                                                    {&attention.v_proj_weight, 160.0}};
    for (const auto& [weight, fan_in] : projections) {
        const double bound = std::sqrt(6.0 / (fan_in + 128.0));  // [out = embed_dim, in = fan_in]
        EXPECT_EQ(weight->shape(), (Shape{128, static_cast<int64_t>(fan_in)}));
        EXPECT_LE(max(abs(*weight)).item(), bound) << "fan_in " << fan_in;
        EXPECT_NEAR(sample_variance(*weight), bound * bound / 3.0, 0.05 * bound * bound / 3.0) << "fan_in " << fan_in;
    }
    EXPECT_FALSE(attention.in_proj_weight.defined());
}

TEST(LayerInit, AttentionBiasesStartAtZeroWithSeparateProjections) {
    nn::MultiheadAttention attention(8, 2, {.kdim = 5, .vdim = 6});
    expect_values(attention.in_proj_bias, std::vector<double>(24, 0.0));
    expect_values(attention.out_proj->bias, std::vector<double>(8, 0.0));
}

// ---- module-level gradient checks --------------------------------------------------------------------

TEST(LayerGradcheck, MultiheadAttentionWithSeparateProjectionsAndAFloatMask) {
    nn::MultiheadAttention attention(4, 2, {.batch_first = true, .kdim = 3, .vdim = 5});
    ASSERT_FALSE(attention.in_proj_weight.defined());
    {
        NoGradGuard no_grad;
        attention.in_proj_bias.copy_(Tensor::randn({12}) * 0.5);  // non-zero biases take part too
        attention.out_proj->bias.copy_(Tensor::randn({4}) * 0.5);
    }
    const Tensor mask = Tensor::randn({2 * 2, 3, 2}, {.dtype = DType::f64});  // [B * heads, L, S], additive
    expect_module_gradcheck(
        attention,
        [&](const Inputs& v) {
            return attention.forward(v[0], v[1], v[2], {.need_weights = false, .attn_mask = mask}).first;
        },
        Inputs{Tensor::randn({2, 3, 4}), Tensor::randn({2, 2, 3}), Tensor::randn({2, 2, 5})});
}

TEST(LayerGradcheck, BatchNorm2dInTraining) {
    nn::BatchNorm2d norm(2);
    {
        NoGradGuard no_grad;
        norm.weight.copy_(Tensor::randn({2}));
        norm.bias.copy_(Tensor::randn({2}));
    }
    ASSERT_TRUE(norm.is_training());
    expect_module_gradcheck(norm, [&](const Tensor& x) { return norm.forward(x); }, Tensor::randn({2, 2, 3, 3}));
}

TEST(LayerGradcheck, LayerNormWithoutAffine) {
    nn::LayerNorm norm({3, 4}, {.elementwise_affine = false});
    EXPECT_TRUE(norm.parameters().empty());
    expect_module_gradcheck(norm, [&](const Tensor& x) { return norm.forward(x); }, Tensor::randn({2, 3, 4}));
}

// ---- parameter-free modules ----------------------------------------------------------------------------

TEST(Activations, IdentityReturnsItsInput) {
    nn::Identity identity;
    const Tensor x = Tensor::randn({2, 3});
    EXPECT_EQ(identity.forward(x).impl(), x.impl());
}

TEST(Activations, ReluSigmoidTanhGeluMatchTheirFunctions) {
    const std::vector<double> values{-2.0, -0.5, 0.0, 0.5, 2.0};
    const Tensor x = Tensor::from_vector<double>(values, {5});
    std::vector<double> expected_sigmoid, expected_tanh, expected_gelu, expected_gelu_tanh;
    for (double v : values) {
        expected_sigmoid.push_back(1.0 / (1.0 + std::exp(-v)));
        expected_tanh.push_back(std::tanh(v));
        expected_gelu.push_back(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
        expected_gelu_tanh.push_back(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
    }
    expect_values(nn::ReLU().forward(x), {0, 0, 0, 0.5, 2}, 1e-12);
    expect_values(nn::Sigmoid().forward(x), expected_sigmoid, 1e-12);
    expect_values(nn::Tanh().forward(x), expected_tanh, 1e-12);
    expect_values(nn::GELU().forward(x), expected_gelu, 1e-12);
    expect_values(nn::GELU("tanh").forward(x), expected_gelu_tanh, 1e-12);
}

TEST(Activations, FlattenMergesTheRequestedDims) {
    const Tensor x = Tensor::arange(24, {.dtype = DType::f32}).reshape({2, 3, 4});
    const Tensor default_flat = nn::Flatten().forward(x);
    EXPECT_EQ(default_flat.shape(), (Shape{2, 12}));
    expect_values(default_flat, x.to_vector<double>());
    EXPECT_EQ(nn::Flatten(0, 1).forward(x).shape(), (Shape{6, 4}));
    const Tensor transposed = nn::Flatten().forward(x.transpose(1, 2));  // non-contiguous: copies in the new order
    EXPECT_EQ(transposed.shape(), (Shape{2, 12}));
    expect_values(transposed.select(0, 0), {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
}

TEST(Activations, DropoutZeroesAboutPAndScalesSurvivorsInTraining) {
    Generator generator(3);
    nn::Dropout dropout(0.25, &generator);
    const std::vector<float> values = dropout.forward(Tensor::ones({20000})).to_vector<float>();
    int64_t zeros = 0;
    for (float v : values) {
        if (v == 0.f) ++zeros;
        else EXPECT_NEAR(v, 1.0 / 0.75, 1e-6);
    }
    EXPECT_NEAR(static_cast<double>(zeros) / static_cast<double>(values.size()), 0.25, 0.015);
}

TEST(Activations, DropoutIsTheIdentityInEval) {
    nn::Dropout dropout(0.9);
    dropout.eval();
    const Tensor x = Tensor::randn({50});
    const Tensor y = dropout.forward(x);
    EXPECT_EQ(y.impl(), x.impl());
}

// ---- normalization and attention behaviour ---------------------------------------------------------------

TEST(LayerBehaviour, LayerNormWithoutBiasScalesOnly) {
    nn::LayerNorm norm({2, 3}, {.bias = false});
    EXPECT_FALSE(norm.bias.defined());
    EXPECT_EQ(norm.parameters().size(), 1u);
    {
        NoGradGuard no_grad;
        norm.weight.copy_(Tensor::randn({2, 3}));
    }
    const Tensor x = Tensor::randn({4, 2, 3}) * 3.0 + 1.0;
    const std::vector<double> expected = reference_layer_norm(x.to_vector<double>(), 6, norm.weight.to_vector<double>(), 1e-5);
    expect_values(norm.forward(x), expected, 1e-5);
    norm.to(DType::f64);
    expect_values(norm.forward(x.to(DType::f64)), expected, 1e-12);
}

TEST(LayerBehaviour, BatchNormCumulativeAverageCountsEachBatch) {
    nn::BatchNorm1d norm(2, {.momentum = std::nullopt});
    const Tensor first = Tensor::randn({6, 2}, {.dtype = DType::f64}), second = Tensor::randn({6, 2}, {.dtype = DType::f64}) + 2.0;
    norm.to(DType::f64);
    norm.forward(first);
    norm.forward(second);
    EXPECT_EQ(norm.num_batches_tracked.item<int64_t>(), 2);
    // factor 1 for the first batch, 1/2 for the second: the plain average of both batches' statistics
    expect_values(norm.running_mean, ((mean(first, {0}) + mean(second, {0})) / 2.0).to_vector<double>(), 1e-12);
    expect_values(norm.running_var, ((var(first, {0}) + var(second, {0})) / 2.0).to_vector<double>(), 1e-12);
}

TEST(LayerBehaviour, AttentionDropoutIsOffInEval) {
    nn::MultiheadAttention attention(8, 2, {.dropout = 0.5, .batch_first = true});
    nn::MultiheadAttention plain(8, 2, {.batch_first = true});
    plain.load_state_dict(attention.state_dict());
    attention.eval();
    plain.eval();
    const Tensor x = Tensor::randn({2, 5, 8});
    const auto [output, weights] = attention.forward(x, x, x, {.average_attn_weights = false});
    const auto [plain_output, plain_weights] = plain.forward(x, x, x, {.average_attn_weights = false});
    kasmina::testing::expect_tensors_close(output, plain_output, 0);
    kasmina::testing::expect_tensors_close(weights, plain_weights, 0);
    kasmina::testing::expect_tensors_close(sum(weights, {-1}), Tensor::ones({2, 2, 5}), 1e-6);
}

TEST(LayerBehaviour, AttentionDropoutZeroesAndRescalesWeightsInTraining) {
    const double p = 0.5;
    nn::MultiheadAttention attention(8, 2, {.dropout = p, .batch_first = true});
    const Tensor x = Tensor::randn({2, 5, 8});
    attention.eval();
    const std::vector<double> kept = attention.forward(x, x, x, {.average_attn_weights = false}).second.to_vector<double>();
    attention.train();
    const std::vector<double> dropped = attention.forward(x, x, x, {.average_attn_weights = false}).second.to_vector<double>();
    ASSERT_EQ(dropped.size(), kept.size());
    int64_t zeros = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
        if (dropped[i] == 0.0) ++zeros;
        else EXPECT_NEAR(dropped[i], kept[i] / (1.0 - p), 1e-6) << "element " << i;
    }
    EXPECT_GT(zeros, 20);  // of 100 weights, about 50 are dropped
    EXPECT_LT(zeros, 80);
}

TEST(LayerBehaviour, AttentionReturnsTheWeightsItAppliedAfterDropoutAsPyTorch) {
    nn::MultiheadAttention attention(8, 2, {.dropout = 0.5, .batch_first = true});
    const Tensor x = Tensor::randn({2, 5, 8});
    const auto [output, weights] = attention.forward(x, x, x, {.average_attn_weights = false});
    // The output is exactly out_proj(weights @ v): the returned weights are the dropped ones.
    kasmina::testing::expect_tensors_close(output, attention.project_heads(matmul(weights, value_heads(attention, x))), 1e-5);
    EXPECT_GT(sum(eq(weights, Tensor::scalar(0.0)).to(DType::f32)).item(), 0.0);  // some were dropped
}

TEST(LayerBehaviour, AttentionUnbatchedInputMatchesABatchOfOne) {
    nn::MultiheadAttention attention(8, 2);  // sequence-first: batched input is [L, B, E]
    const Tensor query = Tensor::randn({4, 8}), key = Tensor::randn({5, 8}), value = Tensor::randn({5, 8});
    const Tensor padding = Tensor::from_vector<bool>({false, false, true, false, false}, {5});
    const Tensor mask = Tensor::randn({4, 5});
    const auto [output, weights] = attention.forward(query, key, value, {.key_padding_mask = padding, .attn_mask = mask});
    EXPECT_EQ(output.shape(), (Shape{4, 8}));
    EXPECT_EQ(weights.shape(), (Shape{4, 5}));
    const auto [batched_output, batched_weights] = attention.forward(
        query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), {.key_padding_mask = padding.unsqueeze(0), .attn_mask = mask});
    EXPECT_EQ(batched_output.shape(), (Shape{4, 1, 8}));
    kasmina::testing::expect_tensors_close(output, batched_output.squeeze(1), 1e-6);
    kasmina::testing::expect_tensors_close(weights, batched_weights.squeeze(0), 1e-6);
    expect_values(weights.select(1, 2), {0, 0, 0, 0});  // the padded key gets no weight
}

// ---- a raising BatchNorm forward changes no buffer ---------------------------------------------------

namespace {

// Runs one good training batch (so the buffers hold non-initial values), then each bad input: every
// call raises `type` with its text and leaves running_mean, running_var and num_batches_tracked as they were.
template <typename Norm>
void expect_bad_inputs_leave_buffers_unchanged(const Shape& good_shape,
                                               const std::vector<std::tuple<std::string, Tensor, std::string>>& bad_inputs) {
    Norm norm(3);
    norm.forward(Tensor::randn(good_shape) * 2.0 + 1.0);
    const std::vector<double> mean_before = norm.running_mean.template to_vector<double>();
    const std::vector<double> var_before = norm.running_var.template to_vector<double>();
    ASSERT_EQ(norm.num_batches_tracked.template item<int64_t>(), 1);
    for (const auto& [what, input, text] : bad_inputs) {
        SCOPED_TRACE(what);
        EXPECT_THROW_WITH(norm.forward(input), Error, text);
        EXPECT_EQ(norm.running_mean.template to_vector<double>(), mean_before);
        EXPECT_EQ(norm.running_var.template to_vector<double>(), var_before);
        EXPECT_EQ(norm.num_batches_tracked.template item<int64_t>(), 1);
    }
    norm.forward(Tensor::randn(good_shape));  // still usable: counts the next good batch
    EXPECT_EQ(norm.num_batches_tracked.template item<int64_t>(), 2);
}

}  // namespace

TEST(LayerErrors, BatchNorm1dBadInputLeavesEveryBufferUnchanged) {
    expect_bad_inputs_leave_buffers_unchanged<nn::BatchNorm1d>(
        {4, 3}, {
                    {"int64 input", Tensor::zeros({4, 3}, {.dtype = DType::i64}), "BatchNorm1d: expected a floating input, got int64[4, 3]"},
                    {"float64 input on a float32 module", Tensor::zeros({4, 3}, {.dtype = DType::f64}), "batch_norm: weight is float32[3] on cpu but the input is float64[4, 3]"},
                    {"rank 1", Tensor::randn({3}), "BatchNorm1d: expected 2D or 3D input (N, C) or (N, C, L), got 1D input [3]"},
                    {"rank 4", Tensor::randn({2, 3, 2, 2}), "BatchNorm1d: expected 2D or 3D input"},
                    {"wrong channel count", Tensor::randn({4, 5}), "BatchNorm1d: expected 3 channels in dimension 1, got input [4, 5]"},
                    {"one value per channel", Tensor::randn({1, 3}), "Expected more than 1 value per channel when training"},
                    {"one value per channel (N, C, L)", Tensor::randn({1, 3, 1}), "got input size [1, 3, 1]"},
                });
}

TEST(LayerErrors, BatchNorm2dBadInputLeavesEveryBufferUnchanged) {
    expect_bad_inputs_leave_buffers_unchanged<nn::BatchNorm2d>(
        {2, 3, 2, 2}, {
                          {"int64 input", Tensor::zeros({2, 3, 2, 2}, {.dtype = DType::i64}), "BatchNorm2d: expected a floating input"},
                          {"float64 input on a float32 module", Tensor::zeros({2, 3, 2, 2}, {.dtype = DType::f64}), "batch_norm:"},
                          {"rank 3", Tensor::randn({2, 3, 4}), "BatchNorm2d: expected 4D input (N, C, H, W), got 3D input [2, 3, 4]"},
                          {"wrong channel count", Tensor::randn({2, 4, 2, 2}), "BatchNorm2d: expected 3 channels in dimension 1"},
                          {"one value per channel", Tensor::randn({1, 3, 1, 1}), "Expected more than 1 value per channel when training"},
                      });
}
