// The single dispatch point for every op: checks operands (shapes, dtypes, devices) and allocates
// outputs once, above the backends, then calls the CPU (kernels/cpu) or CUDA (kernels/cuda)
// implementation for the operands' device. No autograd here: autograd/ records graphs on top.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "runtime/random.h"
#include "runtime/tensor.h"

namespace kasmina::kernels {

enum class UnaryOp { neg, exp, log, sqrt, rsqrt, abs, relu, gelu, gelu_tanh, sigmoid, tanh, sign };
enum class BinaryOp { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };
enum class ReduceOp { sum, mean, max, min };

const char* unary_name(UnaryOp op);
const char* binary_name(BinaryOp op);
bool is_comparison(BinaryOp op);

// ---- elementwise (broadcasting) ---------------------------------------------------------------
Tensor unary(UnaryOp op, const Tensor& x);
// d(op)/dx applied to grad: grad * op'(x), using the saved input x and/or output y as the op needs.
Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y);
// Same dtype and device for a and b; comparisons return bool.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
// grad where min <= x <= max (PyTorch passes the gradient at the bounds), 0 elsewhere.
Tensor clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max);
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// In-place destination += alpha * source (source broadcast to destination); no version bump.
void add_into(const Tensor& destination, const Tensor& source, double alpha = 1.0);

// ---- reductions -----------------------------------------------------------------------------
// `dims` may be empty (reduce everything); negative dims allowed.
Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// Variance with `correction` (1 = unbiased, 0 = biased).
Tensor variance(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim);
// Max along one dim: (values, int64 indices). NaN counts as the maximum, like PyTorch.
std::pair<Tensor, Tensor> max_along(const Tensor& x, int64_t dim, bool keepdim);
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// A bool scalar on x's device: true when every element of x is finite. One read pass over x and nothing
// read back, so a GPU caller keeps it on the device (the seed kernels' check selects the layer's own
// output with it); a CPU caller reads it with item<bool>().
Tensor finite_flag(const Tensor& x);
// Sums `grad` over broadcast dimensions so the result has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& grad, const Shape& shape);
// Normalizes a dims list for rank: wraps negatives, sorts, rejects duplicates (naming op).
std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t rank, const char* op);

// ---- linear algebra -------------------------------------------------------------------------
// a [..., M, K] @ b [..., K, N] -> [..., M, N] with broadcast batch dims; 1-D operands as in NumPy.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [*, K] , weight [N, K], bias [N] (optional) -> [*, N]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- softmax --------------------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// grad_x = y * (grad - sum(grad * y))
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);
// grad_x = grad - exp(y) * sum(grad)
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);

// ---- indexing and joining -------------------------------------------------------------------
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// index: 1-D int64/int32 tensor; out.size(dim) = index.numel()
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[..., index[i], ...] += source[..., i, ...] into zeros of `shape` (backward of index_select)
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& source);
// torch.gather: out[i][j] = x[i][index[i][j]] (dim 1), index has x's rank
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// backward of gather: zeros of `shape` with source scattered-added at index along dim
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& source);
Tensor one_hot(const Tensor& indices, int64_t num_classes);

// ---- random ---------------------------------------------------------------------------------
// Dropout scale mask of x's shape/dtype/device: 0 with probability p, else 1/(1-p); drawn from
// `generator` at one reserved offset range so CPU and CUDA produce the same mask.
Tensor dropout_mask(const Tensor& like, double p, Generator& generator);

// ---- helpers shared by the backends and autograd --------------------------------------------
// Raises DeviceError naming op unless all defined tensors share one device; returns it.
Device common_device(const char* op, std::initializer_list<const Tensor*> tensors);
// Raises DTypeError naming op unless a and b have the same dtype.
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);

}  // namespace kasmina::kernels
