// Reductions on the GPU over the layouts the dispatch layer prepares: rows ([outer, inner], one block
// per row, warp shuffles then shared memory) and columns ([reduced, kept], one thread per kept
// column walking down, coalesced across threads). float32 accumulates in float32 like PyTorch's
// CUDA kernels, float64 in float64, integers in int64.
#include <limits>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"

namespace kasmina::kernels::cuda {
namespace {

template <typename T>
using Accumulator = std::conditional_t<std::is_floating_point_v<T>, T, int64_t>;

template <typename T>
__device__ __forceinline__ T lowest() {
    if constexpr (std::is_floating_point_v<T>) return -INFINITY;
    return std::numeric_limits<T>::lowest();
}
template <typename T>
__device__ __forceinline__ T highest() {
    if constexpr (std::is_floating_point_v<T>) return INFINITY;
    return std::numeric_limits<T>::max();
}

template <typename T>
__device__ __forceinline__ T device_min(T a, T b) {
    if (a != a) return a;
    if (b != b) return b;
    return a < b ? a : b;
}

template <typename T>
__device__ T block_min(T value) {
    return -block_max(-value);
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(rows, 65535 * 16)); }

// Each reduction's starting value, two values combined, and a whole block's, in the accumulator's type
// (int64 for integers: Accumulator).
template <ReduceOp Op, typename T>
__device__ __forceinline__ T reduction_start() {
    if constexpr (Op == ReduceOp::max) return lowest<T>();
    else if constexpr (Op == ReduceOp::min) return highest<T>();
    else return T(0);
}
template <ReduceOp Op, typename T>
__device__ __forceinline__ T reduction_combine(T a, T b) {
    if constexpr (Op == ReduceOp::max) return device_max(a, b);
    else if constexpr (Op == ReduceOp::min) return device_min(a, b);
    else return a + b;
}
template <ReduceOp Op, typename T>
__device__ __forceinline__ T reduction_over_block(T value) {
    if constexpr (Op == ReduceOp::max) return block_max(value);
    else if constexpr (Op == ReduceOp::min) return block_min(value);
    else return block_sum(value);
}

// One block per row.
template <ReduceOp Op, typename T>
__global__ void reduce_rows_kernel(const T* x, T* out, int64_t rows, int64_t inner) {
    using Acc = Accumulator<T>;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* values = x + row * inner;
        Acc result = reduction_start<Op, Acc>();
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
            result = reduction_combine<Op>(result, static_cast<Acc>(values[i]));
        result = reduction_over_block<Op>(result);
        if (threadIdx.x == 0)
            out[row] = static_cast<T>(Op == ReduceOp::mean ? result / static_cast<Acc>(inner) : result);
    }
}

// A long-row reduction of floating values in one launch: block (split, row) reduces its slice of the row,
// `chunk` elements (a multiple of kPack) read kPack at a time, into partial[row][split]; the last block of
// the row to finish reduces the row's partials, in an order that does not depend on which block that is,
// and writes out[row] (a mean divides by the row's length). The first blocks take the row's end: a
// reduction mostly follows the pass that wrote its input, whose last part is still in L2 (the loss of
// layernorm fwd+bwd on the H100: 154 -> 149 us).
template <ReduceOp Op, int kPack, typename T>
__global__ void reduce_row_splits_kernel(const T* x, T* partial, unsigned* counters, T* out, int64_t inner,
                                         int64_t chunk) {
    wait_for_previous_kernel();
    const int64_t row = blockIdx.y, splits = gridDim.x, split = splits - 1 - blockIdx.x;
    const int64_t first = split * chunk / kPack, last = min(inner, (split + 1) * chunk) / kPack;
    const T* values = x + row * inner;
    T result = reduction_start<Op, T>();
#pragma unroll 4
    for (int64_t p = first + threadIdx.x; p < last; p += blockDim.x) {
        const Pack<T, kPack> pack = load_pack<T, kPack>(values, p * kPack);
#pragma unroll
        for (int e = 0; e < kPack; ++e) result = reduction_combine<Op>(result, pack.v[e]);
    }
    result = reduction_over_block<Op>(result);
    if (threadIdx.x == 0) partial[row * splits + split] = result;
    if (!last_block_of(counters + row, static_cast<unsigned>(splits))) return;
    result = reduction_start<Op, T>();
    for (int64_t s = threadIdx.x; s < splits; s += blockDim.x)
        result = reduction_combine<Op>(result, load_from_l2(partial + row * splits + s));
    result = reduction_over_block<Op>(result);
    if (threadIdx.x == 0) out[row] = Op == ReduceOp::mean ? result / static_cast<T>(inner) : result;
}

template <ReduceOp Op, typename T>
__global__ void reduce_columns_kernel(const T* x, T* out, int64_t reduced, int64_t kept) {
    using Acc = Accumulator<T>;
    for (int64_t column = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; column < kept;
         column += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        Acc result = reduction_start<Op, Acc>();
        for (int64_t r = 0; r < reduced; ++r) result = reduction_combine<Op>(result, static_cast<Acc>(x[r * kept + column]));
        out[column] = static_cast<T>(Op == ReduceOp::mean ? result / static_cast<Acc>(reduced) : result);
    }
}

template <typename T>
__global__ void variance_rows_kernel(const T* x, T* out, int64_t rows, int64_t inner, int64_t correction) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* values = x + row * inner;
        T total = 0;
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) total += values[i];
        const T mean = block_sum(total) / static_cast<T>(inner);
        T squares = 0;
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
            const T deviation = values[i] - mean;
            squares += deviation * deviation;
        }
        squares = block_sum(squares);
        if (threadIdx.x == 0) {
            const int64_t divisor = inner - correction;
            out[row] = divisor > 0 ? squares / static_cast<T>(divisor) : T(NAN);
        }
    }
}

template <typename T>
__global__ void logsumexp_rows_kernel(const T* x, T* out, int64_t rows, int64_t inner) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* values = x + row * inner;
        T best = -INFINITY;
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) best = device_max(best, values[i]);
        best = block_max(best);
        const T shift = isinf(best) ? T(0) : best;  // all -inf (or +inf) rows: no shift
        T total = 0;
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) total += exp(values[i] - shift);
        total = block_sum(total);
        if (threadIdx.x == 0) out[row] = log(total) + shift;
    }
}

// The better of two (value, index) candidates: NaN first, then the larger value, then the lower index.
template <typename T>
__device__ __forceinline__ bool better(T v, int64_t i, T best, int64_t best_index) {
    if constexpr (std::is_floating_point_v<T>) {
        if (v != v) return best == best || i < best_index;
        if (best != best) return false;
    }
    return v > best || (v == best && i < best_index);
}

template <typename T>
__global__ void max_rows_kernel(const T* x, T* values_out, int64_t* indices_out, int64_t rows, int64_t inner) {
    __shared__ T best_values[kThreads];
    __shared__ int64_t best_indices[kThreads];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* values = x + row * inner;
        T best = values[0];
        int64_t best_index = 0;
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
            if (better(values[i], i, best, best_index)) {
                best = values[i];
                best_index = i;
            }
        best_values[threadIdx.x] = best;
        best_indices[threadIdx.x] = best_index;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (threadIdx.x < stride &&
                better(best_values[threadIdx.x + stride], best_indices[threadIdx.x + stride], best_values[threadIdx.x],
                       best_indices[threadIdx.x])) {
                best_values[threadIdx.x] = best_values[threadIdx.x + stride];
                best_indices[threadIdx.x] = best_indices[threadIdx.x + stride];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            values_out[row] = best_values[0];
            indices_out[row] = best_indices[0];
        }
        __syncthreads();
    }
}

template <typename Fn>
void dispatch_reduce(ReduceOp op, Fn&& fn) {
    switch (op) {
        case ReduceOp::sum: fn.template operator()<ReduceOp::sum>(); return;
        case ReduceOp::mean: fn.template operator()<ReduceOp::mean>(); return;
        case ReduceOp::max: fn.template operator()<ReduceOp::max>(); return;
        case ReduceOp::min: fn.template operator()<ReduceOp::min>(); return;
    }
}

}  // namespace

// Clears *flag when x holds a non-finite element. Every writer writes false, so no ordering is needed.
// *flag = false when an element of x is not finite, kPack elements a load.
template <int kPack, typename T>
__global__ void clear_flag_on_non_finite_kernel(const T* x, int64_t packs, bool* flag) {
    bool finite = true;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const Pack<T, kPack> values = load_pack<T, kPack>(x, i * kPack);
#pragma unroll
        for (int e = 0; e < kPack; ++e) finite = finite && isfinite(values.v[e]);
    }
    if (!finite) *flag = false;
}

void finite_flag(const Tensor& x, const Tensor& out) {
    KASMINA_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 1, 1, launch_stream()));
    const int64_t count = x.numel();
    if (count > 0) {
        dispatch_floating(x.dtype(), "finite_flag", [&]<typename T>() {
            with_pack<T>(pack_for<T>(count, {x.raw_data()}), [&]<int kPack>() {
                const int64_t packs = count / kPack;
                const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((packs + kThreads - 1) / kThreads, 2048));
                clear_flag_on_non_finite_kernel<kPack, T><<<blocks, kThreads, 0, launch_stream()>>>(
                    static_cast<const T*>(x.raw_data()), packs, static_cast<bool*>(out.raw_data()));
            });
        });
    }
    check_launch("finite_flag");
}

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), inner = x.size(1);
    // Few long rows (e.g. a whole-tensor sum): split each row over many blocks (~1,000 on the largest
    // tensors of the benchmarks), whose last one reduces the parts.
    constexpr int64_t kChunk = 8192;  // 4096 and 16384 were slower
    const bool split = is_floating(x.dtype()) && rows < 128 && inner >= 4 * kChunk;
    if (split) {
        dispatch_floating(x.dtype(), "reduce", [&]<typename T>() {
            dispatch_reduce(op, [&]<ReduceOp Op>() {
                const int64_t splits = (inner + kChunk - 1) / kChunk;
                const Tensor partial = Tensor::empty({rows, splits}, x.options());
                unsigned* counters = stream_block_counters(rows);
                with_pack<T>(pack_for<T>(inner, {x.raw_data()}), [&]<int kPack>() {
                    launch_overlapped(reduce_row_splits_kernel<Op, kPack, T>,
                                      dim3(static_cast<unsigned>(splits), static_cast<unsigned>(rows)), kThreads,
                                      static_cast<const T*>(x.raw_data()), static_cast<T*>(partial.raw_data()),
                                      counters, static_cast<T*>(out.raw_data()), inner, kChunk);
                });
            });
        });
        check_launch("reduce");
        return;
    }
    dispatch_numeric(x.dtype(), "reduce", [&]<typename T>() {
        dispatch_reduce(op, [&]<ReduceOp Op>() {
            reduce_rows_kernel<Op, T><<<row_blocks(rows), kThreads, 0, launch_stream()>>>(
                static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), rows, inner);
        });
    });
    check_launch("reduce");
}

void reduce_columns(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t reduced = x.size(0), kept = x.size(1);
    if (is_floating(x.dtype()) && (op == ReduceOp::sum || op == ReduceOp::mean)) {
        // Tall matrices (bias gradients, batch sums): the two-pass tiled column sum.
        dispatch_floating(x.dtype(), "reduce", [&]<typename T>() {
            const Tensor scratch = Tensor::empty({column_chunks(reduced, kept) * kept}, x.options());
            const T scale = op == ReduceOp::mean ? T(1) / static_cast<T>(reduced) : T(1);
            column_sums<T>(MatrixElement<T>{static_cast<const T*>(x.raw_data()), kept}, reduced, kept,
                           static_cast<T*>(scratch.raw_data()), StoreScaled<T>{static_cast<T*>(out.raw_data()), scale});
        });
        check_launch("reduce");
        return;
    }
    dispatch_numeric(x.dtype(), "reduce", [&]<typename T>() {
        dispatch_reduce(op, [&]<ReduceOp Op>() {
            reduce_columns_kernel<Op, T><<<grid_for(kept), kThreads, 0, launch_stream()>>>(
                static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), reduced, kept);
        });
    });
    check_launch("reduce");
}

void variance_rows(const Tensor& x, int64_t correction, const Tensor& out) {
    const int64_t rows = x.size(0), inner = x.size(1);
    dispatch_floating(x.dtype(), "var", [&]<typename T>() {
        variance_rows_kernel<T><<<row_blocks(rows), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), rows, inner, correction);
    });
    check_launch("var");
}

void logsumexp_rows(const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), inner = x.size(1);
    dispatch_floating(x.dtype(), "logsumexp", [&]<typename T>() {
        logsumexp_rows_kernel<T><<<row_blocks(rows), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), rows, inner);
    });
    check_launch("logsumexp");
}

void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices) {
    const int64_t rows = x.size(0), inner = x.size(1);
    dispatch_numeric(x.dtype(), "max", [&]<typename T>() {
        max_rows_kernel<T><<<row_blocks(rows), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(x.raw_data()), static_cast<T*>(values.raw_data()),
            static_cast<int64_t*>(indices.raw_data()), rows, inner);
    });
    check_launch("max");
}

}  // namespace kasmina::kernels::cuda
