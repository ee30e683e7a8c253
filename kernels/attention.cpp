// Checks and output allocation for the fused attention kernels, above the CUDA backend.
#include "kernels/attention.h"

#include "kernels/backend.h"
#include "kernels/kernels.h"
#include "kernels/settings.h"

namespace kasmina::kernels {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

// The unit stride along head_dim the kernels read with; anything else is made dense.
Tensor rows_dense(const Tensor& t) { return t.stride(3) == 1 ? t : t.detach().contiguous(); }

void check_operands(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
    if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
        raise<ShapeError>(kOp, "expected q, k, v of rank 4 [batch, heads, length, head_dim], got q ", shape_str(q.shape()),
                          ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
    if (k.shape() != v.shape() || k.size(0) != q.size(0) || k.size(1) != q.size(1) || k.size(3) != q.size(3))
        raise<ShapeError>(kOp, "expected k and v [", q.size(0), ", ", q.size(1), ", S, ", q.size(3), "] for q ",
                          shape_str(q.shape()), ", got k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
    common_device(kOp, {&q, &k, &v});
    check_same_dtype(kOp, q, k);
    check_same_dtype(kOp, q, v);
    if (!is_floating(q.dtype())) raise<DTypeError>(kOp, "expected floating q, k, v, got ", q.describe());
    if (mask.defined()) {
        check_same_dtype(kOp, q, mask);
        common_device(kOp, {&q, &mask});
        const Shape scores{q.size(0), q.size(1), q.size(2), k.size(2)};
        if (mask.dim() > 4 || broadcast_shapes(mask.shape(), scores, kOp) != scores)
            raise<ShapeError>(kOp, "mask ", shape_str(mask.shape()), " does not broadcast to the scores ", shape_str(scores));
    }
    if (!fused_attention_supported(q, k, v, mask))
        raise<DeviceError>(kOp, "the fused kernel needs a CUDA device and head_dim <= 128 (float32) or <= 64 (float64), got ",
                           q.describe());
}

}  // namespace

bool fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
#ifdef KASMINA_WITH_CUDA
    if (!q.device().is_cuda() || k.device() != q.device() || v.device() != q.device()) return false;
    if (mask.defined() && mask.device() != q.device()) return false;
    if (q.dim() != 4 || (q.dtype() != DType::f32 && q.dtype() != DType::f64)) return false;
    return q.size(3) <= cuda::max_fused_attention_head_dim(q.dtype());
#else
    (void)q, (void)k, (void)v, (void)mask;
    return false;
#endif
}

AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                                   double scale) {
    check_operands(q, k, v, mask);
    select_backend(q.device(), kOp);
    const int64_t batch = q.size(0), heads = q.size(1), target = q.size(2), head_dim = q.size(3);
    AttentionForward forward;
    forward.output = Tensor::empty({batch, target, heads, head_dim}, q.options()).transpose(1, 2);
    forward.logsumexp = Tensor::empty({batch, heads, target}, q.options());
    const Tensor scores_mask = mask.defined() ? mask.expand({batch, heads, target, k.size(2)}) : Tensor();
#ifdef KASMINA_WITH_CUDA
    cuda::attention_forward(rows_dense(q), rows_dense(k), rows_dense(v), scores_mask, causal, scale, forward.output,
                            forward.logsumexp, attention_tensor_cores());
#endif
    return forward;
}

AttentionGrads attention_backward(const Tensor& grad_output, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& mask, bool causal, double scale, const AttentionForward& forward) {
    check_operands(q, k, v, mask);
    if (grad_output.shape() != q.shape())
        raise<ShapeError>("scaled_dot_product_attention_backward", "gradient ", shape_str(grad_output.shape()),
                          " does not match the output ", shape_str(q.shape()));
    select_backend(q.device(), kOp);
    AttentionGrads grads;
    // Each gradient laid out as its operand: stored [B, L, H, D] for heads split from [B, L, H * D]
    // projections (MultiheadAttention), so they merge back as views without a copy; else dense.
    auto laid_out_as = [](const Tensor& t) {
        if (t.stride(1) >= t.stride(2)) return Tensor::empty(t.shape(), t.options());
        return Tensor::empty({t.size(0), t.size(2), t.size(1), t.size(3)}, t.options()).transpose(1, 2);
    };
    grads.q = laid_out_as(q);
    grads.k = laid_out_as(k);
    grads.v = laid_out_as(v);
    const Tensor delta = Tensor::empty(forward.logsumexp.shape(), q.options());
    const Tensor scores_mask = mask.defined() ? mask.expand({q.size(0), q.size(1), q.size(2), k.size(2)}) : Tensor();
#ifdef KASMINA_WITH_CUDA
    cuda::attention_backward(rows_dense(grad_output), rows_dense(q), rows_dense(k), rows_dense(v),
                             scores_mask, causal, scale, forward.output, forward.logsumexp, delta, grads.q, grads.k,
                             grads.v, attention_workspace_bytes(), attention_tensor_cores());
#else
    (void)causal, (void)scale;
#endif
    return grads;
}

}  // namespace kasmina::kernels
