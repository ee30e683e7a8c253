// The CUDA backend: the same entry points as the CPU backend (kernels/cpu/cpu_kernels.h, the
// normalization and blend backends), filling outputs that kernels/dispatch.cpp checked and allocated.
// Compiled only with KASMINA_WITH_CUDA. All work is queued on the thread's current stream (stream.h);
// nothing here synchronizes with the host except the index checks the dispatch layer does before calling.
#pragma once

#include <optional>
#include <vector>

#include "kernels/blend.h"
#include "kernels/convolution.h"
#include "kernels/kernels.h"

namespace kasmina::kernels::cuda {

// The contracts every backend shares (the CPU backend includes the same lists).
#include "kernels/backend_ops.inc"
#include "kernels/blend_backend.inc"
#include "kernels/convolution_backend.inc"
#include "kernels/normalization_backend.inc"

// attention.cu — contracts as kernels/attention.h; q, k, v, grad_out with unit stride along head_dim,
// mask expanded to [B, H, L, S] (zero strides where broadcast) or undefined; delta [B, H, L] scratch;
// grads with unit stride along head_dim; tensor_cores: float32 with head_dim <= 64 runs on tensor cores
// at float32 accuracy (3xTF32), no scores held; else the backward holds at most workspace_bytes of
// scores (kernels/settings.h).
int64_t max_fused_attention_head_dim(DType dtype);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal, double scale,
                       const Tensor& out, const Tensor& lse, bool tensor_cores);
void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                        bool causal, double scale, const Tensor& out, const Tensor& lse, const Tensor& delta,
                        const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, size_t workspace_bytes,
                        bool tensor_cores);

// normalization.cu — out[c] = the sum over n and s of x[n, c, s] (x [N, C, S] contiguous, out [C]), by
// the batch-norm statistics' one-pass channel sums: a convolution's bias gradient.
void channel_totals(const Tensor& x, const Tensor& out);
// normalization.cu — x[n, c, s] += bias[c] in place (x [N, C, S] contiguous, bias [C]), by the batch-norm
// normalize pass (packs of four, from the data's end): a convolution's bias.
void add_channel_bias(const Tensor& x, const Tensor& bias);

}  // namespace kasmina::kernels::cuda
