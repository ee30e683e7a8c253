// The CUDA backend against the CPU backend: every op's forward and backward on the same random
// inputs (float32 and float64, broadcasting and non-contiguous operands), the caching allocator's
// reuse and statistics, and the dropout mask drawn from the same counter-based numbers on both
// devices. Each test skips itself on a machine without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <tuple>

#include "kasmina.h"
#include "kernels/kernels.h"
#include "kernels/settings.h"
#include "runtime/allocator.h"
#include "test_util.h"

using namespace kasmina;
using Inputs = std::vector<Tensor>;

namespace {

using kasmina::testing::kGpu;

// Runs `function` on CPU copies and on CUDA copies of `inputs` (leaves requiring grad when asked),
// compares outputs and, with `backward`, the input gradients of sum(output * weights).
void expect_same_on_both_devices(const std::function<Tensor(const Inputs&)>& function, const Inputs& inputs,
                                 double tolerance, bool backward = true) {
    Inputs cpu_inputs, gpu_inputs;
    for (const Tensor& x : inputs) {
        Tensor host = x.detach().clone(), device = x.detach().to(kGpu);
        if (backward && is_floating(x.dtype())) {
            host.set_requires_grad(true);
            device.set_requires_grad(true);
        }
        cpu_inputs.push_back(host);
        gpu_inputs.push_back(device);
    }
    const Tensor cpu_out = function(cpu_inputs), gpu_out = function(gpu_inputs);
    ASSERT_EQ(gpu_out.device(), kGpu);
    ASSERT_EQ(cpu_out.shape(), gpu_out.shape());
    ASSERT_EQ(cpu_out.dtype(), gpu_out.dtype());
    kasmina::testing::expect_tensors_close(gpu_out.to(Device::cpu()), cpu_out, tolerance);
    if (!backward || !is_floating(cpu_out.dtype())) return;
    const Tensor weights = Tensor::randn(cpu_out.shape(), {.dtype = cpu_out.dtype()});
    sum(cpu_out * weights).backward();
    sum(gpu_out * weights.to(kGpu)).backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!cpu_inputs[i].requires_grad()) continue;
        ASSERT_TRUE(gpu_inputs[i].grad().defined()) << "input " << i;
        kasmina::testing::expect_tensors_close(gpu_inputs[i].grad().to(Device::cpu()), cpu_inputs[i].grad(), tolerance);
    }
}

using kasmina::testing::randn;
Tensor positive(const Shape& shape) { return abs(randn(shape)) + 0.5; }

}  // namespace

// fill_ on the GPU: a dense range in 16-byte stores with an unaligned head and a tail (a slice at an
// offset, every dtype), strided views one element at a time; nothing outside the view changes, and
// -0.0 keeps its sign.
TEST(CudaBackend, FillWritesOnlyItsViewForEveryDtype) {
    REQUIRE_GPU();
    for (const DType dtype : {DType::f32, DType::f64, DType::i64, DType::boolean}) {
        SCOPED_TRACE(dtype_name(dtype));
        Tensor cpu = Tensor::ones({6, 10}, {.dtype = dtype}), gpu = cpu.to(kGpu);
        cpu.narrow(0, 1, 2).fill_(0.0);  // dense rows at an offset
        gpu.narrow(0, 1, 2).fill_(0.0);
        cpu.narrow(1, 3, 4).narrow(0, 4, 2).fill_(0.0);  // strided: a block of columns
        gpu.narrow(1, 3, 4).narrow(0, 4, 2).fill_(0.0);
        EXPECT_EQ(gpu.to(Device::cpu()).to_vector<double>(), cpu.to_vector<double>());
    }
    const Tensor base = Tensor::ones({1001}).to(kGpu);
    Tensor whole = base.narrow(0, 1, 1000);  // starts 4 bytes past a 16-byte boundary
    whole.fill_(0.0);
    EXPECT_EQ(amax(abs(whole), {}).item(), 0.0);
    whole.fill_(-0.0);
    EXPECT_TRUE(std::signbit(whole.to(Device::cpu()).to_vector<float>()[999]));
    whole.fill_(2.5);
    EXPECT_EQ(amin(whole, {}).item(), 2.5);
    EXPECT_EQ(base.to(Device::cpu()).to_vector<float>()[0], 1.0f);
}

TEST(CudaBackend, UnaryOpsMatchTheCpu) {
    REQUIRE_GPU();
    const Tensor x = randn({33, 17});
    for (auto f : std::vector<std::function<Tensor(const Tensor&)>>{
             [](const Tensor& t) { return -t; }, [](const Tensor& t) { return exp(t); }, [](const Tensor& t) { return abs(t); },
             [](const Tensor& t) { return relu(t); }, [](const Tensor& t) { return gelu(t); },
             [](const Tensor& t) { return gelu(t, "tanh"); }, [](const Tensor& t) { return sigmoid(t); },
             [](const Tensor& t) { return tanh(t); }, [](const Tensor& t) { return clamp(t, -0.5, 0.7); },
             [](const Tensor& t) { return sign(t); }})
        expect_same_on_both_devices([&](const Inputs& v) { return f(v[0]); }, {x}, 1e-5);
    const Tensor p = positive({7, 9});
    for (auto f : std::vector<std::function<Tensor(const Tensor&)>>{[](const Tensor& t) { return log(t); },
                                                                    [](const Tensor& t) { return sqrt(t); },
                                                                    [](const Tensor& t) { return rsqrt(t); }})
        expect_same_on_both_devices([&](const Inputs& v) { return f(v[0]); }, {p}, 1e-5);
}

TEST(CudaBackend, BinaryOpsBroadcastLikeTheCpu) {
    REQUIRE_GPU();
    const Tensor a = randn({4, 1, 6}), b = randn({5, 1}), c = positive({4, 5, 6});
    expect_same_on_both_devices([](const Inputs& v) { return v[0] + v[1]; }, {a, b}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return v[0] - v[1]; }, {a, b}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return v[0] * v[1]; }, {a, b}, 1e-6);
    // float32 transcendentals differ by ulps between libm and CUDA; the broadcast gradients sum them.
    expect_same_on_both_devices([](const Inputs& v) { return v[0] / v[1]; }, {a, c}, 1e-4);
    expect_same_on_both_devices([](const Inputs& v) { return pow(v[1], v[0]); }, {a, c}, 1e-4);
    expect_same_on_both_devices([](const Inputs& v) { return maximum(v[0], v[1]); }, {a, b}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return lt(v[0], v[1]); }, {a, b}, 0, false);
    expect_same_on_both_devices([](const Inputs& v) { return where(gt(v[0], v[1]), v[0], v[1]); }, {a, b}, 1e-6);
    // float64, a transposed (non-contiguous) operand, a large dense case for the vectorized path.
    const Tensor t = randn({6, 8}, DType::f64).transpose(0, 1);
    expect_same_on_both_devices([](const Inputs& v) { return v[0] * v[1] + v[0]; }, {t, randn({8, 6}, DType::f64)}, 1e-12);
    expect_same_on_both_devices([](const Inputs& v) { return v[0] + v[1]; }, {randn({1 << 16}), randn({1 << 16})}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return v[0] * 2.0 + 1.0; }, {randn({4099})}, 1e-6);
}

TEST(CudaBackend, ReductionsMatchTheCpu) {
    REQUIRE_GPU();
    const Tensor x = randn({6, 5, 7});
    expect_same_on_both_devices([](const Inputs& v) { return sum(v[0]); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return sum(v[0], {0}); }, {x}, 1e-5);   // columns
    expect_same_on_both_devices([](const Inputs& v) { return mean(v[0], {2}, true); }, {x}, 1e-5);  // rows
    expect_same_on_both_devices([](const Inputs& v) { return mean(v[0], {0, 2}); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return var(v[0], {1}); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return var(v[0], {}, false); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return amax(v[0], {1}); }, {x}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return amin(v[0], {0}); }, {x}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return logsumexp(v[0], {2}); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return max(v[0], 1).first; }, {x}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return argmax(v[0], 2); }, {x}, 0, false);
    expect_same_on_both_devices([](const Inputs& v) { return sum(v[0], {1}); }, {randn({3, 100000})}, 1e-4, false);
    const Tensor integers = Tensor::arange(24).reshape({4, 6});
    expect_same_on_both_devices([](const Inputs& v) { return sum(v[0], {1}); }, {integers}, 0, false);
}

TEST(CudaBackend, MatmulAndLinearMatchTheCpu) {
    REQUIRE_GPU();
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0], v[1]); }, {randn({5, 7}), randn({7, 3})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0], v[1]); }, {randn({2, 4, 5, 7}), randn({7, 3})},
                                1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0].transpose(-1, -2), v[1]); },
                                {randn({3, 7, 5}), randn({3, 7, 2})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0], v[1]); }, {randn({6}), randn({6, 4})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                                {randn({9, 5}), randn({4, 5}), randn({4})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1]); },
                                {randn({2, 3, 5}, DType::f64), randn({4, 5}, DType::f64)}, 1e-12);
}

// linear with a bias runs as one cuBLASLt matmul with the bias epilogue; column-major weights take
// the other operand layout, and a bias cuBLASLt may not read (not 16-byte aligned) the plain path.
TEST(CudaBackend, LinearWithBiasEpilogueMatchesTheCpu) {
    REQUIRE_GPU();
    for (DType dtype : {DType::f32, DType::f64}) {
        const double tolerance = dtype == DType::f32 ? 1e-4 : 1e-12;
        for (const auto& [rows, in, out] : {std::tuple{9, 5, 4}, std::tuple{33, 17, 13}, std::tuple{512, 256, 128}}) {
            expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                                        {randn({rows, in}, dtype), randn({out, in}, dtype), randn({out}, dtype)}, tolerance);
            expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1].transpose(0, 1), v[2]); },
                                        {randn({rows, in}, dtype), randn({in, out}, dtype), randn({out}, dtype)}, tolerance);
            expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1], v[2].narrow(0, 1, v[1].size(0))); },
                                        {randn({rows, in}, dtype), randn({out, in}, dtype), randn({out + 1}, dtype)}, tolerance);
        }
    }
}

TEST(CudaBackend, MatmulTakesExpandedAndStridedOperands) {
    REQUIRE_GPU();
    // The gradient of sum(linear(x)) is an expanded tensor (stride 0): cuBLAS cannot read it directly.
    expect_same_on_both_devices([](const Inputs& v) { return sum(linear(v[0], v[1], v[2])); },
                                {randn({64, 32}), randn({16, 32}), randn({16})}, 1e-4);
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0].expand({5, 7}), v[1]); },
                                {randn({1, 7}), randn({7, 3})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0].slice(1, 0, 8, 2), v[1]); },
                                {randn({5, 8}), randn({4, 3})}, 1e-5);
}

// The largest error of a float32 product against the float64 product of the same operands, in units
// of float32's rounding (2^-24) times |a| |b| entry by entry: recursive float32 summation over k
// terms stays below k of those units whatever the order; TF32 alone (10-bit mantissas) would be
// hundreds of units off per term.
double error_in_roundings(const Tensor& product, const Tensor& a, const Tensor& b) {
    const Tensor a64 = a.to(Device::cpu()).to(DType::f64), b64 = b.to(Device::cpu()).to(DType::f64);
    const Tensor error = abs(product.to(Device::cpu()).to(DType::f64) - matmul(a64, b64));
    return amax(error / (matmul(abs(a64), abs(b64)) * std::ldexp(1.0, -24)), {}).item();
}

// Float32 products large enough for the tensor-core GEMM (3xTF32) in every operand layout, with a
// k split among blocks, batched, and linear with a bias on ragged edges: within the float32 bound,
// at most 4x cuBLAS SGEMM's error on the same operands, and different from SGEMM's bits (so the
// tensor-core path really ran). Their gradients match the CPU.
TEST(CudaBackend, Float32ProductsOnTensorCoresAreAsAccurateAsSgemm) {
    REQUIRE_GPU();
    struct Case {
        std::string name;
        Tensor a, b;  // on the GPU, in the layout the product reads
    };
    auto on_gpu = [](const Tensor& t) { return t.to(kGpu); };
    const std::vector<Case> cases = {
        {"row-major operands", on_gpu(randn({1100, 300})), on_gpu(randn({300, 1032}))},
        {"transposed operands", on_gpu(randn({300, 1100})).t(), on_gpu(randn({1032, 300})).t()},
        {"transposed left", on_gpu(randn({512, 1100})).t(), on_gpu(randn({512, 260}))},
        {"k split among blocks", on_gpu(randn({260, 5000})), on_gpu(randn({5000, 300}))},
        // (b with k contiguous: a row-major b 301 wide is not stageable and would go to cuBLAS)
        {"k split, a width not a multiple of 4", on_gpu(randn({260, 5000})), on_gpu(randn({301, 5000})).t()},
        {"batched", on_gpu(randn({6, 256, 200})), on_gpu(randn({6, 200, 520}))},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        set_matmul_tensor_cores(false);
        const Tensor sgemm = matmul(c.a, c.b);
        set_matmul_tensor_cores(true);
        const Tensor tensor_cores = matmul(c.a, c.b);
        const double k = static_cast<double>(c.a.size(-1));
        const double sgemm_error = error_in_roundings(sgemm, c.a, c.b), error = error_in_roundings(tensor_cores, c.a, c.b);
        EXPECT_LT(error, k) << "float32's bound; SGEMM: " << sgemm_error;
        // SGEMM's largest error over a million entries is itself a draw (0.5-3 roundings here), and
        // 3xTF32's drops terms of ~2^-22 |a_i b_i| (the small parts' product): four times SGEMM's, or
        // four roundings where SGEMM's is below one.
        EXPECT_LE(error, 4 * std::max(sgemm_error, 1.0)) << "SGEMM: " << sgemm_error;
        EXPECT_GT(amax(abs(tensor_cores - sgemm), {}).item(), 0.0) << "the tensor-core GEMM did not run";
    }
    // linear: x W^T + b with 2,001 rows and 1,027 outputs (no tile is whole at the edges).
    const Tensor x = on_gpu(randn({2001, 516})), weight = on_gpu(randn({1027, 516})), bias = on_gpu(randn({1027}));
    const Tensor product = linear(x, weight, bias) - bias;
    EXPECT_LT(error_in_roundings(product, x, weight.t()), 516.0);
    set_matmul_tensor_cores(false);
    EXPECT_GT(amax(abs(product - (linear(x, weight, bias) - bias)), {}).item(), 0.0);
    set_matmul_tensor_cores(true);
    expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                                {randn({2000, 516}), randn({1028, 516}), randn({1028})}, 1e-3);
    // Few output tiles and a deep k: k split among blocks, the bias added by the split sums, packed
    // (260 outputs) and one column at a time (259).
    for (const int64_t outputs : {int64_t{260}, int64_t{259}}) {
        SCOPED_TRACE(outputs);
        expect_same_on_both_devices([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                                    {randn({128, 4096}), randn({outputs, 4096}), randn({outputs})}, 1e-3);
    }
    // Infinities and NaNs in the operands give what SGEMM gives: row 0 of a holds +inf (its outputs
    // are +-inf by the sign of b's row 3, NaN where it meets b's -inf), row 1 a NaN, b's column 2 a -inf.
    std::vector<float> a_values = randn({1100, 300}).to_vector<float>(), b_values = randn({300, 1032}).to_vector<float>();
    a_values[0 * 300 + 3] = std::numeric_limits<float>::infinity();
    a_values[1 * 300 + 7] = std::numeric_limits<float>::quiet_NaN();
    b_values[5 * 1032 + 2] = -std::numeric_limits<float>::infinity();
    const Tensor a = Tensor::from_vector(a_values, {1100, 300}), b = Tensor::from_vector(b_values, {300, 1032});
    set_matmul_tensor_cores(false);
    const Tensor sgemm = matmul(a.to(kGpu), b.to(kGpu)).to(Device::cpu());
    set_matmul_tensor_cores(true);
    const Tensor tensor_cores = matmul(a.to(kGpu), b.to(kGpu)).to(Device::cpu());
    const std::vector<double> expected = sgemm.to_vector<double>(), actual = tensor_cores.to_vector<double>();
    int64_t special = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
        if (std::isfinite(expected[i])) continue;
        ++special;
        if (std::isnan(expected[i])) EXPECT_TRUE(std::isnan(actual[i])) << "element " << i << ": " << actual[i];
        else EXPECT_EQ(actual[i], expected[i]) << "element " << i;
    }
    EXPECT_GT(special, 2000);  // rows 0 and 1, column 2
    expect_same_on_both_devices([](const Inputs& v) { return matmul(v[0].transpose(-1, -2), v[1]); },
                                {randn({4, 700, 256}), randn({4, 700, 300})}, 1e-3);
}

TEST(CudaBackend, SoftmaxAndLossesMatchTheCpu) {
    REQUIRE_GPU();
    const Tensor x = randn({4, 6, 5});
    expect_same_on_both_devices([](const Inputs& v) { return softmax(v[0], -1); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return softmax(v[0], 1); }, {x}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return log_softmax(v[0], 2); }, {x}, 1e-5);
    const Tensor target = Tensor::from_vector<int64_t>({0, 3, 2, 1, 4, 4, 0}, {7});
    expect_same_on_both_devices([](const Inputs& v) { return cross_entropy(v[0], v[1]); }, {randn({7, 5}), target}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return cross_entropy(v[0], v[1], Reduction::sum, 0.1); },
                                {randn({7, 5}), target}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return mse_loss(v[0], v[1]); }, {randn({3, 4}), randn({3, 4})}, 1e-6);
}

TEST(CudaBackend, IndexingAndJoiningMatchTheCpu) {
    REQUIRE_GPU();
    const Tensor x = randn({5, 4, 3});
    const Tensor picks = Tensor::from_vector<int64_t>({3, 0, 3, 1}, {4});
    expect_same_on_both_devices([](const Inputs& v) { return index_select(v[0], 1, v[1]); }, {x, picks}, 1e-6);
    const Tensor gather_index = Tensor::from_vector<int64_t>({0, 2, 1, 1, 0, 0}, {3, 2});
    expect_same_on_both_devices([](const Inputs& v) { return gather(v[0], 1, v[1]); }, {randn({3, 4}), gather_index}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return embedding(v[0], v[1]); },
                                {randn({6, 3}), Tensor::from_vector<int64_t>({5, 0, 5}, {3})}, 1e-6);
    expect_same_on_both_devices([](const Inputs& v) { return one_hot(v[0], 5); }, {picks}, 0, false);
    expect_same_on_both_devices([](const Inputs& v) { return cat({v[0], v[1]}, 1); }, {randn({2, 3}), randn({2, 4})}, 0);
    expect_same_on_both_devices([](const Inputs& v) { return stack({v[0], v[1]}, 0); }, {randn({2, 3}), randn({2, 3})}, 0);
}

TEST(CudaBackend, ConvolutionMatchesTheCpu) {
    REQUIRE_GPU();
    for (const Conv2dParams& params : {Conv2dParams{}, Conv2dParams{{2, 2}, {1, 1}, {1, 1}, 1},
                                       Conv2dParams{{1, 1}, {2, 2}, {2, 2}, 1}, Conv2dParams{{1, 1}, {1, 1}, {1, 1}, 4}}) {
        const int64_t groups = params.groups;
        expect_same_on_both_devices(
            [params](const Inputs& v) { return conv2d(v[0], v[1], v[2], params); },
            {randn({2, 4, 9, 8}), randn({8, 4 / groups, 3, 3}), randn({8})}, 1e-4);
    }
    expect_same_on_both_devices([](const Inputs& v) { return conv2d(v[0], v[1]); },
                                {randn({1, 3, 6, 6}, DType::f64), randn({2, 3, 3, 3}, DType::f64)}, 1e-10);
    // The bias gradient (our channel sums): float64, planes of an odd size (5 x 5), several images.
    expect_same_on_both_devices([](const Inputs& v) { return conv2d(v[0], v[1], v[2]); },
                                {randn({3, 3, 7, 7}, DType::f64), randn({2, 3, 3, 3}, DType::f64), randn({2}, DType::f64)},
                                1e-10);
}

namespace {

// Errors of a float32 convolution on the GPU (forward, input and weight gradients for a random output
// gradient g) against float64 on the CPU, each in units of float32's rounding (2^-24) times the sum
// of the absolute terms that make the entry (the same convolution of |x|, |w| and |g|): recursive
// float32 summation over n terms stays below n of those units.
struct ConvolutionErrors {
    double forward = 0, input = 0, weight = 0;
    Tensor output, input_gradient, weight_gradient;  // the GPU's results, on the CPU
};

ConvolutionErrors convolution_errors(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& params) {
    Tensor xg = x.to(kGpu), wg = w.to(kGpu), bg = b.to(kGpu);
    xg.set_requires_grad(true);
    wg.set_requires_grad(true);
    const Tensor out = conv2d(xg, wg, bg, params);
    const Tensor g = randn(out.shape());
    sum(out * g.to(kGpu)).backward();

    auto leaf = [](const Tensor& t) {
        Tensor copy = t.to(DType::f64);
        copy.set_requires_grad(true);
        return copy;
    };
    const Tensor x64 = leaf(x), w64 = leaf(w), b64 = b.to(DType::f64), g64 = g.to(DType::f64);
    const Tensor out64 = conv2d(x64, w64, b64, params);
    sum(out64 * g64).backward();
    const Tensor ax = leaf(abs(x)), aw = leaf(abs(w));
    const Tensor bound = conv2d(ax, aw, Tensor(), params);
    sum(bound * abs(g64)).backward();

    auto in_roundings = [](const Tensor& value, const Tensor& reference, const Tensor& scale) {
        const Tensor error = abs(value.to(Device::cpu()).to(DType::f64) - reference);
        return amax(error / ((scale + 1e-30) * std::ldexp(1.0, -24)), {}).item();
    };
    ConvolutionErrors errors;
    errors.output = out.detach().to(Device::cpu());
    errors.input_gradient = xg.grad().to(Device::cpu());
    errors.weight_gradient = wg.grad().to(Device::cpu());
    errors.forward = in_roundings(out.detach(), out64.detach(), bound.detach() + abs(b64).view({1, -1, 1, 1}));
    errors.input = in_roundings(xg.grad(), x64.grad(), ax.grad());
    errors.weight = in_roundings(wg.grad(), w64.grad(), aw.grad());
    return errors;
}

}  // namespace

// The implicit-GEMM convolutions on tensor cores (3xTF32), forced on (and Winograd off), over
// geometries that exercise their edges: partial tiles of output channels and pixels, odd pixel counts
// (columns crossing images), strides, padding, dilation, a non-square kernel, one image (k split
// among blocks). Each stays within float32's bound against float64 and gives other bits than cuDNN
// (so it really ran).
TEST(CudaBackend, ConvolutionOnTensorCoresIsFloat32Accurate) {
    REQUIRE_GPU();
    set_convolution_winograd(false);
    struct Case {
        std::string name;
        Shape x, w;
        Conv2dParams params;
    };
    const Conv2dParams padded{{1, 1}, {1, 1}, {1, 1}, 1};
    const std::vector<Case> cases = {
        {"72 outputs, 9 x 9, padding 1", {2, 8, 9, 9}, {72, 8, 3, 3}, padded},
        {"stride 2", {2, 4, 8, 8}, {16, 4, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, 1}},
        {"dilation 2", {2, 4, 10, 9}, {8, 4, 3, 3}, {{1, 1}, {2, 2}, {2, 2}, 1}},
        {"1 x 1, 7 x 7 planes", {3, 64, 7, 7}, {128, 64, 1, 1}, {{1, 1}, {0, 0}, {1, 1}, 1}},
        {"one image, deep", {1, 128, 6, 6}, {64, 128, 3, 3}, padded},
        {"5 x 3 kernel", {2, 4, 9, 8}, {12, 4, 5, 3}, {{1, 1}, {2, 1}, {1, 1}, 1}},
        {"several images and slices", {4, 32, 20, 20}, {64, 32, 3, 3}, padded},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const Conv2dParams& params = c.params;
        const Tensor x = randn(c.x), w = randn(c.w), b = randn({c.w[0]});
        set_convolution_tensor_cores(ConvolutionTensorCores::always);
        const ConvolutionErrors ours = convolution_errors(x, w, b, params);
        set_convolution_tensor_cores(ConvolutionTensorCores::off);
        const ConvolutionErrors cudnn = convolution_errors(x, w, b, params);
        set_convolution_tensor_cores(ConvolutionTensorCores::measured);
        const double taps = static_cast<double>(c.w[1] * c.w[2] * c.w[3]);
        const double pixels = static_cast<double>(ours.output.size(0) * ours.output.size(2) * ours.output.size(3));
        EXPECT_LT(ours.forward, taps) << "cuDNN: " << cudnn.forward;
        EXPECT_LT(ours.input, static_cast<double>(c.w[0] * c.w[2] * c.w[3])) << "cuDNN: " << cudnn.input;
        EXPECT_LT(ours.weight, pixels) << "cuDNN: " << cudnn.weight;
        EXPECT_GT(amax(abs(ours.output - cudnn.output), {}).item(), 0.0) << "the tensor-core convolution did not run";
    }
    set_convolution_winograd(true);
}

// The fused Winograd kernels (F(2x2, 3x3) for the forward and the input gradient, F(3x3, 2x2) for the
// weight gradient) over geometries that exercise their edges: output sizes with partial 2x2 tiles,
// channels that fill no whole slice of 8 or block of 64, output channels past one block of 32,
// paddings 0, 1 and 2 and unequal ones (the input gradient's padding is 2 - p), tiles over several
// blocks, splits and images. Errors in float32 roundings of the sum of |terms| against float64, next
// to the implicit GEMM's; the two must give different bits (so Winograd ran).
TEST(CudaBackend, ConvolutionByWinogradIsFloat32Accurate) {
    REQUIRE_GPU();
    struct Case {
        std::string name;
        Shape x, w;
        Conv2dParams params;
    };
    auto padding = [](int64_t h, int64_t w) { return Conv2dParams{{1, 1}, {h, w}, {1, 1}, 1}; };
    const std::vector<Case> cases = {
        {"16 -> 24 on 9 x 9, padding 1", {2, 16, 9, 9}, {24, 16, 3, 3}, padding(1, 1)},
        {"20 -> 72 on 12 x 10, padding 0", {3, 20, 12, 10}, {72, 20, 3, 3}, padding(0, 0)},
        {"padding 2", {2, 16, 7, 8}, {16, 16, 3, 3}, padding(2, 2)},
        {"paddings 1 and 0", {2, 16, 8, 11}, {32, 16, 3, 3}, padding(1, 0)},
        {"32 -> 64 on 20 x 20, four images", {4, 32, 20, 20}, {64, 32, 3, 3}, padding(1, 1)},
        {"80 -> 24 on 6 x 7", {2, 80, 6, 7}, {24, 80, 3, 3}, padding(1, 1)},
    };
    set_convolution_tensor_cores(ConvolutionTensorCores::always);
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const Tensor x = randn(c.x), w = randn(c.w), b = randn({c.w[0]});
        set_convolution_winograd(true);
        const ConvolutionErrors winograd = convolution_errors(x, w, b, c.params);
        set_convolution_winograd(false);
        const ConvolutionErrors direct = convolution_errors(x, w, b, c.params);
        set_convolution_winograd(true);
        std::printf("%s: winograd forward %.1f input %.1f weight %.1f; implicit GEMM %.1f %.1f %.1f\n", c.name.c_str(),
                    winograd.forward, winograd.input, winograd.weight, direct.forward, direct.input, direct.weight);
        EXPECT_LT(winograd.forward, 64.0) << "implicit GEMM: " << direct.forward;
        EXPECT_LT(winograd.input, 64.0) << "implicit GEMM: " << direct.input;
        EXPECT_LT(winograd.weight, 64.0) << "implicit GEMM: " << direct.weight;
        EXPECT_GT(amax(abs(winograd.output - direct.output), {}).item(), 0.0) << "the Winograd forward did not run";
        EXPECT_GT(amax(abs(winograd.input_gradient - direct.input_gradient), {}).item(), 0.0)
            << "the Winograd input gradient did not run";
        EXPECT_GT(amax(abs(winograd.weight_gradient - direct.weight_gradient), {}).item(), 0.0)
            << "the Winograd weight gradient did not run";
    }
    set_convolution_tensor_cores(ConvolutionTensorCores::measured);
}

// Operands the tensor-core convolutions do not take (taps not a multiple of 4, groups, float64) go to
// cuDNN even when they are forced on; a weight at an odd offset is reordered into place first.
TEST(CudaBackend, ConvolutionOutsideTheTensorCoreKernelsFallsBackToCudnn) {
    REQUIRE_GPU();
    set_convolution_tensor_cores(ConvolutionTensorCores::always);
    expect_same_on_both_devices(
        [](const Inputs& v) { return conv2d(v[0], v[1].narrow(0, 1, 8 * 4 * 9).view({8, 4, 3, 3}), v[2]); },
        {randn({2, 4, 6, 6}), randn({1 + 8 * 4 * 9}), randn({8})}, 1e-4);
    expect_same_on_both_devices([](const Inputs& v) { return conv2d(v[0], v[1], v[2]); },
                                {randn({2, 3, 6, 6}), randn({8, 3, 3, 3}), randn({8})}, 1e-4);
    expect_same_on_both_devices(
        [](const Inputs& v) { return conv2d(v[0], v[1], v[2], Conv2dParams{{1, 1}, {1, 1}, {1, 1}, 2}); },
        {randn({2, 8, 6, 6}), randn({8, 4, 3, 3}), randn({8})}, 1e-4);
    expect_same_on_both_devices([](const Inputs& v) { return conv2d(v[0], v[1], v[2]); },
                                {randn({2, 4, 6, 6}, DType::f64), randn({8, 4, 3, 3}, DType::f64), randn({8}, DType::f64)},
                                1e-10);
    set_convolution_tensor_cores(ConvolutionTensorCores::measured);
}

TEST(CudaBackend, NormalizationMatchesTheCpu) {
    REQUIRE_GPU();
    expect_same_on_both_devices([](const Inputs& v) { return layer_norm(v[0], {6}, v[1], v[2]); },
                                {randn({5, 6}), randn({6}), randn({6})}, 1e-5);
    expect_same_on_both_devices([](const Inputs& v) { return layer_norm(v[0], {3, 4}); }, {randn({2, 3, 4})}, 1e-5);
    for (bool training : {true, false}) {
        const Tensor running_mean = randn({3}), running_var = positive({3});
        Tensor cpu_mean = running_mean.clone(), cpu_var = running_var.clone();
        Tensor gpu_mean = running_mean.to(kGpu), gpu_var = running_var.to(kGpu);
        expect_same_on_both_devices(
            [&](const Inputs& v) {
                const bool on_gpu = v[0].device().is_cuda();
                return batch_norm(v[0], on_gpu ? gpu_mean : cpu_mean, on_gpu ? gpu_var : cpu_var, v[1], v[2], training, 0.1,
                                  1e-5);
            },
            {randn({4, 3, 5, 2}), randn({3}), randn({3})}, 1e-5);
        kasmina::testing::expect_tensors_close(gpu_mean.to(Device::cpu()), cpu_mean, 1e-6);
        kasmina::testing::expect_tensors_close(gpu_var.to(Device::cpu()), cpu_var, 1e-6);
    }
}

// The gradient of a sum reaches the normalization backwards as one value broadcast everywhere (every
// stride 0); the CUDA kernels read that value instead of an expanded copy. Layer norm on the
// warp-per-row path (1024) and the others (2052, 6); batch norm on [N, C] (packed or not), planes and
// small planes.
TEST(CudaBackend, NormalizationBackwardOfASumMatchesTheCpu) {
    REQUIRE_GPU();
    auto expect_gradients_match = [](const std::function<Tensor(const Inputs&)>& function, const Inputs& inputs,
                                     double tolerance) {
        Inputs cpu_inputs, gpu_inputs;
        for (const Tensor& x : inputs) {
            cpu_inputs.push_back(x.detach().clone().set_requires_grad(true));
            gpu_inputs.push_back(x.detach().to(kGpu).set_requires_grad(true));
        }
        sum(function(cpu_inputs)).backward();
        sum(function(gpu_inputs)).backward();
        for (size_t i = 0; i < inputs.size(); ++i) {
            SCOPED_TRACE(i);
            ASSERT_TRUE(gpu_inputs[i].grad().defined());
            kasmina::testing::expect_tensors_close(gpu_inputs[i].grad().to(Device::cpu()), cpu_inputs[i].grad(), tolerance);
        }
    };
    for (const int64_t n : {int64_t{1024}, int64_t{2052}, int64_t{6}}) {
        SCOPED_TRACE(n);
        expect_gradients_match([n](const Inputs& v) { return layer_norm(v[0], {n}, v[1], v[2]); },
                               {randn({37, n}), randn({n}), randn({n})}, 1e-4);
    }
    for (const Shape& shape : {Shape{300, 8}, Shape{300, 7}, Shape{4, 3, 16, 16}, Shape{3, 5, 7}}) {
        SCOPED_TRACE(shape_str(shape));
        const int64_t channels = shape[1];
        for (bool training : {true, false}) {
            const Tensor running_mean = randn({channels}), running_var = positive({channels});
            expect_gradients_match(
                [&](const Inputs& v) {
                    const Device device = v[0].device();
                    return batch_norm(v[0], running_mean.to(device), running_var.to(device), v[1], v[2], training, 0.1,
                                      1e-5);
                },
                // The weight gradient of a sum is the sum of xhat over the channel: zero but for the
                // rounding of the mean times the count (~1e-4 at 1,024 elements a channel, either device).
                {randn(shape), randn({channels}), randn({channels})}, 4e-4);
        }
    }
}

// The layouts the GPU normalization kernels choose between: layer norm one warp per float32 row
// (widths filling a lane's registers partly, fully, at the 2048 limit), the block-per-row kernel past it
// or for widths not a multiple of 4, and a row start that is not 16-byte aligned; batch norm with one
// element per channel and row ([N, C]), large planes, and the small-plane kernel, each where rows or
// planes split into packs of four floats (or two doubles) and where they do not; train and eval.
TEST(CudaBackend, NormalizationLayoutsMatchTheCpu) {
    REQUIRE_GPU();
    for (const int64_t n : {int64_t{8}, int64_t{200}, int64_t{1024}, int64_t{2048}, int64_t{2052}, int64_t{6}}) {
        SCOPED_TRACE(n);
        expect_same_on_both_devices([n](const Inputs& v) { return layer_norm(v[0], {n}, v[1], v[2]); },
                                    {randn({37, n}), randn({n}), randn({n})}, 1e-4);
        expect_same_on_both_devices([n](const Inputs& v) { return layer_norm(v[0], {n}); }, {randn({5, n}) * 3.0 + 2.0}, 1e-4);
    }
    {
        // more rows than the fused backward's blocks: each block sums the affine columns of several rows
        SCOPED_TRACE("2500 rows");
        expect_same_on_both_devices([](const Inputs& v) { return layer_norm(v[0], {64}, v[1], v[2]); },
                                    {randn({2500, 64}), randn({64}), randn({64})}, 1e-4);
        // the widest warp-per-row backward (eight packs a lane), several rows a warp
        expect_same_on_both_devices([](const Inputs& v) { return layer_norm(v[0], {1024}, v[1], v[2]); },
                                    {randn({1500, 1024}), randn({1024}), randn({1024})}, 1e-4);
    }
    {
        SCOPED_TRACE("row start not 16-byte aligned");
        const Tensor flat = randn({9 * 64 + 1});
        const Tensor cpu = layer_norm(flat.narrow(0, 1, 9 * 64).reshape({9, 64}), {64});
        const Tensor gpu = layer_norm(flat.to(kGpu).narrow(0, 1, 9 * 64).reshape({9, 64}), {64});
        kasmina::testing::expect_tensors_close(gpu.to(Device::cpu()), cpu, 1e-5);
    }
    for (const auto& [shape, dtype] : {std::pair{Shape{300, 7}, DType::f32}, std::pair{Shape{300, 8}, DType::f32},
                                       std::pair{Shape{130, 264}, DType::f32},  // two column tiles of the row sums, one partial
                                       std::pair{Shape{4, 3, 16, 16}, DType::f32}, std::pair{Shape{2, 3, 130}, DType::f32},
                                       std::pair{Shape{3, 5, 7}, DType::f32}, std::pair{Shape{70, 6}, DType::f64},
                                       std::pair{Shape{5, 2, 12, 12}, DType::f64}}) {
        SCOPED_TRACE(shape_str(shape) + (dtype == DType::f64 ? " float64" : " float32"));
        const int64_t channels = shape[1];
        for (bool training : {true, false}) {
            const Tensor running_mean = randn({channels}).to(dtype), running_var = positive({channels}).to(dtype);
            Tensor cpu_mean = running_mean.clone(), cpu_var = running_var.clone();
            Tensor gpu_mean = running_mean.to(kGpu), gpu_var = running_var.to(kGpu);
            expect_same_on_both_devices(
                [&](const Inputs& v) {
                    const bool on_gpu = v[0].device().is_cuda();
                    return batch_norm(v[0], on_gpu ? gpu_mean : cpu_mean, on_gpu ? gpu_var : cpu_var, v[1], v[2], training,
                                      0.1, 1e-5);
                },
                {(randn(shape) * 2.0 + 5.0).to(dtype), randn({channels}).to(dtype), randn({channels}).to(dtype)}, 1e-4);
            kasmina::testing::expect_tensors_close(gpu_mean.to(Device::cpu()), cpu_mean, 1e-5);
            kasmina::testing::expect_tensors_close(gpu_var.to(Device::cpu()), cpu_var, 1e-5);
        }
        // The batch count advances on the device, in the kernel that finishes the statistics.
        Tensor batches = Tensor::scalar(3.0, {.dtype = DType::i64}).to(kGpu);
        Tensor mean = Tensor::zeros({channels}, {.dtype = dtype}).to(kGpu), var = Tensor::ones({channels}, {.dtype = dtype}).to(kGpu);
        batch_norm(randn(shape).to(dtype).to(kGpu), mean, var, {}, {}, true, 0.1, 1e-5, batches);
        batch_norm(randn(shape).to(dtype).to(kGpu), mean, var, {}, {}, false, 0.1, 1e-5, batches);
        EXPECT_EQ(batches.to(Device::cpu()).item<int64_t>(), 4);
    }
    {
        // A spread of 0.05 on an offset of 300, against float64: the one-pass statistics (moments about
        // each channel's first value) keep the variance where raw moments would lose it to cancellation.
        SCOPED_TRACE("large offset");
        for (const Shape& shape : {Shape{512, 6}, Shape{8, 3, 12, 12}}) {
            const int64_t channels = shape[1];
            const Tensor x = randn(shape) * 0.05 + 300.0;
            Tensor mean64 = Tensor::zeros({channels}, {.dtype = DType::f64}), var64 = Tensor::ones({channels}, {.dtype = DType::f64});
            Tensor mean32 = Tensor::zeros({channels}).to(kGpu), var32 = Tensor::ones({channels}).to(kGpu);
            // momentum 1: the running statistics are the batch's (variance ~0.0025)
            const Tensor expected = batch_norm(x.to(DType::f64), mean64, var64, Tensor(), Tensor(), true, 1.0, 1e-5);
            const Tensor got = batch_norm(x.to(kGpu), mean32, var32, Tensor(), Tensor(), true, 1.0, 1e-5);
            kasmina::testing::expect_tensors_close(got.to(Device::cpu()).to(DType::f64), expected, 2e-3);
            kasmina::testing::expect_tensors_close(var32.to(Device::cpu()).to(DType::f64), var64, 2e-6);
            kasmina::testing::expect_tensors_close(mean32.to(Device::cpu()).to(DType::f64), mean64, 1e-6);
        }
    }
}

// Training batch norm of [N, C] with the batch held on chip (set_batch_norm_on_chip), on shapes that take
// it: a partial last block ([4099, 256]), the narrowest and widest channel counts it takes, and the
// benchmark's [8192, 1024], whose packs fill the shared memory. Against the CPU: the output, the
// running statistics and the batch count; against the two-pass kernels: close, but not
// the same bits (its sums run in another order), which shows that it ran; run twice: the same bits.
TEST(CudaBackend, BatchNormHeldOnChipMatchesTheCpu) {
    REQUIRE_GPU();
    const auto max_difference = [](const Tensor& a, const Tensor& b) {
        return max(abs(a.to(Device::cpu()) - b.to(Device::cpu()))).item<float>();
    };
    for (const Shape& shape : {Shape{2048, 512}, Shape{4099, 256}, Shape{1024, 4096}, Shape{8200, 128}, Shape{8192, 1024}}) {
        SCOPED_TRACE(shape_str(shape));
        const int64_t channels = shape[1];
        const Tensor x = randn(shape) * 2.0 + 5.0, weight = randn({channels}), bias = randn({channels});
        const Tensor running_mean = randn({channels}), running_var = positive({channels});
        Tensor cpu_mean = running_mean.clone(), cpu_var = running_var.clone();
        Tensor gpu_mean = running_mean.to(kGpu), gpu_var = running_var.to(kGpu);
        Tensor batches = Tensor::scalar(3.0, {.dtype = DType::i64}).to(kGpu);
        expect_same_on_both_devices(
            [&](const Inputs& v) {
                const bool on_gpu = v[0].device().is_cuda();
                return batch_norm(v[0], on_gpu ? gpu_mean : cpu_mean, on_gpu ? gpu_var : cpu_var, v[1], v[2], true, 0.1,
                                  1e-5, on_gpu ? batches : Tensor());
            },
            {x, weight, bias}, 1e-4, /*backward=*/false);  // the backward runs the two-pass kernels (tested above)
        kasmina::testing::expect_tensors_close(gpu_mean.to(Device::cpu()), cpu_mean, 1e-5);
        kasmina::testing::expect_tensors_close(gpu_var.to(Device::cpu()), cpu_var, 1e-5);
        EXPECT_EQ(batches.to(Device::cpu()).item<int64_t>(), 4);

        const auto forward = [&](Tensor& mean, Tensor& var) {
            mean = running_mean.to(kGpu);
            var = running_var.to(kGpu);
            return batch_norm(x.to(kGpu), mean, var, weight.to(kGpu), bias.to(kGpu), true, 0.1, 1e-5);
        };
        Tensor on_chip_mean, on_chip_var, again_mean, again_var, two_pass_mean, two_pass_var;
        const Tensor on_chip = forward(on_chip_mean, on_chip_var), again = forward(again_mean, again_var);
        set_batch_norm_on_chip(false);
        const Tensor two_pass = forward(two_pass_mean, two_pass_var);
        set_batch_norm_on_chip(true);
        EXPECT_EQ(max_difference(on_chip, again), 0.0f);
        EXPECT_EQ(max_difference(on_chip_var, again_var), 0.0f);
        kasmina::testing::expect_tensors_close(on_chip.to(Device::cpu()), two_pass.to(Device::cpu()), 1e-5);
        kasmina::testing::expect_tensors_close(on_chip_var.to(Device::cpu()), two_pass_var.to(Device::cpu()), 1e-5);
        EXPECT_GT(max_difference(on_chip_var, two_pass_var) + max_difference(on_chip_mean, two_pass_mean), 0.0f)
            << "the same bits as the two-pass kernels: the on-chip kernel did not run";
    }
    {
        // A spread of 0.05 on an offset of 300, against float64 (as in NormalizationLayoutsMatchTheCpu).
        SCOPED_TRACE("large offset");
        const Tensor x = randn({2048, 512}) * 0.05 + 300.0;
        Tensor mean64 = Tensor::zeros({512}, {.dtype = DType::f64}), var64 = Tensor::ones({512}, {.dtype = DType::f64});
        Tensor mean32 = Tensor::zeros({512}).to(kGpu), var32 = Tensor::ones({512}).to(kGpu);
        const Tensor expected = batch_norm(x.to(DType::f64), mean64, var64, Tensor(), Tensor(), true, 1.0, 1e-5);
        const Tensor got = batch_norm(x.to(kGpu), mean32, var32, Tensor(), Tensor(), true, 1.0, 1e-5);
        kasmina::testing::expect_tensors_close(got.to(Device::cpu()).to(DType::f64), expected, 2e-3);
        kasmina::testing::expect_tensors_close(var32.to(Device::cpu()).to(DType::f64), var64, 2e-6);
        kasmina::testing::expect_tensors_close(mean32.to(Device::cpu()).to(DType::f64), mean64, 1e-6);
    }
}

TEST(CudaBackend, SeedBlendMatchesTheCpuIncludingAlphaGradients) {
    REQUIRE_GPU();
    const Tensor alphas = Tensor::from_vector<double>({0.7, 0.6}, {2}).set_requires_grad(true);
    const Tensor alphas_gpu_run = Tensor::from_vector<double>({0.7, 0.6}, {2}).set_requires_grad(true);
    expect_same_on_both_devices(
        [&](const Inputs& v) { return blend_seeds(v[0], {v[1], v[2]}, v[0].device().is_cuda() ? alphas_gpu_run : alphas); },
        {randn({3, 5}), randn({3, 5}), randn({3, 5})}, 1e-6);
    kasmina::testing::expect_tensors_close(alphas_gpu_run.grad(), alphas.grad(), 1e-5);
}

TEST(CudaBackend, GuardedBlendMatchesTheCpuWithoutReadingTheGuards) {
    REQUIRE_GPU();
    for (bool first : {true, false}) {
        for (bool second : {true, false}) {
            SCOPED_TRACE(std::to_string(first) + std::to_string(second));
            const Tensor alphas = Tensor::from_vector<double>({0.7, 0.6}, {2}).set_requires_grad(true);
            const Tensor alphas_gpu_run = Tensor::from_vector<double>({0.7, 0.6}, {2}).set_requires_grad(true);
            const Tensor guard0 = Tensor::scalar(first ? 1.0 : 0.0).to(DType::boolean);
            const Tensor guard1 = Tensor::scalar(second ? 1.0 : 0.0).to(DType::boolean);
            expect_same_on_both_devices(
                [&](const Inputs& v) {
                    const bool on_gpu = v[0].device().is_cuda();
                    const Device device = v[0].device();
                    return blend_seeds(v[0], {v[1], v[2]}, on_gpu ? alphas_gpu_run : alphas, {guard0.to(device), guard1.to(device)});
                },
                {randn({30, 50}), randn({30, 50}), randn({30, 50})}, 1e-5);
            kasmina::testing::expect_tensors_close(alphas_gpu_run.grad(), alphas.grad(), 1e-5);
        }
    }
}

// The vectorized elementwise path with single values broadcast: a 0-d operand on either side, an
// expanded scalar, a 0-d condition of where, three inputs with two of them uniform, and counts with a
// tail past the last full pack of four.
TEST(CudaBackend, ElementwiseWithBroadcastScalarsMatchesTheCpu) {
    REQUIRE_GPU();
    // The 0-d operands' gradients sum thousands of float32 terms, in another order on each device.
    constexpr double kTolerance = 1e-5;
    for (const int64_t count : {int64_t{1}, int64_t{7}, int64_t{4099}}) {
        SCOPED_TRACE(count);
        expect_same_on_both_devices([](const Inputs& v) { return v[0] * v[1]; }, {randn({count}), randn({})}, kTolerance);
        expect_same_on_both_devices([](const Inputs& v) { return v[1] - v[0]; }, {randn({count}), randn({})}, kTolerance);
        expect_same_on_both_devices([count](const Inputs& v) { return v[0] + v[1].expand({count}); }, {randn({count}), randn({})},
                                    kTolerance);
        expect_same_on_both_devices([](const Inputs& v) { return v[0] * 0.25 + 1.5; }, {randn({count})}, kTolerance);
        for (bool flag : {true, false}) {
            const Tensor condition = Tensor::scalar(flag ? 1.0 : 0.0).to(DType::boolean);
            expect_same_on_both_devices(
                [&](const Inputs& v) { return where(condition.to(v[0].device()), v[0], v[1]); }, {randn({count}), randn({count})},
                kTolerance);
            expect_same_on_both_devices(
                [&](const Inputs& v) { return where(condition.to(v[0].device()), v[0], v[1]); }, {randn({count}), randn({})}, kTolerance);
        }
    }
}

TEST(CudaBackend, DropoutDrawsTheSameMaskOnBothDevices) {
    REQUIRE_GPU();
    Generator cpu_generator(42), gpu_generator(42);
    const Tensor x = Tensor::ones({1000});
    const Tensor cpu_mask = dropout(x, 0.3, true, &cpu_generator);
    const Tensor gpu_mask = dropout(x.to(kGpu), 0.3, true, &gpu_generator);
    EXPECT_EQ(gpu_mask.to(Device::cpu()).to_vector<float>(), cpu_mask.to_vector<float>());
}

TEST(CudaAllocator, ReusesFreedBlocksWithoutNewDeviceAllocations) {
    REQUIRE_GPU();
    Allocator& allocator = allocator_for(kGpu);
    {  // one block of each size class the loop uses (a 4 MiB segment, a small-pool segment)
        Tensor large = Tensor::empty({1 << 20}, {.device = kGpu});
        Tensor small = Tensor::empty({1000}, {.device = kGpu});
    }
    const AllocatorStats before = allocator.stats();
    for (int i = 0; i < 100; ++i) {
        Tensor a = Tensor::empty({1 << 20}, {.device = kGpu});
        Tensor b = Tensor::empty({1000}, {.device = kGpu});
    }
    const AllocatorStats after = allocator.stats();
    EXPECT_EQ(after.device_allocations, before.device_allocations) << "steady state: no cudaMalloc";
    EXPECT_EQ(after.allocations, before.allocations + 200);
    EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
    EXPECT_GE(after.peak_bytes, uint64_t{4} << 20);
    EXPECT_GE(after.reserved_bytes, after.bytes_in_use);
    allocator.empty_cache();
    EXPECT_LE(allocator.stats().reserved_bytes, after.reserved_bytes);
}

TEST(CudaBackend, FiniteFlagMatchesTheCpuWithoutReadingBack) {
    REQUIRE_GPU();
    for (DType dtype : {DType::f32, DType::f64}) {
        const Tensor x = Tensor::randn({700, 900}).to(dtype);  // more elements than the grid's threads
        EXPECT_TRUE(kernels::finite_flag(x.to(kGpu)).to(Device::cpu()).item<bool>());
        for (double bad : {std::numeric_limits<double>::quiet_NaN(), -std::numeric_limits<double>::infinity()})
            for (int64_t at : {int64_t{0}, int64_t{700 * 900 - 1}, int64_t{345678}}) {
                Tensor y = x.clone();
                y.view({-1}).narrow(0, at, 1).fill_(bad);
                const Tensor flag = kernels::finite_flag(y.to(kGpu));
                EXPECT_EQ(flag.device(), kGpu);
                EXPECT_EQ(flag.dtype(), DType::boolean);
                EXPECT_FALSE(flag.to(Device::cpu()).item<bool>()) << dtype_name(dtype) << " at " << at;
                EXPECT_EQ(flag.to(Device::cpu()).item<bool>(), kernels::finite_flag(y).item<bool>());
            }
    }
    EXPECT_TRUE(kernels::finite_flag(Tensor::zeros({0}).to(kGpu)).to(Device::cpu()).item<bool>());
    // A count that does not split into packs of four (the one-element loads).
    Tensor odd = Tensor::randn({7, 13});
    EXPECT_TRUE(kernels::finite_flag(odd.to(kGpu)).to(Device::cpu()).item<bool>());
    odd.view({-1}).narrow(0, 90, 1).fill_(std::numeric_limits<double>::infinity());
    EXPECT_FALSE(kernels::finite_flag(odd.to(kGpu)).to(Device::cpu()).item<bool>());
}
