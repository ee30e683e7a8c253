// The CPU backend: oneDNN primitives (matmul, softmax, eltwise) for float32 and OpenMP loops
// elsewhere (float64, integer dtypes, ops oneDNN lacks). Outputs are allocated and checked by
// kernels/dispatch.cpp; these functions only fill them. Shapes in comments are the callers' contract.
#pragma once

#include <optional>
#include <vector>

#include "kernels/kernels.h"

namespace kasmina::kernels::cpu {

// elementwise.cpp — inputs broadcast to out's shape
void unary(UnaryOp op, const Tensor& x, const Tensor& out);
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void clamp(const Tensor& x, std::optional<double> min, std::optional<double> max, const Tensor& out);
void clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max,
                    const Tensor& out);
void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out);
void add_into(const Tensor& destination, const Tensor& source, double alpha);

// reduction.cpp — x [outer, inner] contiguous, reduce the inner axis: out [outer]
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out);
// x [reduced, kept] contiguous, reduce the leading axis: out [kept]
void reduce_columns(ReduceOp op, const Tensor& x, const Tensor& out);
void variance_rows(const Tensor& x, int64_t correction, const Tensor& out);
void logsumexp_rows(const Tensor& x, const Tensor& out);
void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices);

// matmul.cpp — a [B, M, K], b [B, K, N] (row-major or transposed inner strides), out [B, M, N] contiguous
void batched_matmul(const Tensor& a, const Tensor& b, const Tensor& out);
// x [M, K] contiguous, weight [N, K], bias [N] or undefined, out [M, N]
void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);

// softmax.cpp — x contiguous, softmax along dim; out same shape
void softmax(const Tensor& x, int64_t dim, bool log, const Tensor& out);
void softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim, bool log, const Tensor& out);

// indexing.cpp
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
void one_hot(const Tensor& indices, const Tensor& out);

// random.cpp — mask[i] = uniform(seed, first + i) < p ? 0 : 1/(1-p)
void dropout_mask(const Tensor& out, double p, uint64_t seed, uint64_t first);

}  // namespace kasmina::kernels::cpu
