// conv2d (NCHW, PyTorch semantics): forward values against a naive float64 reference for each
// geometry (padding, stride, dilation, groups, depthwise, non-square kernels, no bias, 1x1), the
// float32 oneDNN path against the float64 loops (forward and backward; Winograd and direct), gradients
// against finite differences, non-contiguous operands, and the errors bad shapes raise.
#include "autograd/convolution.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/convolution.h"
#include "kernels/settings.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::kernels::Conv2dParams;
using kasmina::testing::expect_tensors_close;
using kasmina::testing::expect_values;
using kasmina::testing::random_leaf;
using kasmina::testing::random_transposed_leaf;
using Inputs = std::vector<Tensor>;

namespace {

// One convolution geometry; shapes are tiny so the same cases serve value tests and gradchecks.
struct ConvCase {
    std::string name;
    Shape input;   // [N, C, H, W]
    Shape weight;  // [O, C / groups, KH, KW]
    bool bias;
    Conv2dParams params;
};

std::ostream& operator<<(std::ostream& stream, const ConvCase& c) { return stream << c.name; }

const std::vector<ConvCase> cases = {
    {"Plain3x3Pad1", {2, 3, 5, 5}, {4, 3, 3, 3}, true, {.padding = {1, 1}}},
    {"Stride2Pad1", {2, 3, 5, 6}, {4, 3, 3, 3}, true, {.stride = {2, 2}, .padding = {1, 1}}},
    {"Dilation2", {2, 2, 6, 5}, {3, 2, 3, 3}, true, {.padding = {1, 1}, .dilation = {2, 2}}},
    {"Groups2", {2, 4, 5, 5}, {6, 2, 3, 3}, true, {.padding = {1, 1}, .groups = 2}},
    {"Depthwise", {2, 3, 5, 5}, {3, 1, 3, 3}, true, {.padding = {1, 1}, .groups = 3}},
    {"DepthwiseMultiplier2", {2, 2, 5, 5}, {4, 1, 3, 3}, true, {.stride = {2, 2}, .groups = 2}},
    {"NonSquareKernel3x1", {2, 3, 5, 4}, {4, 3, 3, 1}, true, {.padding = {1, 0}}},
    {"NoBias", {2, 3, 5, 5}, {4, 3, 3, 3}, false, {.padding = {1, 1}}},
    {"Batch1Kernel1x1", {1, 5, 4, 4}, {3, 5, 1, 1}, true, {}},
    // stride (2, 1), padding (0, 1), dilation (1, 2)
    {"MixedStrideAndDilation", {2, 2, 7, 6}, {3, 2, 2, 3}, true, {{2, 1}, {0, 1}, {1, 2}, 1}},
    {"PaddingWiderThanKernel", {1, 2, 3, 3}, {2, 2, 2, 2}, true, {.padding = {2, 2}}},
};

// out[n, o, oh, ow] = bias[o] + sum_{c, kh, kw} x[n, g*C/G + c, oh*s - p + kh*d, ow*s - p + kw*d] * w[o, c, kh, kw],
// computed in float64 from the operands' values, one output element at a time.
Tensor reference_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
    const std::vector<double> xv = x.to_vector<double>(), wv = weight.to_vector<double>();
    const std::vector<double> bv = bias.defined() ? bias.to_vector<double>() : std::vector<double>(weight.size(0), 0.0);
    const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
    const int64_t outs = weight.size(0), per_group = weight.size(1), kh_size = weight.size(2), kw_size = weight.size(3);
    const int64_t out_h = (height + 2 * p.padding[0] - p.dilation[0] * (kh_size - 1) - 1) / p.stride[0] + 1;
    const int64_t out_w = (width + 2 * p.padding[1] - p.dilation[1] * (kw_size - 1) - 1) / p.stride[1] + 1;
    const int64_t outs_per_group = outs / p.groups;
    std::vector<double> result;
    for (int64_t n = 0; n < batch; ++n)
        for (int64_t o = 0; o < outs; ++o)
            for (int64_t oh = 0; oh < out_h; ++oh)
                for (int64_t ow = 0; ow < out_w; ++ow) {
                    double sum = bv[o];
                    for (int64_t c = 0; c < per_group; ++c)
                        for (int64_t kh = 0; kh < kh_size; ++kh)
                            for (int64_t kw = 0; kw < kw_size; ++kw) {
                                const int64_t ih = oh * p.stride[0] - p.padding[0] + kh * p.dilation[0];
                                const int64_t iw = ow * p.stride[1] - p.padding[1] + kw * p.dilation[1];
                                if (ih < 0 || ih >= height || iw < 0 || iw >= width) continue;
                                const int64_t channel = (o / outs_per_group) * per_group + c;
                                sum += xv[((n * channels + channel) * height + ih) * width + iw] *
                                       wv[((o * per_group + c) * kh_size + kh) * kw_size + kw];
                            }
                    result.push_back(sum);
                }
    return Tensor::from_vector(result, {batch, outs, out_h, out_w});
}

struct Operands {
    Tensor x, weight, bias;
};

Operands random_operands(const ConvCase& c, DType dtype) {
    NoGradGuard no_grad;
    Operands operands{Tensor::randn(c.input, {.dtype = DType::f64}).to(dtype),
                      Tensor::randn(c.weight, {.dtype = DType::f64}).to(dtype), Tensor()};
    if (c.bias) operands.bias = Tensor::randn({c.weight[0]}, {.dtype = DType::f64}).to(dtype);
    return operands;
}

class Conv2dCase : public ::testing::TestWithParam<ConvCase> {};

}  // namespace

// ---- forward values -----------------------------------------------------------------------------

TEST_P(Conv2dCase, Float32ForwardMatchesReference) {
    const ConvCase& c = GetParam();
    const Operands v = random_operands(c, DType::f32);
    const Tensor out = conv2d(v.x, v.weight, v.bias, c.params);
    EXPECT_EQ(out.dtype(), DType::f32);
    expect_tensors_close(out, reference_conv2d(v.x, v.weight, v.bias, c.params), 1e-5);
}

TEST_P(Conv2dCase, Float64ForwardMatchesReference) {
    const ConvCase& c = GetParam();
    const Operands v = random_operands(c, DType::f64);
    const Tensor out = conv2d(v.x, v.weight, v.bias, c.params);
    EXPECT_EQ(out.dtype(), DType::f64);
    expect_tensors_close(out, reference_conv2d(v.x, v.weight, v.bias, c.params), 1e-12);
}

TEST_P(Conv2dCase, OutputShapeFollowsPyTorchFormula) {
    const ConvCase& c = GetParam();
    const Operands v = random_operands(c, DType::f64);
    EXPECT_EQ(kernels::conv2d_output_shape(c.input, c.weight, c.params),
              reference_conv2d(v.x, v.weight, v.bias, c.params).shape());
}

// The oneDNN float32 primitives (forward, backward data, backward weights + bias) agree with the
// float64 loops on the same values.
TEST_P(Conv2dCase, Float32OneDnnPathAgreesWithFloat64Loops) {
    const ConvCase& c = GetParam();
    const Operands v32 = random_operands(c, DType::f32);
    const Operands v64{v32.x.to(DType::f64), v32.weight.to(DType::f64), c.bias ? v32.bias.to(DType::f64) : Tensor()};
    const Tensor out32 = kernels::conv2d(v32.x, v32.weight, v32.bias, c.params);
    const Tensor out64 = kernels::conv2d(v64.x, v64.weight, v64.bias, c.params);
    expect_tensors_close(out32, out64, 1e-5);

    const Tensor grad64 = Tensor::randn(out64.shape(), {.dtype = DType::f64});
    const Tensor grad32 = grad64.to(DType::f32);
    const auto g32 = kernels::conv2d_backward(grad32, v32.x, v32.weight, c.bias, c.params, true, true, true);
    const auto g64 = kernels::conv2d_backward(grad64, v64.x, v64.weight, c.bias, c.params, true, true, true);
    expect_tensors_close(g32.input, g64.input, 1e-5);
    expect_tensors_close(g32.weight, g64.weight, 1e-5);
    EXPECT_EQ(g32.bias.defined(), c.bias);
    if (c.bias) expect_tensors_close(g32.bias, g64.bias, 1e-5);
}

// Each float32 value within `roundings` float32 roundings (2^-24) of the float64 one, relative to the
// sum of the absolute values of its terms (`magnitude`): the measure a float32 sum's accuracy takes.
void expect_within_roundings(const Tensor& actual, const Tensor& expected, const Tensor& magnitude, double roundings,
                             const std::string& what) {
    const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>(),
                              m = magnitude.to_vector<double>();
    ASSERT_EQ(a.size(), e.size()) << what;
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - e[i]) / (m[i] * 0x1p-24 + 1e-30));
    EXPECT_LE(worst, roundings) << what << ": worst error in float32 roundings of the sum of |terms|";
}

// 3x3 convolutions large enough for the Winograd kernels (set_convolution_winograd), paddings 0-2, forward
// and all gradients, against float64 loops, with Winograd on and off; on an AVX-512 machine (where oneDNN
// has Winograd) the two must round differently where it applies, which shows the Winograd kernels ran.
TEST(Conv2d, Float32WinogradAndDirectKernelsAreFloat32Accurate) {
    NoGradGuard no_grad;
    const bool initially = convolution_winograd();
    for (const int64_t padding : {1, 0, 2}) {
        SCOPED_TRACE("padding " + std::to_string(padding));
        const Conv2dParams params{.padding = {padding, padding}};
        const Tensor x32 = Tensor::randn({4, 16, 34, 34}), w32 = Tensor::randn({16, 16, 3, 3}),
                     b32 = Tensor::randn({16});
        const Tensor grad32 = Tensor::randn(kernels::conv2d_output_shape(x32.shape(), w32.shape(), params));
        // float64 results on the float32 values, and the sums of |terms| (the same products on |operands|)
        const Tensor x = x32.to(DType::f64), w = w32.to(DType::f64), b = b32.to(DType::f64),
                     grad = grad32.to(DType::f64);
        const Tensor out = kernels::conv2d(x, w, b, params);
        const Tensor out_magnitude = kernels::conv2d(abs(x), abs(w), abs(b), params);
        const auto grads = kernels::conv2d_backward(grad, x, w, true, params, true, true, true);
        const auto magnitudes = kernels::conv2d_backward(abs(grad), abs(x), abs(w), true, params, true, true, true);

        std::vector<Tensor> outputs;
        for (const bool winograd : {true, false}) {
            set_convolution_winograd(winograd);
            const std::string kernel = winograd ? "Winograd" : "direct";
            const Tensor out32 = kernels::conv2d(x32, w32, b32, params);
            const auto grads32 = kernels::conv2d_backward(grad32, x32, w32, true, params, true, true, true);
            // Measured with one draw on AVX-512, in roundings (forward / input / weight gradient): direct
            // 4.3-4.6 / 4.1-5.1 / 1.6-2.9; Winograd 12.1 / 18.5 / 2.0 (padding 1) and 9.7 / 26.0 / 2.2
            // (padding 0: the input gradient is then a padding-2 convolution, whose border tiles hold mostly
            // padding). The bounds leave room for other draws.
            const double bound = winograd ? 64 : 8;
            expect_within_roundings(out32, out, out_magnitude, bound, kernel + " forward");
            expect_within_roundings(grads32.input, grads.input, magnitudes.input, bound, kernel + " input gradient");
            expect_within_roundings(grads32.weight, grads.weight, magnitudes.weight, bound,
                                    kernel + " weight gradient");
            expect_within_roundings(grads32.bias, grads.bias, magnitudes.bias, bound, kernel + " bias gradient");
            outputs.push_back(out32);
        }
#if defined(__x86_64__) && defined(__GNUC__)
        if (__builtin_cpu_supports("avx512f") && padding <= 1) {  // oneDNN 2.6 has no Winograd for padding 2
            const std::vector<float> winograd = outputs[0].to_vector<float>(), direct = outputs[1].to_vector<float>();
            EXPECT_NE(winograd, direct) << "the Winograd setting did not change the kernel on an AVX-512 machine";
        }
#endif
    }
    set_convolution_winograd(initially);
}

// The CPU keeps weights converted to oneDNN's layouts (the Winograd transform) while their bytes stay the
// same: repeated calls give the same values, also with two or six weights taking turns, and weights
// rewritten behind the tensor's back (through its data pointer, no version bump) are converted afresh.
TEST(Conv2d, Float32WeightsRewrittenInPlaceAreSeenByTheNextCall) {
    const Conv2dParams params{.padding = {1, 1}};
    NoGradGuard no_grad;
    for (const Shape& input : {Shape{4, 16, 32, 32}, Shape{1, 16, 5, 5}}) {  // Winograd's size, the direct kernel's
        const Tensor x = Tensor::randn(input), weight = Tensor::randn({16, 16, 3, 3}), bias = Tensor::randn({16});
        const Tensor first = kernels::conv2d(x, weight, bias, params);
        EXPECT_EQ(kernels::conv2d(x, weight, bias, params).to_vector<float>(), first.to_vector<float>());

        // Two weights of one geometry taking turns (two seeds' kernels) each keep their own values, and so
        // do six (more than are kept: each call then converts into a reused buffer).
        for (const int count : {2, 6}) {
            std::vector<Tensor> weights{weight};
            std::vector<std::vector<float>> results{first.to_vector<float>()};
            for (int i = 1; i < count; ++i) {
                weights.push_back(Tensor::randn({16, 16, 3, 3}));
                results.push_back(kernels::conv2d(x, weights.back(), bias, params).to_vector<float>());
            }
            for (int turn = 0; turn < 2; ++turn)
                for (int i = 0; i < count; ++i)
                    EXPECT_EQ(kernels::conv2d(x, weights[i], bias, params).to_vector<float>(), results[i]) << i;
        }

        const Tensor replacement = Tensor::randn({16, 16, 3, 3});
        std::memcpy(weight.data<float>(), replacement.data<float>(), 16 * 16 * 9 * sizeof(float));
        // float64 on the same values, and the sums of |terms| the errors are measured against
        const Tensor x64 = x.to(DType::f64), w64 = replacement.to(DType::f64), b64 = bias.to(DType::f64);
        const Tensor grad = Tensor::randn(first.shape()), grad64 = grad.to(DType::f64);
        expect_within_roundings(kernels::conv2d(x, weight, bias, params), kernels::conv2d(x64, w64, b64, params),
                                kernels::conv2d(abs(x64), abs(w64), abs(b64), params), 32, "forward");
        const auto grads = kernels::conv2d_backward(grad, x, weight, true, params, true, false, false);
        expect_within_roundings(
            grads.input, kernels::conv2d_backward(grad64, x64, w64, true, params, true, false, false).input,
            kernels::conv2d_backward(abs(grad64), abs(x64), abs(w64), true, params, true, false, false).input, 32,
            "input gradient");
    }
}

// ---- gradients ------------------------------------------------------------------------------------

TEST_P(Conv2dCase, GradientsOfInputWeightAndBiasPassGradcheck) {
    const ConvCase& c = GetParam();
    const Conv2dParams params = c.params;
    Inputs inputs{random_leaf(c.input), random_leaf(c.weight)};
    if (c.bias) inputs.push_back(random_leaf({c.weight[0]}));
    EXPECT_GRADCHECK([params](const Inputs& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), params); },
                     inputs);
}

INSTANTIATE_TEST_SUITE_P(Geometries, Conv2dCase, ::testing::ValuesIn(cases),
                         [](const ::testing::TestParamInfo<ConvCase>& info) { return info.param.name; });

TEST(Conv2d, NonContiguousInputGivesTheSameValuesAsItsDenseCopy) {
    const Conv2dParams params{.stride = {2, 1}, .padding = {1, 1}};
    for (DType dtype : {DType::f32, DType::f64}) {
        NoGradGuard no_grad;
        // A channels-last buffer [N, H, W, C] viewed as [N, C, H, W].
        const Tensor x = Tensor::randn({2, 5, 6, 3}, {.dtype = dtype}).permute({0, 3, 1, 2});
        ASSERT_FALSE(x.is_contiguous());
        const Tensor weight = Tensor::randn({4, 3, 3, 3}, {.dtype = dtype}),
                     bias = Tensor::randn({4}, {.dtype = dtype});
        const Tensor out = conv2d(x, weight, bias, params);
        expect_tensors_close(out, conv2d(x.contiguous(), weight, bias, params), 1e-6);
        expect_tensors_close(out, reference_conv2d(x, weight, bias, params), 1e-5);
    }
}

TEST(Conv2d, NonContiguousInputAndWeightPassGradcheck) {
    const Conv2dParams params{.padding = {1, 1}, .groups = 2};
    EXPECT_GRADCHECK([params](const Inputs& v) { return conv2d(v[0], v[1], v[2], params); },
                     {random_transposed_leaf({2, 4, 5, 4}), random_transposed_leaf({2, 2, 3, 2}), random_leaf({2})});
}

TEST(Conv2d, BackwardFillsFloat32GradsOfInputWeightAndBias) {
    Tensor x = Tensor::randn({2, 3, 6, 6}).set_requires_grad(true);
    Tensor weight = Tensor::randn({4, 3, 3, 3}).set_requires_grad(true);
    Tensor bias = Tensor::randn({4}).set_requires_grad(true);
    const Conv2dParams params{.stride = {2, 2}, .padding = {1, 1}};
    sum(conv2d(x, weight, bias, params)).backward();
    ASSERT_TRUE(x.grad().defined() && weight.grad().defined() && bias.grad().defined());
    EXPECT_EQ(x.grad().shape(), x.shape());
    EXPECT_EQ(weight.grad().shape(), weight.shape());
    // d sum / d bias[o] counts the output positions: N * OH * OW = 2 * 3 * 3.
    expect_values(bias.grad(), {18, 18, 18, 18});
    // d sum / d x[n, c, i, j] = sum of the weight taps that read (i, j): compare with float64 loops.
    const auto expected =
        kernels::conv2d_backward(Tensor::ones({2, 4, 3, 3}, {.dtype = DType::f64}), x.detach().to(DType::f64),
                                 weight.detach().to(DType::f64), true, params, true, true, true);
    expect_tensors_close(x.grad(), expected.input, 1e-5);
    expect_tensors_close(weight.grad(), expected.weight, 1e-5);
}

TEST(Conv2d, OnlyOperandsThatRequireGradReceiveGradients) {
    const Tensor x = Tensor::randn({1, 2, 4, 4});
    Tensor weight = Tensor::randn({3, 2, 3, 3}).set_requires_grad(true);
    const Tensor bias = Tensor::randn({3});
    sum(conv2d(x, weight, bias)).backward();
    EXPECT_TRUE(weight.grad().defined());
    EXPECT_FALSE(x.grad().defined());
    EXPECT_FALSE(bias.grad().defined());
}

TEST(Conv2d, NoGradModeRecordsNoGraph) {
    const Tensor x = Tensor::randn({1, 2, 4, 4});
    Tensor weight = Tensor::randn({3, 2, 3, 3}).set_requires_grad(true);
    NoGradGuard no_grad;
    const Tensor out = conv2d(x, weight);
    EXPECT_FALSE(out.requires_grad());
    EXPECT_EQ(out.grad_fn(), nullptr);
}

TEST(Conv2d, EmptyBatchGivesAnEmptyOutputAndZeroGradients) {
    Tensor x = Tensor::randn({0, 2, 5, 5}).set_requires_grad(true);
    Tensor weight = Tensor::randn({3, 2, 3, 3}).set_requires_grad(true);
    Tensor bias = Tensor::randn({3}).set_requires_grad(true);
    const Tensor out = conv2d(x, weight, bias, {.padding = {1, 1}});
    EXPECT_EQ(out.shape(), (Shape{0, 3, 5, 5}));
    sum(out).backward();
    expect_values(bias.grad(), {0, 0, 0});
    expect_values(weight.grad(), std::vector<double>(weight.numel(), 0.0));
}

// ---- errors -------------------------------------------------------------------------------------

TEST(Conv2dErrors, WrongRankNamesTheShape) {
    const Tensor weight = Tensor::zeros({4, 3, 3, 3});
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({3, 5, 5}), weight), ShapeError,
                      "conv2d: input must be 4-D [N, C, H, W], got [3, 5, 5]");
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({2, 3, 5, 5}), Tensor::zeros({4, 3, 3})), ShapeError,
                      "conv2d: weight must be 4-D [out_channels, in_channels / groups, KH, KW], got [4, 3, 3]");
}

TEST(Conv2dErrors, ChannelMismatchNamesInputWeightAndExpectedCount) {
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({2, 3, 5, 5}), Tensor::zeros({4, 2, 3, 3})), ShapeError,
                      "conv2d: input [2, 3, 5, 5] has 3 channels but weight [4, 2, 3, 3] with groups 1 expects 2");
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({2, 4, 5, 5}), Tensor::zeros({4, 4, 3, 3}), {}, {.groups = 2}), ShapeError,
                      "conv2d: input [2, 4, 5, 5] has 4 channels but weight [4, 4, 3, 3] with groups 2 expects 8");
}

TEST(Conv2dErrors, GroupsMustDivideInputAndOutputChannels) {
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({2, 4, 5, 5}), Tensor::zeros({6, 2, 3, 3}), {}, {.groups = 3}), ShapeError,
                      "conv2d: groups 3 must divide the input channels 4 (input [2, 4, 5, 5])");
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({2, 4, 5, 5}), Tensor::zeros({5, 2, 3, 3}), {}, {.groups = 2}), ShapeError,
                      "conv2d: groups 2 must divide the output channels 5 (weight [5, 2, 3, 3])");
}

TEST(Conv2dErrors, KernelLargerThanPaddedInput) {
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({1, 1, 2, 2}), Tensor::zeros({1, 1, 3, 3})), ShapeError,
                      "conv2d: kernel [3, 3] with dilation [1, 1] spans 3 along height, more than the padded input's 2 "
                      "(input [1, 1, 2, 2], weight [1, 1, 3, 3], padding [0, 0])");
    EXPECT_THROW_WITH(
        conv2d(Tensor::zeros({1, 1, 9, 4}), Tensor::zeros({1, 1, 3, 3}), {}, {.padding = {0, 1}, .dilation = {1, 3}}),
        ShapeError,
        "conv2d: kernel [3, 3] with dilation [1, 3] spans 7 along width, more than the padded input's 6 "
        "(input [1, 1, 9, 4], weight [1, 1, 3, 3], padding [0, 1])");
}

TEST(Conv2dErrors, InvalidParametersAreRejected) {
    const Tensor x = Tensor::zeros({1, 2, 5, 5}), weight = Tensor::zeros({2, 2, 3, 3});
    EXPECT_THROW_WITH(conv2d(x, weight, {}, {.stride = {0, 1}}), ShapeError,
                      "conv2d: stride must be positive, got [0, 1]");
    EXPECT_THROW_WITH(conv2d(x, weight, {}, {.padding = {-1, 0}}), ShapeError,
                      "conv2d: padding must be non-negative, got [-1, 0]");
    EXPECT_THROW_WITH(conv2d(x, weight, {}, {.dilation = {1, 0}}), ShapeError,
                      "conv2d: dilation must be positive, got [1, 0]");
    EXPECT_THROW_WITH(conv2d(x, weight, {}, {.groups = 0}), ShapeError, "conv2d: groups must be positive, got 0");
}

TEST(Conv2dErrors, BiasMustHaveOneValuePerOutputChannel) {
    EXPECT_THROW_WITH(conv2d(Tensor::zeros({1, 2, 5, 5}), Tensor::zeros({3, 2, 3, 3}), Tensor::zeros({2})), ShapeError,
                      "conv2d: bias [2] does not match weight [3, 2, 3, 3] (expected [3])");
}

TEST(Conv2dErrors, DtypesMustMatchAndBeFloating) {
    EXPECT_THROW_WITH(
        conv2d(Tensor::zeros({1, 2, 5, 5}), Tensor::zeros({3, 2, 3, 3}, {.dtype = DType::f64})), DTypeError,
        "conv2d: operands have different dtypes: float32[1, 2, 5, 5] on cpu and float64[3, 2, 3, 3] on cpu");
    EXPECT_THROW_WITH(
        conv2d(Tensor::zeros({1, 2, 5, 5}, {.dtype = DType::i64}), Tensor::zeros({3, 2, 3, 3}, {.dtype = DType::i64})),
        DTypeError, "conv2d: expected float32 or float64 operands, got int64[1, 2, 5, 5]");
}

TEST(Conv2dErrors, GradOutputMustHaveTheOutputShape) {
    EXPECT_THROW_WITH(kernels::conv2d_backward(Tensor::zeros({1, 3, 5, 5}), Tensor::zeros({1, 2, 5, 5}),
                                               Tensor::zeros({3, 2, 3, 3}), false, {}, true, true, false),
                      ShapeError,
                      "conv2d_backward: grad_output [1, 3, 5, 5] does not match the output shape [1, 3, 3, 3] of input "
                      "[1, 2, 5, 5] and weight [3, 2, 3, 3]");
}

TEST(Conv2dErrors, OperandsOnDifferentDevicesRaise) {
    if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
    const Tensor x = Tensor::zeros({1, 2, 5, 5}, {.device = Device::cuda()});
    EXPECT_THROW_WITH(conv2d(x, Tensor::zeros({3, 2, 3, 3})), DeviceError, "conv2d: operands are on different devices");
}
