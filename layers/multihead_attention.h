// nn.MultiheadAttention with PyTorch's parameters (packed in_proj_weight/in_proj_bias, or separate
// q/k/v projection weights when kdim/vdim differ), masks, causal attention and attention weights.
// The per-head context [batch, heads, target, head_dim] is computed as its own step before the
// output projection, so subclasses (the Kasmina attention layer) can transform heads one by one.
#pragma once

#include <memory>
#include <utility>

#include "layers/linear.h"
#include "layers/module.h"

namespace kasmina::nn {

struct MultiheadAttentionOptions {
    double dropout = 0.0;
    bool bias = true;
    bool batch_first = false;
    int64_t kdim = 0;  // 0: embed_dim
    int64_t vdim = 0;  // 0: embed_dim
};

// Forward arguments beyond query/key/value, as in torch.nn.MultiheadAttention.forward.
struct AttentionCall {
    Tensor key_padding_mask;  // [B, S] bool (true = ignore) or float (added); undefined: none
    bool need_weights = true;
    Tensor attn_mask;  // [L, S] or [B*heads, L, S]; bool (true = not allowed) or float (added)
    bool average_attn_weights = true;
    bool is_causal = false;  // with no attn_mask, a causal mask is generated
};

// The per-head attention result, batch-first.
struct AttentionHeads {
    Tensor context;  // [B, heads, L, head_dim]
    Tensor weights;  // [B, heads, L, S] (softmax output, after dropout as PyTorch); undefined unless requested
};

class MultiheadAttention : public Module {
public:
    MultiheadAttention(int64_t embed_dim, int64_t num_heads, MultiheadAttentionOptions options = {});
    std::string type_name() const override { return "MultiheadAttention"; }
    std::string extra_repr() const override;

    // Returns (attn_output, attn_weights); weights are undefined unless call.need_weights.
    std::pair<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                      const AttentionCall& call = {});
    // Self-attention without weights: forward(x, x, x, {.need_weights = false}).first
    Tensor forward(const Tensor& input) override;

    // The steps of forward, batch-first ([B, L, E]); inputs already validated and laid out. The
    // additive mask broadcasts to [B, heads, L, S]; is_causal hides keys after each query row.
    AttentionHeads attend_heads(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& additive_mask,
                                bool need_weights, bool is_causal = false);
    Tensor project_heads(const Tensor& context);  // [B, heads, L, head_dim] -> [B, L, E]

    int64_t embed_dim() const { return embed_dim_; }
    int64_t num_heads() const { return num_heads_; }
    int64_t head_dim() const { return embed_dim_ / num_heads_; }
    int64_t kdim() const { return kdim_; }
    int64_t vdim() const { return vdim_; }
    bool batch_first() const { return options_.batch_first; }
    const MultiheadAttentionOptions& options() const { return options_; }
    bool packed_projection() const { return in_proj_weight.defined(); }

    Tensor in_proj_weight;                              // [3E, E] when kdim == vdim == E
    Tensor q_proj_weight, k_proj_weight, v_proj_weight;  // [E, E], [E, kdim], [E, vdim] otherwise
    Tensor in_proj_bias;                                // [3E] when bias
    std::shared_ptr<Linear> out_proj;

protected:
    // Hook between attention and the output projection; identity here.
    virtual Tensor transform_head_context(const Tensor& context) { return context; }

private:
    // The additive float mask [B or 1, heads or 1, L, S] combining attn_mask and key_padding_mask
    // (is_causal is passed to attend_heads apart, so the fused kernels can skip hidden key tiles).
    Tensor combined_mask(const AttentionCall& call, int64_t batch, int64_t target, int64_t source, const Tensor& like) const;

    int64_t embed_dim_, num_heads_, kdim_, vdim_;
    MultiheadAttentionOptions options_;
};

}  // namespace kasmina::nn
