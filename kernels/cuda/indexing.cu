// Index-driven ops on the GPU: index_select / index_add along a dim, gather / scatter_add with
// per-element indices, one_hot, and the dropout mask from the counter-based generator (the same
// Philox numbers as the CPU for the same seed and offset). Accumulating ops use atomics, since
// several indices may name the same target. Indices were range-checked by the dispatch layer.
#include "kernels/axis_split.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "runtime/random.h"

namespace kasmina::kernels::cuda {
namespace {

// Indices as a contiguous int64 tensor on the device (int32 indices are widened).
Tensor int64_indices(const Tensor& index) {
    Tensor wide = index.dtype() == DType::i64 ? index : index.to(DType::i64);
    return wide.is_contiguous() ? wide : wide.contiguous();
}

template <typename T>
__device__ __forceinline__ void atomic_accumulate(T* target, T value) {
    if constexpr (std::is_same_v<T, int64_t>)
        atomicAdd(reinterpret_cast<unsigned long long*>(target), static_cast<unsigned long long>(value));
    else
        atomicAdd(target, value);
}

template <typename T>
__global__ void index_select_kernel(const T* x, const int64_t* picks, T* out, AxisSplit in, int64_t count) {
    const int64_t total = in.outer * count * in.inner;
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t k = linear % in.inner, i = (linear / in.inner) % count, o = linear / (in.inner * count);
        out[linear] = x[(o * in.n + picks[i]) * in.inner + k];
    }
}

template <typename T>
__global__ void index_add_kernel(T* out, const int64_t* picks, const T* source, AxisSplit target, int64_t count) {
    const int64_t total = target.outer * count * target.inner;
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t k = linear % target.inner, i = (linear / target.inner) % count, o = linear / (target.inner * count);
        atomic_accumulate(out + (o * target.n + picks[i]) * target.inner + k, source[linear]);
    }
}

struct PickGeometry {
    int rank;
    int64_t index_shape[kMaxRank];
    int64_t strides[kMaxRank];  // of the contiguous tensor being addressed
    int64_t dim;
};

PickGeometry pick_geometry(const Shape& index_shape, const Shape& addressed_shape, int64_t dim, const char* op) {
    if (index_shape.size() > static_cast<size_t>(kMaxRank))
        raise<ShapeError>(op, "the CUDA backend handles up to rank ", kMaxRank, ", got ", shape_str(index_shape));
    PickGeometry g{};
    g.rank = static_cast<int>(index_shape.size());
    const Shape strides = contiguous_strides(addressed_shape);
    for (int d = 0; d < g.rank; ++d) {
        g.index_shape[d] = index_shape[d];
        g.strides[d] = strides[d];
    }
    g.dim = dim;
    return g;
}

__device__ __forceinline__ int64_t picked_offset(int64_t linear, const PickGeometry& g, int64_t pick) {
    int64_t offset = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
        const int64_t coordinate = linear % g.index_shape[d];
        linear /= g.index_shape[d];
        offset += (d == g.dim ? pick : coordinate) * g.strides[d];
    }
    return offset;
}

template <typename T>
__global__ void gather_kernel(const T* x, const int64_t* picks, T* out, PickGeometry g, int64_t total) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[linear] = x[picked_offset(linear, g, picks[linear])];
}

template <typename T>
__global__ void scatter_add_kernel(T* out, const int64_t* picks, const T* source, PickGeometry g, int64_t total) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x)
        atomic_accumulate(out + picked_offset(linear, g, picks[linear]), source[linear]);
}

__global__ void one_hot_kernel(const int64_t* classes, int64_t* out, int64_t count, int64_t num_classes) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i * num_classes + classes[i]] = 1;
}

template <typename T>
__global__ void dropout_mask_kernel(T* mask, int64_t count, double p, T keep_scale, uint64_t seed, uint64_t first) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        mask[i] = uniform_from(philox_at(seed, first + static_cast<uint64_t>(i))) < p ? T(0) : keep_scale;
}

// Types the accumulating kernels support (CUDA has no 8-bit atomicAdd).
template <typename Fn>
void dispatch_accumulating(DType dtype, const char* op, Fn&& fn) {
    switch (dtype) {
        case DType::f32: return fn.template operator()<float>();
        case DType::f64: return fn.template operator()<double>();
        case DType::i64: return fn.template operator()<int64_t>();
        case DType::i32: return fn.template operator()<int32_t>();
        default: break;
    }
    raise<DTypeError>(op, "the CUDA backend accumulates float32, float64, int64 and int32, got ", dtype_name(dtype));
}

}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
    const Tensor picks = int64_indices(index);
    const AxisSplit in = split_at(x.shape(), dim);
    const int64_t count = picks.numel(), total = in.outer * count * in.inner;
    if (total == 0) return;
    dispatch_all(x.dtype(), "index_select", [&]<typename T>() {
        index_select_kernel<T><<<grid_for(total), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(x.raw_data()), static_cast<const int64_t*>(picks.raw_data()),
            static_cast<T*>(out.raw_data()), in, count);
    });
    check_launch("index_select");
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
    const Tensor picks = int64_indices(index);
    const AxisSplit target = split_at(out.shape(), dim);
    const int64_t count = picks.numel(), total = target.outer * count * target.inner;
    if (total == 0) return;
    dispatch_accumulating(out.dtype(), "index_add", [&]<typename T>() {
        index_add_kernel<T><<<grid_for(total), kThreads, 0, launch_stream()>>>(
            static_cast<T*>(out.raw_data()), static_cast<const int64_t*>(picks.raw_data()),
            static_cast<const T*>(source.raw_data()), target, count);
    });
    check_launch("index_add");
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
    const Tensor picks = int64_indices(index);
    const int64_t total = picks.numel();
    if (total == 0) return;
    const PickGeometry g = pick_geometry(index.shape(), x.shape(), dim, "gather");
    dispatch_all(x.dtype(), "gather", [&]<typename T>() {
        gather_kernel<T><<<grid_for(total), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(x.raw_data()), static_cast<const int64_t*>(picks.raw_data()),
            static_cast<T*>(out.raw_data()), g, total);
    });
    check_launch("gather");
}

void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
    const Tensor picks = int64_indices(index);
    const int64_t total = picks.numel();
    if (total == 0) return;
    const PickGeometry g = pick_geometry(index.shape(), out.shape(), dim, "scatter_add");
    dispatch_accumulating(out.dtype(), "scatter_add", [&]<typename T>() {
        scatter_add_kernel<T><<<grid_for(total), kThreads, 0, launch_stream()>>>(
            static_cast<T*>(out.raw_data()), static_cast<const int64_t*>(picks.raw_data()),
            static_cast<const T*>(source.raw_data()), g, total);
    });
    check_launch("scatter_add");
}

void one_hot(const Tensor& indices, const Tensor& out) {
    const Tensor classes = int64_indices(indices);
    const int64_t count = classes.numel();
    if (count == 0) return;
    one_hot_kernel<<<grid_for(count), kThreads, 0, launch_stream()>>>(
        static_cast<const int64_t*>(classes.raw_data()), static_cast<int64_t*>(out.raw_data()), count, out.size(-1));
    check_launch("one_hot");
}

void dropout_mask(const Tensor& out, double p, uint64_t seed, uint64_t first) {
    const int64_t count = out.numel();
    if (count == 0) return;
    dispatch_floating(out.dtype(), "dropout", [&]<typename T>() {
        const T keep_scale = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
        dropout_mask_kernel<T><<<grid_for(count), kThreads, 0, launch_stream()>>>(static_cast<T*>(out.raw_data()),
                                                                                  count, p, keep_scale, seed, first);
    });
    check_launch("dropout");
}

}  // namespace kasmina::kernels::cuda
