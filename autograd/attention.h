// Scaled-dot-product attention, the functional form of torch.nn.functional.scaled_dot_product_attention
// without dropout: softmax(q k^T * scale + mask) v. On a CUDA device it runs the fused kernels
// (kernels/attention.h: no [L, S] score matrix in the forward or the backward); on the CPU, and where
// the fused kernels do not reach, it composes matmul and softmax.
#pragma once

#include <optional>

#include "runtime/tensor.h"

namespace kasmina {

// The additive causal mask [target, source]: 0 where key c <= query row r, -inf above (top-left aligned).
Tensor causal_mask(int64_t target, int64_t source, const Tensor& like);

// softmax(q * scale @ k^T + mask) along the last dim: the attention weights, [..., L, S], composed of
// matmul and softmax. q [..., L, D], k [..., S, D]; mask: undefined, bool (true = takes part, as
// PyTorch's SDPA) or additive of q's dtype, broadcasting to [..., L, S]; is_causal adds causal_mask.
Tensor attention_probabilities(const Tensor& q, const Tensor& k, const Tensor& mask, bool is_causal, double scale);

// softmax(q k^T * scale + mask) v: q [..., L, D], k [..., S, D], v [..., S, Dv] -> [..., L, Dv];
// scale defaults to 1 / sqrt(D). Gradients flow to q, k, v (and to an additive mask on the composed path).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask = {},
                                    bool is_causal = false, std::optional<double> scale = std::nullopt);

}  // namespace kasmina
