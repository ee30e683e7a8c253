// The fused attention kernels (CUDA): softmax(q k^T * scale + mask) v and its gradient without the
// [target, source] score matrix. The dispatch checks operands and allocates; autograd/attention.h
// decides when the fused path applies (the composite path serves the CPU and every other case).
#pragma once

#include "runtime/tensor.h"

namespace kasmina::kernels {

// q [B, H, L, D], k and v [B, H, S, D]; mask: undefined, or an additive mask of q's dtype that
// broadcasts to [B, H, L, S]; causal: key c is hidden from query row r when c > r (top-left aligned,
// as PyTorch's is_causal). True when the fused kernels cover these operands: a CUDA build, a CUDA
// device, float32 with head dim <= 128 or float64 with head dim <= 64.
bool fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask);

// output [B, H, L, D] (stored as [B, L, H, D], so merging the heads afterwards is a view);
// logsumexp [B, H, L] of each row's scaled, masked scores (-inf for a fully masked row, whose output is NaN).
struct AttentionForward {
    Tensor output, logsumexp;
};
AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                                   double scale);

struct AttentionGrads {
    Tensor q, k, v;
};
AttentionGrads attention_backward(const Tensor& grad_output, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& mask, bool causal, double scale, const AttentionForward& forward);

}  // namespace kasmina::kernels
