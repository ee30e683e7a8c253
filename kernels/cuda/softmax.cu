// Softmax and log-softmax on the GPU over the [outer, n, inner] geometry: along the last dim
// (inner == 1) one block per row with block reductions; otherwise one thread per (outer, inner)
// pair walking the n axis (coalesced across inner). A row of -inf gives NaN, like PyTorch.
#include "kernels/axis_split.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"

namespace kasmina::kernels::cuda {
namespace {

template <typename T>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* in = x + row * n;
        T* out = y + row * n;
        T peak = -INFINITY;
        for (int64_t k = threadIdx.x; k < n; k += blockDim.x) peak = device_max(peak, in[k]);
        peak = block_max(peak);
        if (isinf(peak) && peak < 0) peak = 0;
        T total = 0;
        for (int64_t k = threadIdx.x; k < n; k += blockDim.x) total += exp(in[k] - peak);
        total = block_sum(total);
        const T log_total = ::log(total);
        for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
            out[k] = log ? in[k] - peak - log_total : exp(in[k] - peak) / total;
    }
}

template <typename T>
__global__ void softmax_strided_kernel(const T* x, T* y, AxisSplit g, bool log) {
    for (int64_t pair = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; pair < g.outer * g.inner;
         pair += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t base = (pair / g.inner) * g.n * g.inner + pair % g.inner;
        T peak = -INFINITY;
        for (int64_t k = 0; k < g.n; ++k) peak = device_max(peak, x[base + k * g.inner]);
        if (isinf(peak) && peak < 0) peak = 0;
        T total = 0;
        for (int64_t k = 0; k < g.n; ++k) total += exp(x[base + k * g.inner] - peak);
        const T log_total = ::log(total);
        for (int64_t k = 0; k < g.n; ++k) {
            const T shifted = x[base + k * g.inner] - peak;
            y[base + k * g.inner] = log ? shifted - log_total : exp(shifted) / total;
        }
    }
}

// softmax: grad_x = y * (grad - sum(grad * y)); log_softmax: grad_x = grad - exp(y) * sum(grad)
template <typename T>
__global__ void softmax_backward_rows_kernel(const T* grad, const T* y, T* out, int64_t rows, int64_t n, bool log) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t base = row * n;
        T total = 0;
        for (int64_t k = threadIdx.x; k < n; k += blockDim.x) total += log ? grad[base + k] : grad[base + k] * y[base + k];
        total = block_sum(total);
        for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
            const int64_t at = base + k;
            out[at] = log ? grad[at] - exp(y[at]) * total : y[at] * (grad[at] - total);
        }
    }
}

template <typename T>
__global__ void softmax_backward_strided_kernel(const T* grad, const T* y, T* out, AxisSplit g, bool log) {
    for (int64_t pair = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; pair < g.outer * g.inner;
         pair += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t base = (pair / g.inner) * g.n * g.inner + pair % g.inner;
        T total = 0;
        for (int64_t k = 0; k < g.n; ++k) {
            const int64_t at = base + k * g.inner;
            total += log ? grad[at] : grad[at] * y[at];
        }
        for (int64_t k = 0; k < g.n; ++k) {
            const int64_t at = base + k * g.inner;
            out[at] = log ? grad[at] - exp(y[at]) * total : y[at] * (grad[at] - total);
        }
    }
}

unsigned row_grid(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(rows, 65535 * 16)); }

}  // namespace

void softmax(const Tensor& x, int64_t dim, bool log, const Tensor& out) {
    if (x.numel() == 0) return;
    const AxisSplit g = split_at(x.shape(), dim);
    dispatch_floating(x.dtype(), "softmax", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        if (g.inner == 1)
            softmax_rows_kernel<T><<<row_grid(g.outer), kThreads, 0, launch_stream()>>>(in, result, g.outer, g.n, log);
        else
            softmax_strided_kernel<T>
                <<<grid_for(g.outer * g.inner), kThreads, 0, launch_stream()>>>(in, result, g, log);
    });
    check_launch(log ? "log_softmax" : "softmax");
}

void softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim, bool log, const Tensor& out) {
    if (y.numel() == 0) return;
    const AxisSplit g = split_at(y.shape(), dim);
    dispatch_floating(y.dtype(), "softmax_backward", [&]<typename T>() {
        const T* g_data = static_cast<const T*>(grad.raw_data());
        const T* y_data = static_cast<const T*>(y.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        if (g.inner == 1)
            softmax_backward_rows_kernel<T>
                <<<row_grid(g.outer), kThreads, 0, launch_stream()>>>(g_data, y_data, result, g.outer, g.n, log);
        else
            softmax_backward_strided_kernel<T>
                <<<grid_for(g.outer * g.inner), kThreads, 0, launch_stream()>>>(g_data, y_data, result, g, log);
    });
    check_launch("softmax_backward");
}

}  // namespace kasmina::kernels::cuda
