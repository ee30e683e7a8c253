// Index-driven ops on the CPU: index_select / index_add (rows picked along a dim), gather /
// scatter_add (per-element indices), one_hot. Indices are validated by the dispatcher.
#include "kernels/axis_split.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kasmina::kernels::cpu {
namespace {

std::vector<int64_t> read_indices(const Tensor& index) { return index.to_vector<int64_t>(); }

// torch.gather / scatter_add addressing: the element offset in a contiguous tensor of `strides`
// for entry `linear` of an index tensor of `index_shape`, with dimension `dim` replaced by `pick`.
int64_t picked_offset(int64_t linear, const Shape& index_shape, const Shape& strides, int64_t dim, int64_t pick) {
    int64_t offset = 0;
    for (int64_t d = static_cast<int64_t>(index_shape.size()) - 1; d >= 0; --d) {
        const int64_t coordinate = linear % index_shape[d];
        linear /= index_shape[d];
        offset += (d == dim ? pick : coordinate) * strides[d];
    }
    return offset;
}

}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
    const AxisSplit in = split_at(x.shape(), dim);
    const std::vector<int64_t> picks = read_indices(index);
    const int64_t count = static_cast<int64_t>(picks.size());
    dispatch_all(x.dtype(), "index_select", [&]<typename T>() {
        const T* source = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
#pragma omp parallel for collapse(2) schedule(static) if (in.outer * count * in.inner > 32768)
        for (int64_t o = 0; o < in.outer; ++o)
            for (int64_t i = 0; i < count; ++i) {
                const T* from = source + (o * in.n + picks[i]) * in.inner;
                T* to = result + (o * count + i) * in.inner;
                for (int64_t k = 0; k < in.inner; ++k) to[k] = from[k];
            }
    });
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
    const AxisSplit target = split_at(out.shape(), dim);
    const std::vector<int64_t> picks = read_indices(index);
    const int64_t count = static_cast<int64_t>(picks.size());
    dispatch_numeric(out.dtype(), "index_add", [&]<typename T>() {
        const T* from_data = static_cast<const T*>(source.raw_data());
        T* to_data = static_cast<T*>(out.raw_data());
        // Parallel over outer only: the same target row can be hit by several indices.
#pragma omp parallel for schedule(static) if (target.outer > 1 && target.outer * count * target.inner > 32768)
        for (int64_t o = 0; o < target.outer; ++o)
            for (int64_t i = 0; i < count; ++i) {
                const T* from = from_data + (o * count + i) * target.inner;
                T* to = to_data + (o * target.n + picks[i]) * target.inner;
                for (int64_t k = 0; k < target.inner; ++k) to[k] += from[k];
            }
    });
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
    const std::vector<int64_t> picks = read_indices(index);
    // index and out are contiguous [outer', n', inner']; x is contiguous [outer, n, inner] with
    // outer' <= outer and inner' <= inner per dimension (torch.gather's rule), so map coordinates.
    const Shape& index_shape = index.shape();
    const Shape x_strides = contiguous_strides(x.shape());
    const int64_t total = index.numel();
    dispatch_all(x.dtype(), "gather", [&]<typename T>() {
        const T* source = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        for (int64_t linear = 0; linear < total; ++linear)
            result[linear] = source[picked_offset(linear, index_shape, x_strides, dim, picks[linear])];
    });
}

void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
    const std::vector<int64_t> picks = read_indices(index);
    const Shape& index_shape = index.shape();
    const Shape out_strides = contiguous_strides(out.shape());
    const int64_t total = index.numel();
    dispatch_numeric(out.dtype(), "scatter_add", [&]<typename T>() {
        const T* from = static_cast<const T*>(source.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        for (int64_t linear = 0; linear < total; ++linear)
            result[picked_offset(linear, index_shape, out_strides, dim, picks[linear])] += from[linear];
    });
}

void one_hot(const Tensor& indices, const Tensor& out) {
    const std::vector<int64_t> classes = read_indices(indices);
    const int64_t num_classes = out.size(-1);
    int64_t* result = static_cast<int64_t*>(out.raw_data());
    for (size_t i = 0; i < classes.size(); ++i) result[static_cast<int64_t>(i) * num_classes + classes[i]] = 1;
}

void dropout_mask(const Tensor& out, double p, uint64_t seed, uint64_t first) {
    const int64_t count = out.numel();
    dispatch_floating(out.dtype(), "dropout", [&]<typename T>() {
        T* mask = static_cast<T*>(out.raw_data());
        const T keep_scale = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
#pragma omp parallel for schedule(static) if (count > 65536)
        for (int64_t i = 0; i < count; ++i)
            mask[i] = uniform_from(philox_at(seed, first + static_cast<uint64_t>(i))) < p ? T(0) : keep_scale;
    });
}

}  // namespace kasmina::kernels::cpu
