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

// elementwise.cu — inputs broadcast to out's shape
void unary(UnaryOp op, const Tensor& x, const Tensor& out);
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void clamp(const Tensor& x, std::optional<double> min, std::optional<double> max, const Tensor& out);
void clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max,
                    const Tensor& out);
void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out);
void add_into(const Tensor& destination, const Tensor& source, double alpha);

// reduction.cu — x [outer, inner] contiguous, reduce the inner axis: out [outer]
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out);
// x [reduced, kept] contiguous, reduce the leading axis: out [kept]
void reduce_columns(ReduceOp op, const Tensor& x, const Tensor& out);
void variance_rows(const Tensor& x, int64_t correction, const Tensor& out);
void logsumexp_rows(const Tensor& x, const Tensor& out);
void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices);

// matmul.cu (cuBLAS) — a [B, M, K], b [B, K, N] (each matrix row- or column-major), out [B, M, N] contiguous
void batched_matmul(const Tensor& a, const Tensor& b, const Tensor& out);
// x [M, K] contiguous, weight [N, K], bias [N] or undefined, out [M, N]
void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);

// softmax.cu — x contiguous, along dim; out same shape
void softmax(const Tensor& x, int64_t dim, bool log, const Tensor& out);
void softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim, bool log, const Tensor& out);

// indexing.cu — indices already range-checked by the dispatch layer
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
void one_hot(const Tensor& indices, const Tensor& out);

// random.cu — mask[i] = uniform(seed, first + i) < p ? 0 : 1/(1-p), the CPU's numbers exactly
void dropout_mask(const Tensor& out, double p, uint64_t seed, uint64_t first);

// convolution.cu (cuDNN) — contracts as kernels::cpu::conv2d_*
void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                    const Tensor& out);
void conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                          const Tensor& grad_input);
void conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                             const Tensor& grad_weight, const Tensor& grad_bias);

// normalization.cu — contracts as kernels::cpu::layer_norm* / batch_norm*
void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& output,
                const Tensor& mean, const Tensor& rstd);
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias);
void batch_norm_training(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, double momentum,
                         const Tensor& output, const Tensor& save_mean, const Tensor& save_invstd,
                         const Tensor& running_mean, const Tensor& running_var);
void batch_norm_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                          const Tensor& running_var, double eps, const Tensor& output);
void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, bool training, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias);

// attention.cu — contracts as kernels/attention.h; q, k, v, grad_out with unit stride along head_dim,
// mask expanded to [B, H, L, S] (zero strides where broadcast) or undefined; delta [B, H, L] scratch;
// grads dense; the backward holds at most workspace_bytes of scores (kernels/settings.h).
int64_t max_fused_attention_head_dim(DType dtype);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal, double scale,
                       const Tensor& out, const Tensor& lse);
void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                        bool causal, double scale, const Tensor& out, const Tensor& lse, const Tensor& delta,
                        const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, size_t workspace_bytes);

// blend.cu — contracts as kernels::cpu::blend / blend_backward
void blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
           const Tensor& out);
void blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                    const std::vector<double>& coefficients, BlendBackward& result, bool need_dots);

}  // namespace kasmina::kernels::cuda
