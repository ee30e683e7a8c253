#include "layers/multihead_attention.h"

#include <cmath>
#include <limits>

#include "autograd/attention.h"
#include "autograd/ops.h"
#include "layers/init.h"
#include "runtime/grad_mode.h"

namespace kasmina::nn {

MultiheadAttention::MultiheadAttention(int64_t embed_dim, int64_t num_heads, MultiheadAttentionOptions options)
    : embed_dim_(embed_dim), num_heads_(num_heads), kdim_(options.kdim > 0 ? options.kdim : embed_dim),
      vdim_(options.vdim > 0 ? options.vdim : embed_dim), options_(options) {
    if (embed_dim <= 0 || num_heads <= 0 || embed_dim % num_heads != 0)
        raise<ShapeError>("MultiheadAttention", "embed_dim (", embed_dim, ") must be divisible by num_heads (", num_heads, ")");
    if (!(options.dropout >= 0.0 && options.dropout <= 1.0))
        raise<Error>("MultiheadAttention", "dropout must be in [0, 1], got ", options.dropout);
    if (kdim_ == embed_dim && vdim_ == embed_dim) {
        in_proj_weight = register_parameter("in_proj_weight", init::xavier_uniform({3 * embed_dim, embed_dim}, embed_dim, 3 * embed_dim));
    } else {
        q_proj_weight = register_parameter("q_proj_weight", init::xavier_uniform({embed_dim, embed_dim}, embed_dim, embed_dim));
        k_proj_weight = register_parameter("k_proj_weight", init::xavier_uniform({embed_dim, kdim_}, kdim_, embed_dim));
        v_proj_weight = register_parameter("v_proj_weight", init::xavier_uniform({embed_dim, vdim_}, vdim_, embed_dim));
    }
    if (options.bias) in_proj_bias = register_parameter("in_proj_bias", Tensor::zeros({3 * embed_dim}));
    out_proj = register_module("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, options.bias));
    if (options.bias) {
        NoGradGuard no_grad;
        out_proj->bias.zero_();
    }
}

std::string MultiheadAttention::extra_repr() const {
    return make_message("embed_dim=", embed_dim_, ", num_heads=", num_heads_, ", dropout=", options_.dropout,
                        ", batch_first=", py_bool(options_.batch_first));
}

Tensor MultiheadAttention::forward(const Tensor& input) {
    return forward(input, input, input, {.need_weights = false}).first;
}

Tensor MultiheadAttention::combined_mask(const AttentionCall& call, int64_t batch, int64_t target, int64_t source,
                                         const Tensor& like) const {
    const double negative_infinity = -std::numeric_limits<double>::infinity();
    auto as_additive = [&](const Tensor& mask, const char* what) {
        if (mask.dtype() == DType::boolean) return masked_fill(Tensor::zeros(mask.shape(), like.options()), mask, negative_infinity);
        if (mask.dtype() != like.dtype())
            raise<DTypeError>("MultiheadAttention", what, " must be bool or ", dtype_name(like.dtype()), ", got ", mask.describe());
        return mask;
    };
    Tensor mask;
    if (call.attn_mask.defined()) {
        const Tensor& m = call.attn_mask;
        if (m.dim() == 2) {
            if (m.shape() != Shape{target, source})
                raise<ShapeError>("MultiheadAttention", "the shape of the 2D attn_mask is ", shape_str(m.shape()),
                                  ", but should be ", shape_str({target, source}));
            mask = as_additive(m, "attn_mask").reshape({1, 1, target, source});
        } else if (m.dim() == 3) {
            if (m.shape() != Shape{batch * num_heads_, target, source})
                raise<ShapeError>("MultiheadAttention", "the shape of the 3D attn_mask is ", shape_str(m.shape()),
                                  ", but should be ", shape_str({batch * num_heads_, target, source}));
            mask = as_additive(m, "attn_mask").reshape({batch, num_heads_, target, source});
        } else {
            raise<ShapeError>("MultiheadAttention", "attn_mask must be 2D or 3D, got ", shape_str(m.shape()));
        }
    }
    if (call.key_padding_mask.defined()) {
        const Tensor& p = call.key_padding_mask;
        if (p.shape() != Shape{batch, source})
            raise<ShapeError>("MultiheadAttention", "key_padding_mask ", shape_str(p.shape()), " should be ",
                              shape_str({batch, source}), " (batch, source length)");
        const Tensor padding = as_additive(p, "key_padding_mask").reshape({batch, 1, 1, source});
        mask = mask.defined() ? mask + padding : padding;
    }
    return mask;
}

AttentionHeads MultiheadAttention::attend_heads(const Tensor& query, const Tensor& key, const Tensor& value,
                                                const Tensor& additive_mask, bool need_weights, bool is_causal) {
    const int64_t batch = query.size(0), target = query.size(1), source = key.size(1), dim = head_dim();
    const int64_t e = embed_dim_;
    Tensor q, k, v;
    const Tensor bq = in_proj_bias.defined() ? in_proj_bias.narrow(0, 0, e) : Tensor();
    const Tensor bk = in_proj_bias.defined() ? in_proj_bias.narrow(0, e, e) : Tensor();
    const Tensor bv = in_proj_bias.defined() ? in_proj_bias.narrow(0, 2 * e, e) : Tensor();
    if (packed_projection()) {
        q = linear(query, in_proj_weight.narrow(0, 0, e), bq);
        k = linear(key, in_proj_weight.narrow(0, e, e), bk);
        v = linear(value, in_proj_weight.narrow(0, 2 * e, e), bv);
    } else {
        q = linear(query, q_proj_weight, bq);
        k = linear(key, k_proj_weight, bk);
        v = linear(value, v_proj_weight, bv);
    }
    // [B, L, E] -> [B, heads, L, head_dim]
    auto split_heads = [&](const Tensor& t, int64_t length) { return t.reshape({batch, length, num_heads_, dim}).transpose(1, 2); };
    q = split_heads(q, target);
    k = split_heads(k, source);
    v = split_heads(v, source);
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    const bool dropping = options_.dropout > 0.0 && is_training();
    // Without weights to return or dropout to apply, the fused kernels (on the GPU) never form the scores.
    if (!need_weights && !dropping) return {scaled_dot_product_attention(q, k, v, additive_mask, is_causal, scale), Tensor()};
    // As PyTorch, the weights returned are the ones the context used: after dropout in training.
    const Tensor weights = dropout(attention_probabilities(q, k, additive_mask, is_causal, scale), options_.dropout, is_training());
    return {matmul(weights, v), need_weights ? weights : Tensor()};
}

Tensor MultiheadAttention::project_heads(const Tensor& context) {
    const int64_t batch = context.size(0), target = context.size(2);
    return out_proj->forward(context.transpose(1, 2).reshape({batch, target, embed_dim_}));
}

std::pair<Tensor, Tensor> MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                                      const AttentionCall& call) {
    const bool batched = query.dim() == 3;
    if (!batched && query.dim() != 2)
        raise<ShapeError>("MultiheadAttention", "query must be 3-D (batched) or 2-D (unbatched), got ", shape_str(query.shape()));
    if (key.dim() != query.dim() || value.dim() != query.dim())
        raise<ShapeError>("MultiheadAttention", "query ", shape_str(query.shape()), ", key ", shape_str(key.shape()), " and value ",
                          shape_str(value.shape()), " must all be batched or all unbatched");
    // Canonical layout: batch-first [B, L, E].
    auto canonical = [&](const Tensor& t) {
        if (!batched) return t.unsqueeze(0);
        return options_.batch_first ? t : t.transpose(0, 1);
    };
    const Tensor q = canonical(query), k = canonical(key), v = canonical(value);
    if (q.size(2) != embed_dim_ || k.size(2) != kdim_ || v.size(2) != vdim_)
        raise<ShapeError>("MultiheadAttention", "expected last dims (query ", embed_dim_, ", key ", kdim_, ", value ", vdim_,
                          "), got query ", shape_str(query.shape()), ", key ", shape_str(key.shape()), ", value ",
                          shape_str(value.shape()));
    if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || k.size(1) != v.size(1))
        raise<ShapeError>("MultiheadAttention", "batch or source lengths disagree: query ", shape_str(query.shape()), ", key ",
                          shape_str(key.shape()), ", value ", shape_str(value.shape()),
                          options_.batch_first ? " (batch_first)" : " (sequence first)");
    AttentionCall layout = call;
    if (!batched && call.key_padding_mask.defined()) layout.key_padding_mask = call.key_padding_mask.unsqueeze(0);
    const Tensor mask = combined_mask(layout, q.size(0), q.size(1), k.size(1), q);
    // is_causal stands for the causal mask only when no attn_mask is given (as PyTorch).
    const bool causal = call.is_causal && !call.attn_mask.defined();

    AttentionHeads heads = attend_heads(q, k, v, mask, call.need_weights, causal);
    Tensor output = project_heads(transform_head_context(heads.context));
    if (!batched) output = output.squeeze(0);
    else if (!options_.batch_first) output = output.transpose(0, 1);

    Tensor weights;
    if (call.need_weights) {
        weights = call.average_attn_weights ? mean(heads.weights, {1}) : heads.weights;
        if (!batched) weights = weights.squeeze(0);
    }
    return {output, weights};
}

}  // namespace kasmina::nn
