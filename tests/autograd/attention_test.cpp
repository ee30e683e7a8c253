// scaled_dot_product_attention: the composed path against its definition and float64 finite
// differences (CPU); the fused CUDA kernels against the CPU (float32: outputs and q/k/v gradients
// over head dims 8-128, masks of every broadcast, causal with L != S, non-contiguous operands),
// float64 finite differences on the GPU, determinism, NaN for fully masked rows as the composition,
// and the memory the fused path saves (no whole score tensor; at most the backward's workspace). GPU tests skip without a device.
#include <cmath>
#include <limits>

#include "kasmina.h"
#include "kernels/attention.h"
#include "kernels/settings.h"
#include "runtime/allocator.h"
#include "test_util.h"

using namespace kasmina;
using Inputs = std::vector<Tensor>;

namespace {

using kasmina::testing::kGpu;
constexpr double kInf = std::numeric_limits<double>::infinity();

using kasmina::testing::randn;

// An additive mask with about a quarter of the entries -inf (never a whole row).
Tensor sparse_mask(const Shape& shape, DType dtype = DType::f32) {
    Tensor values = randn(shape, dtype);
    const Tensor hidden = lt(Tensor::rand(shape, {.dtype = dtype}), Tensor::full({}, 0.25, {.dtype = dtype}));
    Tensor mask = masked_fill(values * 0.5, hidden, -kInf);
    // keep column 0 visible so no row is fully masked
    mask.narrow(-1, 0, 1).copy_(values.narrow(-1, 0, 1));
    return mask;
}

struct Case {
    int64_t batch, heads, target, source, head_dim;
};

// Output and q/k/v gradients of sum(attention * weights) on `device`.
std::vector<Tensor> attention_and_grads(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                                        const Tensor& weights, Device device) {
    Tensor dq = q.detach().to(device).set_requires_grad(true), dk = k.detach().to(device).set_requires_grad(true);
    Tensor dv = v.detach().to(device).set_requires_grad(true);
    const Tensor out = scaled_dot_product_attention(dq, dk, dv, mask.defined() ? mask.to(device) : Tensor(), causal);
    sum(out * weights.to(device)).backward();
    return {out.detach().to(Device::cpu()), dq.grad().to(Device::cpu()), dk.grad().to(Device::cpu()),
            dv.grad().to(Device::cpu())};
}

void expect_fused_matches_cpu(const Case& c, const Tensor& mask, bool causal, double tolerance = 2e-5) {
    SCOPED_TRACE(::testing::Message() << "B=" << c.batch << " H=" << c.heads << " L=" << c.target << " S=" << c.source
                                      << " D=" << c.head_dim << " mask=" << (mask.defined() ? shape_str(mask.shape()) : "none")
                                      << " causal=" << causal);
    const Tensor q = randn({c.batch, c.heads, c.target, c.head_dim}), k = randn({c.batch, c.heads, c.source, c.head_dim});
    const Tensor v = randn({c.batch, c.heads, c.source, c.head_dim}), weights = randn({c.batch, c.heads, c.target, c.head_dim});
    ASSERT_TRUE(kernels::fused_attention_supported(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.defined() ? mask.to(kGpu) : Tensor()));
    const std::vector<Tensor> cpu = attention_and_grads(q, k, v, mask, causal, weights, Device::cpu());
    const std::vector<Tensor> gpu = attention_and_grads(q, k, v, mask, causal, weights, kGpu);
    const char* names[] = {"output", "grad q", "grad k", "grad v"};
    for (int i = 0; i < 4; ++i) {
        SCOPED_TRACE(names[i]);
        kasmina::testing::expect_tensors_close(gpu[i], cpu[i], tolerance);
    }
}

}  // namespace

TEST(Attention, ComposedPathIsSoftmaxOfScaledScoresTimesValues) {
    const Tensor q = randn({2, 3, 5, 4}), k = randn({2, 3, 7, 4}), v = randn({2, 3, 7, 6}), mask = sparse_mask({5, 7});
    const Tensor expected = matmul(softmax(matmul(q, k.transpose(-1, -2)) * 0.5 + mask, -1), v);
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q, k, v, mask), expected, 1e-5);
    const Tensor scaled = matmul(softmax(matmul(q, k.transpose(-1, -2)) * 0.125 + mask, -1), v);
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q, k, v, mask, false, 0.125), scaled, 1e-5);
}

TEST(Attention, BoolMaskSelectsTheKeysThatTakePart) {
    const Tensor q = randn({4, 5, 8}), k = randn({4, 6, 8}), v = randn({4, 6, 8});
    const Tensor keep = ge(Tensor::rand({5, 6}), Tensor::full({}, 0.3)).to(DType::boolean);
    keep.narrow(1, 0, 1).fill_(1.0);
    const Tensor additive = masked_fill(Tensor::zeros({5, 6}), eq(keep.to(DType::f32), Tensor::zeros({})), -kInf);
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q, k, v, keep),
                                           scaled_dot_product_attention(q, k, v, additive), 1e-6);
}

TEST(Attention, CausalHidesLaterKeysTopLeftAligned) {
    const Tensor q = randn({1, 4, 8}), k = randn({1, 6, 8}), v = randn({1, 6, 3});
    const Tensor mask = causal_mask(4, 6, q);
    kasmina::testing::expect_values(mask.narrow(0, 1, 1).reshape({6}), {0, 0, -kInf, -kInf, -kInf, -kInf});
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q, k, v, Tensor(), true),
                                           scaled_dot_product_attention(q, k, v, mask), 1e-6);
    // the first query row sees only the first key: its output is that key's value
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q, k, v, Tensor(), true).narrow(1, 0, 1),
                                           v.narrow(1, 0, 1), 1e-6);
}

TEST(Attention, GradientsMatchFiniteDifferences) {
    using kasmina::testing::random_leaf;
    const Tensor q = random_leaf({2, 2, 3, 4}), k = random_leaf({2, 2, 5, 4}), v = random_leaf({2, 2, 5, 3});
    const Tensor mask = random_leaf({2, 1, 3, 5}, 0.5);
    EXPECT_GRADCHECK([](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], x[3]); }, {q, k, v, mask});
    EXPECT_GRADCHECK([](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), true); }, {q, k, v});
}

TEST(Attention, BadOperandsNameTheOpAndShapes) {
    EXPECT_THROW_WITH(scaled_dot_product_attention(randn({2, 3, 4}), randn({2, 5, 6}), randn({2, 5, 6})), ShapeError,
                      "scaled_dot_product_attention");
    EXPECT_THROW_WITH(scaled_dot_product_attention(randn({2, 3, 4}), randn({2, 5, 4}), randn({2, 6, 4})), ShapeError,
                      "[2, 6, 4]");
    EXPECT_THROW_WITH(scaled_dot_product_attention(randn({4}), randn({4}), randn({4})), ShapeError, "[..., L, D]");
    EXPECT_THROW_WITH(scaled_dot_product_attention(randn({3, 4}), randn({5, 4}), randn({5, 4}), Tensor::zeros({3, 5}, {.dtype = DType::i64})),
                      DTypeError, "mask");
}

TEST(Attention, FusedKernelsAreGpuOnly) {
    const Tensor q = randn({1, 1, 2, 4});
    EXPECT_FALSE(kernels::fused_attention_supported(q, q, q, Tensor()));
    EXPECT_THROW_WITH(kernels::attention_forward(q, q, q, Tensor(), false, 1.0), DeviceError, "CUDA");
}

// Runs `body` on each path of the fused kernels: tensor cores (the default for float32 with head dims
// up to 64), then CUDA cores with the backward's default workspace (chunks of heads through cuBLAS)
// and with none (the tiled kernels).
template <typename Body>
void for_every_kernel_path(const Body& body) {
    const size_t workspace = attention_workspace_bytes();
    struct Path {
        const char* name;
        bool tensor_cores;
        size_t workspace;
    };
    for (const Path& path : {Path{"tensor cores", true, workspace}, Path{"CUDA cores, chunked backward", false, workspace},
                             Path{"CUDA cores, tiled backward", false, 0}}) {
        SCOPED_TRACE(path.name);
        set_attention_tensor_cores(path.tensor_cores);
        set_attention_workspace_bytes(path.workspace);
        body();
    }
    set_attention_tensor_cores(true);
    set_attention_workspace_bytes(workspace);
}

TEST(AttentionOnCuda, FusedMatchesTheCpuOverHeadDimsAndMasks) {
    REQUIRE_GPU();
    for_every_kernel_path([] {
    // Whole tiles of 64 queries and keys, without a mask and not causal, take the tensor-core kernels'
    // plain build (head dims 64 and 32, one tile and several); the rest and the masked runs the general one.
    for (const Case& c : {Case{2, 3, 37, 53, 16}, Case{1, 2, 64, 64, 64}, Case{1, 2, 128, 256, 64}, Case{2, 2, 192, 128, 32},
                          Case{1, 2, 300, 257, 64}, Case{2, 2, 70, 129, 80}, Case{1, 2, 65, 31, 128}, Case{3, 1, 1, 1, 8},
                          Case{1, 1, 200, 150, 32}}) {
        expect_fused_matches_cpu(c, Tensor(), false);
        expect_fused_matches_cpu(c, sparse_mask({c.target, c.source}), false);                      // [L, S]
        expect_fused_matches_cpu(c, sparse_mask({c.batch, 1, 1, c.source}), false);                 // key padding
        expect_fused_matches_cpu(c, sparse_mask({c.batch, c.heads, c.target, c.source}), false);    // per head
        expect_fused_matches_cpu(c, Tensor(), true);
        expect_fused_matches_cpu(c, sparse_mask({c.batch, 1, 1, c.source}), true);
    }
    });
}

// The tensor-core kernels' plain build (no mask, not causal, whole tiles of 64 queries and keys, 16-byte
// rows), output and gradients, with head dims 64 and 32 and several tiles each way: small enough for
// the GPU suite's racecheck pass, which leaves the sweep above to memcheck.
TEST(AttentionOnCuda, WholeTilesTakeThePlainBuild) {
    REQUIRE_GPU();
    for (const Case& c : {Case{1, 2, 128, 192, 64}, Case{2, 1, 192, 64, 32}}) expect_fused_matches_cpu(c, Tensor(), false);
}

TEST(AttentionOnCuda, NonContiguousOperandsAndTheComposedGpuPathAgree) {
    REQUIRE_GPU();
    // heads split from [B, L, H*D] the way MultiheadAttention does: strided, unit stride along D
    const Tensor q = randn({2, 45, 4, 32}).to(kGpu).transpose(1, 2), k = randn({2, 61, 4, 32}).to(kGpu).transpose(1, 2);
    const Tensor v = randn({2, 61, 4, 32}).to(kGpu).transpose(1, 2), mask = sparse_mask({45, 61}).to(kGpu);
    const Tensor fused = scaled_dot_product_attention(q, k, v, mask, true);
    set_fused_attention(false);
    const Tensor composed = scaled_dot_product_attention(q, k, v, mask, true);
    set_fused_attention(true);
    kasmina::testing::expect_tensors_close(fused.to(Device::cpu()), composed.to(Device::cpu()), 2e-5);
    // a head dim not contiguous in memory is made dense first
    const Tensor q_cols = randn({1, 2, 32, 9}).to(kGpu).transpose(2, 3), k_cols = randn({1, 2, 32, 11}).to(kGpu).transpose(2, 3);
    const Tensor v_cols = randn({1, 2, 32, 11}).to(kGpu).transpose(2, 3);
    kasmina::testing::expect_tensors_close(scaled_dot_product_attention(q_cols, k_cols, v_cols).to(Device::cpu()),
                                           scaled_dot_product_attention(q_cols.to(Device::cpu()), k_cols.to(Device::cpu()),
                                                                        v_cols.to(Device::cpu())),
                                           2e-5);
}

TEST(AttentionOnCuda, GradientsAreLaidOutAsTheirOperands) {
    REQUIRE_GPU();
    // heads split from [B, L, H * D]: gradients stored [B, L, H, D], so merging the heads is a view
    const Tensor split = randn({2, 40, 4, 16}).to(kGpu).transpose(1, 2), dense = randn({2, 4, 40, 16}).to(kGpu);
    for (const Tensor& operand : {split, dense}) {
        const kernels::AttentionForward forward = kernels::attention_forward(operand, operand, operand, Tensor(), false, 0.25);
        const kernels::AttentionGrads grads =
            kernels::attention_backward(randn({2, 4, 40, 16}).to(kGpu), operand, operand, operand, Tensor(), false, 0.25, forward);
        for (const Tensor& grad : {grads.q, grads.k, grads.v}) EXPECT_EQ(grad.strides(), operand.strides());
    }
}

TEST(AttentionOnCuda, Float64GradientsMatchFiniteDifferences) {
    REQUIRE_GPU();
    using kasmina::testing::random_leaf;
    const Tensor q = random_leaf({1, 2, 5, 8}), k = random_leaf({1, 2, 7, 8}), v = random_leaf({1, 2, 7, 8});
    const Tensor mask = sparse_mask({1, 1, 5, 7}, DType::f64);
    auto on_gpu = [&](bool causal) {
        return [=](const Inputs& x) {
            return scaled_dot_product_attention(x[0].to(kGpu), x[1].to(kGpu), x[2].to(kGpu), mask.to(kGpu), causal)
                .to(Device::cpu());
        };
    };
    ASSERT_TRUE(kernels::fused_attention_supported(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.to(kGpu)));
    for_every_kernel_path([&] {
        EXPECT_GRADCHECK(on_gpu(false), {q, k, v});
        EXPECT_GRADCHECK(on_gpu(true), {q, k, v});
    });
}

TEST(AttentionOnCuda, BackwardIsDeterministic) {
    REQUIRE_GPU();
    const Tensor q = randn({2, 4, 300, 64}), k = randn({2, 4, 300, 64}), v = randn({2, 4, 300, 64});
    const Tensor weights = randn({2, 4, 300, 64});
    for_every_kernel_path([&] {
        const std::vector<Tensor> first = attention_and_grads(q, k, v, Tensor(), false, weights, kGpu);
        const std::vector<Tensor> second = attention_and_grads(q, k, v, Tensor(), false, weights, kGpu);
        for (int i = 0; i < 4; ++i) EXPECT_EQ(first[i].to_vector<float>(), second[i].to_vector<float>()) << "result " << i;
    });
}

TEST(AttentionOnCuda, FullyMaskedRowsGiveNanLikeTheComposition) {
    REQUIRE_GPU();
    const Tensor q = randn({1, 1, 3, 8}), k = randn({1, 1, 4, 8}), v = randn({1, 1, 4, 8});
    Tensor mask = Tensor::zeros({3, 4});
    mask.narrow(0, 1, 1).fill_(-kInf);
    const Tensor fused = scaled_dot_product_attention(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.to(kGpu)).to(Device::cpu());
    const Tensor composed = scaled_dot_product_attention(q, k, v, mask);
    const std::vector<double> values = fused.to_vector<double>(), expected = composed.to_vector<double>();
    for (size_t i = 0; i < values.size(); ++i) {
        if (std::isnan(expected[i])) EXPECT_TRUE(std::isnan(values[i])) << i;
        else EXPECT_NEAR(values[i], expected[i], 1e-5) << i;
    }
}

TEST(AttentionOnCuda, FusedPathHoldsAtMostItsWorkspaceOfScores) {
    REQUIRE_GPU();
    const int64_t batch = 2, heads = 4, length = 1024, head_dim = 64;
    const uint64_t operand_bytes = static_cast<uint64_t>(batch * heads * length * head_dim * 4);  // 2 MiB
    Tensor q = randn({batch, heads, length, head_dim}).to(kGpu).set_requires_grad(true);
    Tensor k = randn({batch, heads, length, head_dim}).to(kGpu).set_requires_grad(true);
    Tensor v = randn({batch, heads, length, head_dim}).to(kGpu).set_requires_grad(true);
    Allocator& allocator = allocator_for(kGpu);
    auto peak_bytes = [&](size_t workspace) {
        set_attention_workspace_bytes(workspace);
        q.set_grad({}), k.set_grad({}), v.set_grad({});
        synchronize(kGpu);
        const uint64_t before = allocator.stats().bytes_in_use;
        uint64_t peak = 0;
        {
            const Tensor out = scaled_dot_product_attention(q, k, v, Tensor(), true);
            peak = std::max(peak, allocator.stats().bytes_in_use - before);
            sum(out).backward();
            peak = std::max(peak, allocator.stats().bytes_in_use - before);
        }
        return peak;
    };
    const size_t default_workspace = attention_workspace_bytes();
    // outputs, log-sum-exp, three gradients, the sum's gradient, scratch: a few operands, no scores
    EXPECT_LT(peak_bytes(0), 8 * operand_bytes);
    // chunks of 2 heads (two 8 MiB score buffers): a quarter of the 32 MiB score tensor at a time
    EXPECT_LT(peak_bytes(16 << 20), 8 * operand_bytes + (16 << 20));
    set_attention_workspace_bytes(default_workspace);
}

TEST(AttentionOnCuda, MultiheadAttentionUsesTheFusedPathAndMatchesTheCpu) {
    REQUIRE_GPU();
    nn::MultiheadAttention cpu_layer(64, 4, {.batch_first = true});
    nn::MultiheadAttention gpu_layer(64, 4, {.batch_first = true});
    gpu_layer.load_state_dict(cpu_layer.state_dict());
    gpu_layer.to(kGpu);
    const Tensor x = randn({3, 50, 64});
    const Tensor padding = ge(Tensor::rand({3, 50}), Tensor::full({}, 0.8)).to(DType::boolean);
    padding.narrow(1, 0, 1).fill_(0.0);
    for (bool causal : {false, true}) {
        Tensor x_cpu = x.clone().set_requires_grad(true), x_gpu = x.to(kGpu).set_requires_grad(true);
        const nn::AttentionCall call{.key_padding_mask = padding, .need_weights = false, .is_causal = causal};
        nn::AttentionCall gpu_call = call;
        gpu_call.key_padding_mask = padding.to(kGpu);
        const Tensor out_cpu = cpu_layer.forward(x_cpu, x_cpu, x_cpu, call).first;
        const Tensor out_gpu = gpu_layer.forward(x_gpu, x_gpu, x_gpu, gpu_call).first;
        kasmina::testing::expect_tensors_close(out_gpu.to(Device::cpu()), out_cpu, 2e-5);
        sum(out_cpu * out_cpu).backward();
        sum(out_gpu * out_gpu).backward();
        kasmina::testing::expect_tensors_close(x_gpu.grad().to(Device::cpu()), x_cpu.grad(), 1e-4);
        kasmina::testing::expect_tensors_close(gpu_layer.in_proj_weight.grad().to(Device::cpu()), cpu_layer.in_proj_weight.grad(), 1e-4);
        cpu_layer.zero_grad();
        gpu_layer.zero_grad();
    }
}
