// Scaled-dot-product attention: the fused path (one recorded node over the fused kernels) when it
// applies, else the composition of differentiable ops.
#include "autograd/attention.h"

#include <cmath>
#include <limits>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "kernels/attention.h"
#include "kernels/settings.h"

namespace kasmina {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

Tensor additive_mask(const Tensor& mask, const Tensor& like) {
    if (!mask.defined() || mask.dtype() != DType::boolean) {
        if (mask.defined() && mask.dtype() != like.dtype())
            raise<DTypeError>(kOp, "mask must be bool or ", dtype_name(like.dtype()), " (additive), got ", mask.describe());
        return mask;
    }
    // PyTorch's SDPA convention: true takes part, false is hidden.
    return where(mask, Tensor::zeros({}, like.options()),
                 Tensor::full({}, -std::numeric_limits<double>::infinity(), like.options()));
}

void check_operands(const Tensor& q, const Tensor& k, const Tensor& v) {
    if (q.dim() < 2 || k.dim() < 2 || v.dim() < 2)
        raise<ShapeError>(kOp, "expected q [..., L, D], k [..., S, D], v [..., S, Dv], got q ", shape_str(q.shape()),
                          ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
    if (q.size(-1) != k.size(-1) || k.size(-2) != v.size(-2))
        raise<ShapeError>(kOp, "q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), " and v ", shape_str(v.shape()),
                          " disagree (expected q [..., L, D], k [..., S, D], v [..., S, Dv])");
}

}  // namespace

Tensor causal_mask(int64_t target, int64_t source, const Tensor& like) {
    const Tensor rows = Tensor::arange(target).to(like.device()).reshape({target, 1});
    const Tensor cols = Tensor::arange(source).to(like.device()).reshape({1, source});
    return masked_fill(Tensor::zeros({target, source}, like.options()), gt(cols, rows),
                       -std::numeric_limits<double>::infinity());
}

Tensor attention_probabilities(const Tensor& q, const Tensor& k, const Tensor& mask, bool is_causal, double scale) {
    Tensor scores = matmul(q * scale, k.transpose(-1, -2));
    const Tensor additive = additive_mask(mask, q);
    if (additive.defined()) scores = scores + additive;
    if (is_causal) scores = scores + causal_mask(q.size(-2), k.size(-2), q);
    return softmax(scores, -1);
}

// out = softmax(s) v with s = q k^T * scale + mask; P = softmax(s), dP = grad v^T,
// ds = P * (dP - rowsum(grad * out)); grad_q = ds k * scale, grad_k = ds^T q * scale, grad_v = P^T grad.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                    bool is_causal, std::optional<double> scale) {
    check_operands(q, k, v);
    const double factor = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
    const Tensor additive = additive_mask(mask, q);
    const bool fused = fused_attention() && q.dim() == 4 && k.dim() == 4 && v.shape() == k.shape() &&
                       kernels::fused_attention_supported(q, k, v, additive) &&
                       !(additive.defined() && additive.requires_grad());
    if (!fused) return matmul(attention_probabilities(q, k, additive, is_causal, factor), v);

    const kernels::AttentionForward forward = kernels::attention_forward(q, k, v, additive, is_causal, factor);
    if (!autograd::needs_grad({&q, &k, &v})) return forward.output;
    const bool need_q = q.requires_grad(), need_k = k.requires_grad(), need_v = v.requires_grad();
    autograd::SavedTensor saved_q(q), saved_k(k), saved_v(v), saved_mask(additive);
    const Tensor output = forward.output.detach(), logsumexp = forward.logsumexp;
    return autograd::record(kOp, forward.output, {q, k, v}, [=](const std::vector<Tensor>& g) {
        const kernels::AttentionGrads grads = kernels::attention_backward(
            g[0], saved_q.unpack(kOp), saved_k.unpack(kOp), saved_v.unpack(kOp), saved_mask.unpack(kOp), is_causal,
            factor, {output, logsumexp});
        return std::vector<Tensor>{need_q ? grads.q : Tensor(), need_k ? grads.k : Tensor(), need_v ? grads.v : Tensor()};
    });
}

}  // namespace kasmina
