// Layer and batch normalization on the GPU (contracts of kernels/normalization.h's cpu:: functions).
//   layer norm   one block per row with the row in registers (x read once; rows over 4096 elements
//                fall back to a two-pass kernel); backward likewise, weight/bias gradients by the
//                tiled column sum.
//   batch norm   per-channel statistics as column sums over [N, C*S] (tiled, two passes, deterministic)
//                folded per channel, then an elementwise pass; backward likewise.
#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/normalization.h"

namespace kasmina::kernels::cuda {
namespace {

template <typename T>
const T* data_or_null(const Tensor& t) {
    return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}
template <typename T>
T* mutable_or_null(const Tensor& t) {
    return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

unsigned blocks_for(int64_t items) { return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(items, 1), 65535 * 16)); }

// ---- layer norm ----------------------------------------------------------------------------------

template <typename T>
__global__ void layer_norm_kernel(const T* x, const T* weight, const T* bias, T eps, T* out, T* mean_out, T* rstd_out,
                                  int64_t rows, int64_t n) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* in = x + row * n;
        T total = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) total += in[i];
        const T mean = block_sum(total) / static_cast<T>(n);
        T squares = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const T deviation = in[i] - mean;
            squares += deviation * deviation;
        }
        const T rstd = T(1) / sqrt(block_sum(squares) / static_cast<T>(n) + eps);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T value = (in[i] - mean) * rstd;
            if (weight) value *= weight[i];
            if (bias) value += bias[i];
            out[row * n + i] = value;
        }
        if (threadIdx.x == 0) {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
    }
}

// Rows of up to kItems * blockDim.x elements held in registers: x is read once (the two-pass
// kernel above reads it three times). Element k of a thread is i = threadIdx.x + k * blockDim.x, so
// each load instruction is coalesced across the block.
template <typename T, int kItems>
__global__ void layer_norm_registers_kernel(const T* x, const T* weight, const T* bias, T eps, T* out, T* mean_out,
                                            T* rstd_out, int64_t rows, int64_t n) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* in = x + row * n;
        T values[kItems];
        T total = 0;
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
            const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
            values[k] = i < n ? in[i] : T(0);
            total += values[k];
        }
        const T mean = block_sum(total) / static_cast<T>(n);
        T squares = 0;
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
            const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
            const T deviation = i < n ? values[k] - mean : T(0);
            squares += deviation * deviation;
        }
        const T rstd = T(1) / sqrt(block_sum(squares) / static_cast<T>(n) + eps);
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
            const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
            if (i >= n) continue;
            T value = (values[k] - mean) * rstd;
            if (weight) value *= weight[i];
            if (bias) value += bias[i];
            out[row * n + i] = value;
        }
        if (threadIdx.x == 0) {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
    }
}

// float32 rows of n % 4 == 0 elements (n <= 128 * kVec), 16-byte aligned: one warp per row, each lane
// holding kVec float4 of it in registers; the reductions are warp shuffles with no block-wide barrier,
// so many rows' loads are in flight at once (one block per row waited on two __syncthreads per row).
template <int kVec>
__global__ void layer_norm_warp_kernel(const float* x, const float* weight, const float* bias, float eps, float* out,
                                       float* mean_out, float* rstd_out, int64_t rows, int64_t n) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = blockDim.x / 32, quads = n / 4;
    const float4* weight4 = reinterpret_cast<const float4*>(weight);
    const float4* bias4 = reinterpret_cast<const float4*>(bias);
    for (int64_t row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += static_cast<int64_t>(gridDim.x) * warps) {
        const float4* in = reinterpret_cast<const float4*>(x + row * n);
        float4 v[kVec];
        float total = 0.0f;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            const int64_t j = lane + 32 * k;
            v[k] = j < quads ? in[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            total += (v[k].x + v[k].y) + (v[k].z + v[k].w);
        }
        const float mean = warp_all_sum(total) / static_cast<float>(n);
        float squares = 0.0f;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            if (lane + 32 * k >= quads) continue;
            const float a = v[k].x - mean, b = v[k].y - mean, c = v[k].z - mean, d = v[k].w - mean;
            squares += (a * a + b * b) + (c * c + d * d);
        }
        const float rstd = 1.0f / sqrtf(warp_all_sum(squares) / static_cast<float>(n) + eps);
        float4* row_out = reinterpret_cast<float4*>(out + row * n);
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            const int64_t j = lane + 32 * k;
            if (j >= quads) continue;
            float4 o = make_float4((v[k].x - mean) * rstd, (v[k].y - mean) * rstd, (v[k].z - mean) * rstd,
                                   (v[k].w - mean) * rstd);
            if (weight) {
                const float4 w = weight4[j];
                o = make_float4(o.x * w.x, o.y * w.y, o.z * w.z, o.w * w.w);
            }
            if (bias) {
                const float4 b = bias4[j];
                o = make_float4(o.x + b.x, o.y + b.y, o.z + b.z, o.w + b.w);
            }
            row_out[j] = o;
        }
        if (lane == 0) {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
    }
}

// Runs the warp-per-row kernel when the rows fit it (float32, n % 4 == 0, n <= 2048, aligned); false otherwise.
bool layer_norm_by_warps(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& output,
                         const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t n) {
    if (x.dtype() != DType::f32 || n % 4 != 0 || n > 2048) return false;
    const float* w = data_or_null<float>(weight);
    const float* b = data_or_null<float>(bias);
    if (!aligned_to(x.raw_data(), 16) || !aligned_to(output.raw_data(), 16) || (w && !aligned_to(w, 16)) ||
        (b && !aligned_to(b, 16)))
        return false;
    const int64_t per_lane = (n / 4 + 31) / 32;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((rows + 7) / 8, 65535 * 16));
    const auto launch = [&]<int kVec>() {
        layer_norm_warp_kernel<kVec><<<blocks, kThreads, 0, launch_stream()>>>(
            static_cast<const float*>(x.raw_data()), w, b, static_cast<float>(eps), static_cast<float*>(output.raw_data()),
            static_cast<float*>(mean.raw_data()), static_cast<float*>(rstd.raw_data()), rows, n);
    };
    if (per_lane <= 1) launch.template operator()<1>();
    else if (per_lane <= 2) launch.template operator()<2>();
    else if (per_lane <= 4) launch.template operator()<4>();
    else if (per_lane <= 8) launch.template operator()<8>();
    else launch.template operator()<16>();
    return true;
}

// The backward's input gradient with grad and x read once into registers (see above). With
// affine_partials, the same pass also sums each column's (grad * xhat, grad) over the block's rows
// (a thread keeps its columns from row to row) into affine_partials[block][column]: the affine
// gradients then need no second pass over grad and x.
template <typename T, int kItems>
__global__ void layer_norm_backward_registers_kernel(const T* grad, const T* x, const T* mean, const T* rstd,
                                                     const T* weight, T* grad_input, int64_t rows, int64_t n,
                                                     PairSum<T>* affine_partials) {
    PairSum<T> affine[kItems] = {};
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t base = row * n;
        const T mu = mean[row], r = rstd[row];
        T g[kItems], xhat[kItems];
        T sum_g = 0, sum_g_xhat = 0;
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
            const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
            const T raw = i < n ? grad[base + i] : T(0);
            g[k] = i < n && weight ? raw * weight[i] : raw;
            xhat[k] = i < n ? (x[base + i] - mu) * r : T(0);
            sum_g += g[k];
            sum_g_xhat += g[k] * xhat[k];
            affine[k] += PairSum<T>{raw * xhat[k], raw};
        }
        const T mean_g = block_sum(sum_g) / static_cast<T>(n);
        const T mean_g_xhat = block_sum(sum_g_xhat) / static_cast<T>(n);
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
            const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
            if (i < n) grad_input[base + i] = r * (g[k] - mean_g - xhat[k] * mean_g_xhat);
        }
    }
    if (!affine_partials) return;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (i < n) affine_partials[blockIdx.x * n + i] = affine[k];
    }
}

// Blocks of the fused backward (input and affine gradients in one pass): enough to fill the device,
// few enough that their column partials stay small.
constexpr int64_t kAffineBlocks = 1024;

// Calls fn.template operator()<kItems>() with the smallest register count holding a row of n
// (n <= 16 * kThreads); returns false for longer rows (the two-pass kernels handle those).
template <typename Fn>
bool with_row_registers(int64_t n, Fn&& fn) {
    const int64_t per_thread = (n + kThreads - 1) / kThreads;
    if (per_thread <= 1) fn.template operator()<1>();
    else if (per_thread <= 2) fn.template operator()<2>();
    else if (per_thread <= 4) fn.template operator()<4>();
    else if (per_thread <= 8) fn.template operator()<8>();
    else if (per_thread <= 16) fn.template operator()<16>();
    else return false;
    return true;
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = grad * weight, xhat = (x - mean) * rstd
template <typename T>
__global__ void layer_norm_backward_input_kernel(const T* grad, const T* x, const T* mean, const T* rstd,
                                                 const T* weight, T* grad_input, int64_t rows, int64_t n) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t base = row * n;
        const T mu = mean[row], r = rstd[row];
        T sum_g = 0, sum_g_xhat = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const T g = weight ? grad[base + i] * weight[i] : grad[base + i];
            sum_g += g;
            sum_g_xhat += g * (x[base + i] - mu) * r;
        }
        const T mean_g = block_sum(sum_g) / static_cast<T>(n);
        const T mean_g_xhat = block_sum(sum_g_xhat) / static_cast<T>(n);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const T g = weight ? grad[base + i] * weight[i] : grad[base + i];
            const T xhat = (x[base + i] - mu) * r;
            grad_input[base + i] = r * (g - mean_g - xhat * mean_g_xhat);
        }
    }
}

// Column terms of the affine gradients in one pass: (sum_rows grad * xhat, sum_rows grad), the
// gradients of the weight and the bias.
template <typename T>
struct GradTimesXhatAndGrad {
    const T *grad, *x, *mean, *rstd;
    int64_t n;
    __device__ PairSum<T> operator()(int64_t r, int64_t c) const {
        const T g = grad[r * n + c];
        return {g * (x[r * n + c] - mean[r]) * rstd[r], g};
    }
};

// ---- batch norm statistics as [N, C*S] column sums, then one block per channel over its S sums ------

// The first value of each channel, x[0, c, 0]: the shift of its moments.
template <typename T>
__device__ __forceinline__ T channel_shift(const T* x, int64_t c, int64_t spatial) {
    return x[spatial == 1 ? c : c / spatial * spatial];
}

// Moments about each channel's first value K: d = x - K gives (sum d, sum d^2) in one pass. |mean - K|
// is of the order of the spread, so variance = E[d^2] - E[d]^2 keeps float32's precision for any
// offset of the data (raw moments would cancel it away).
template <typename T>
struct ShiftedMoments {
    const T* x;
    int64_t cols, spatial;
    __device__ PairSum<T> operator()(int64_t r, int64_t c) const {
        const T d = x[r * cols + c] - channel_shift(x, c, spatial);
        return {d, d * d};
    }
};

// (sum dy, sum dy * xhat) per column in one pass: the backward's two channel sums.
template <typename T>
struct GradAndGradTimesNormalized {
    const T *grad, *x, *mean, *invstd;
    int64_t cols, spatial;
    __device__ PairSum<T> operator()(int64_t r, int64_t c) const {
        const int64_t channel = spatial == 1 ? c : c / spatial;
        const T g = grad[r * cols + c];
        return {g, g * (x[r * cols + c] - mean[channel]) * invstd[channel]};
    }
};

// first[c], second[c] = scale * the sums of columns c * S .. c * S + S of the two column-total arrays.
template <typename T>
__global__ void channel_totals_kernel(const T* column_first, const T* column_second, T* first, T* second,
                                      int64_t channels, int64_t spatial, T scale) {
    for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
        T total_first = 0, total_second = 0;
#pragma unroll 4
        for (int64_t s = threadIdx.x; s < spatial; s += blockDim.x) {
            total_first += column_first[c * spatial + s];
            total_second += column_second[c * spatial + s];
        }
        total_first = block_sum(total_first);
        total_second = block_sum(total_second);
        if (threadIdx.x == 0) first[c] = total_first * scale, second[c] = total_second * scale;
    }
}

// From the shifted moments (E[d] in `mean`, E[d^2]): the mean (in place), invstd, and the running
// statistics (unbiased variance) when tracked.
template <typename T>
__global__ void batch_norm_finish_kernel(const T* x, int64_t spatial, T* mean, const T* second_moment, T eps, T momentum,
                                         int64_t count, T* save_invstd, T* running_mean, T* running_var, int64_t channels) {
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < channels;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const T shifted_mean = mean[c];
        const T variance = max(second_moment[c] - shifted_mean * shifted_mean, T(0));
        mean[c] = x[c * spatial] + shifted_mean;
        save_invstd[c] = T(1) / sqrt(variance + eps);
        if (running_mean) {
            running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean[c];
            running_var[c] = (T(1) - momentum) * running_var[c] +
                             momentum * variance * static_cast<T>(count) / static_cast<T>(count - 1);
        }
    }
}

// Per channel c of [N, C, S]: first[c], second[c] = scale * the two sums over n, s of value(n, c * S + s).
template <typename T, typename Value>
void channel_sums(Value value, int64_t batch, int64_t channels, int64_t spatial, T scale, T* first, T* second,
                  const Tensor& like) {
    const int64_t cols = channels * spatial;
    const int64_t partials = column_chunks(batch, cols) * cols;
    const int64_t column_totals = spatial == 1 ? 0 : 2 * cols;
    const Tensor scratch = Tensor::empty({2 * partials + column_totals}, like.options());
    auto* partial = static_cast<PairSum<T>*>(scratch.raw_data());
    if (spatial == 1) {  // a column is a channel
        column_sums(value, batch, cols, partial, StorePairScaled<T>{first, second, scale});
        return;
    }
    T* column_first = reinterpret_cast<T*>(partial + partials);
    T* column_second = column_first + cols;
    column_sums(value, batch, cols, partial, StorePairScaled<T>{column_first, column_second});
    // A block of 1024 threads a channel, loads unrolled: a few channels' sums are latency-bound.
    channel_totals_kernel<T><<<blocks_for(channels), 1024, 0, launch_stream()>>>(column_first, column_second, first, second,
                                                                                 channels, spatial, scale);
}

// ---- batch norm ([N, C, S] contiguous) ----------------------------------------------------------------

// Elementwise passes over [N, C, S] that find each element's channel without a division: with S == 1
// a thread owns one channel and walks rows; with S >= kPlaneMin a block walks one (n, c) plane at a
// time; between them, the flat kernel divides. `make(c)` builds the per-channel functor (its constants
// loaded once), which is then called with each element's index.
constexpr int64_t kPlaneMin = 128;
constexpr int64_t kRowsPerThread = 8;

template <typename Make>
__global__ void channel_rows_kernel(Make make, int64_t batch, int64_t channels) {
    const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (c >= channels) return;
    const auto element = make(c);
    for (int64_t n = blockIdx.y; n < batch; n += gridDim.y) element(n * channels + c);
}

template <typename Make>
__global__ void channel_planes_kernel(Make make, int64_t planes, int64_t channels, int64_t spatial) {
    for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const auto element = make(p % channels);
        const int64_t base = p * spatial;
        for (int64_t s = threadIdx.x; s < spatial; s += blockDim.x) element(base + s);
    }
}

template <typename Make>
__global__ void channel_flat_kernel(Make make, int64_t total, int64_t channels, int64_t spatial) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        make((i / spatial) % channels)(i);
}

template <typename Make>
void for_each_channel_element(Make make, int64_t batch, int64_t channels, int64_t spatial) {
    const int64_t total = batch * channels * spatial;
    if (total == 0) return;
    if (spatial == 1) {
        const dim3 grid(static_cast<unsigned>((channels + kThreads - 1) / kThreads),
                        static_cast<unsigned>(std::clamp<int64_t>(batch / kRowsPerThread, 1, 65535)));
        channel_rows_kernel<<<grid, kThreads, 0, launch_stream()>>>(make, batch, channels);
    } else if (spatial >= kPlaneMin) {
        const int64_t planes = batch * channels;
        channel_planes_kernel<<<static_cast<unsigned>(std::min<int64_t>(planes, 1 << 20)), kThreads, 0, launch_stream()>>>(
            make, planes, channels, spatial);
    } else {
        channel_flat_kernel<<<grid_for(total), kThreads, 0, launch_stream()>>>(make, total, channels, spatial);
    }
}

// out = (x - mean[c]) * invstd[c] * weight[c] + bias[c], as (x - mean) * a + b with a, b per channel
// (the subtraction first keeps a large mean from cancelling); invstd from the variance when
// `from_variance` (eval).
template <typename T>
void batch_norm_apply(const T* x, const T* mean, const T* scale_source, bool from_variance, T eps, const T* weight,
                      const T* bias, T* out, int64_t batch, int64_t channels, int64_t spatial) {
    for_each_channel_element(
        [=] __device__(int64_t c) {
            const T invstd = from_variance ? T(1) / sqrt(scale_source[c] + eps) : scale_source[c];
            const T a = weight ? invstd * weight[c] : invstd;
            const T b = bias ? bias[c] : T(0), mu = mean[c];
            return [=](int64_t i) { out[i] = (x[i] - mu) * a + b; };
        },
        batch, channels, spatial);
}

// training: dx = weight * invstd * (dy - (sum_dy + xhat * sum_dy_xhat) / n); eval: dx = dy * weight * invstd
template <typename T>
void batch_norm_backward_input(const T* grad, const T* x, const T* mean, const T* invstd, const T* weight,
                               const T* sum_dy, const T* sum_dy_xhat, bool training, T* grad_input, int64_t batch,
                               int64_t channels, int64_t spatial) {
    const T inverse_count = T(1) / static_cast<T>(batch * spatial);
    for_each_channel_element(
        [=] __device__(int64_t c) {
            const T scale = (weight ? weight[c] : T(1)) * invstd[c];
            // training: dx = scale * (g - mean_dy - (x - mean) * slope), slope = invstd * mean_dy_xhat
            const T mean_dy = training ? sum_dy[c] * inverse_count : T(0);
            const T slope = training ? invstd[c] * sum_dy_xhat[c] * inverse_count : T(0);
            const T mu = mean[c];
            return [=](int64_t i) { grad_input[i] = scale * (grad[i] - mean_dy - (x[i] - mu) * slope); };
        },
        batch, channels, spatial);
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& output,
                const Tensor& mean, const Tensor& rstd) {
    const int64_t rows = x.size(0), n = x.size(1);
    if (rows == 0) return;
    if (layer_norm_by_warps(x, weight, bias, eps, output, mean, rstd, rows, n)) {
        check_launch("layer_norm");
        return;
    }
    dispatch_floating(x.dtype(), "layer_norm", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* out = static_cast<T*>(output.raw_data());
        T* mean_out = static_cast<T*>(mean.raw_data());
        T* rstd_out = static_cast<T*>(rstd.raw_data());
        const bool fits = with_row_registers(n, [&]<int kItems>() {
            layer_norm_registers_kernel<T, kItems><<<blocks_for(rows), kThreads, 0, launch_stream()>>>(
                in, data_or_null<T>(weight), data_or_null<T>(bias), static_cast<T>(eps), out, mean_out, rstd_out, rows,
                n);
        });
        if (!fits)
            layer_norm_kernel<T><<<blocks_for(rows), kThreads, 0, launch_stream()>>>(
                in, data_or_null<T>(weight), data_or_null<T>(bias), static_cast<T>(eps), out, mean_out, rstd_out, rows,
                n);
    });
    check_launch("layer_norm");
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
    const int64_t rows = x.size(0), n = x.size(1);
    dispatch_floating(x.dtype(), "layer_norm_backward", [&]<typename T>() {
        const T* g = static_cast<const T*>(grad.raw_data());
        const T* xs = static_cast<const T*>(x.raw_data());
        const T* mu = static_cast<const T*>(mean.raw_data());
        const T* r = static_cast<const T*>(rstd.raw_data());
        const bool affine = grad_weight.defined() || grad_bias.defined();
        const StorePairScaled<T> store_affine{mutable_or_null<T>(grad_weight), mutable_or_null<T>(grad_bias)};
        bool affine_done = false;
        if (grad_input.defined() && rows > 0) {
            T* dx = static_cast<T*>(grad_input.raw_data());
            const bool fits = with_row_registers(n, [&]<int kItems>() {
                // With affine gradients: a bounded grid whose blocks also sum their columns, then the
                // column sums of those partials.
                const int64_t blocks = affine ? std::min(rows, kAffineBlocks) : static_cast<int64_t>(blocks_for(rows));
                const Tensor partials = Tensor::empty({affine ? 2 * blocks * n : 0}, x.options());
                auto* affine_partials = affine ? static_cast<PairSum<T>*>(partials.raw_data()) : nullptr;
                layer_norm_backward_registers_kernel<T, kItems><<<static_cast<unsigned>(blocks), kThreads, 0, launch_stream()>>>(
                    g, xs, mu, r, data_or_null<T>(weight), dx, rows, n, affine_partials);
                if (!affine) return;
                const Tensor scratch = Tensor::empty({2 * column_chunks(blocks, n) * n}, x.options());
                column_sums(MatrixElement<PairSum<T>>{affine_partials, n}, blocks, n,
                            static_cast<PairSum<T>*>(scratch.raw_data()), store_affine);
            });
            affine_done = fits && affine;
            if (!fits)
                layer_norm_backward_input_kernel<T><<<blocks_for(rows), kThreads, 0, launch_stream()>>>(
                    g, xs, mu, r, data_or_null<T>(weight), dx, rows, n);
        }
        if (affine && !affine_done) {
            if (rows > 0) {
                const Tensor scratch = Tensor::empty({2 * column_chunks(rows, n) * n}, x.options());
                column_sums(GradTimesXhatAndGrad<T>{g, xs, mu, r, n}, rows, n, static_cast<PairSum<T>*>(scratch.raw_data()),
                            store_affine);
            } else {
                if (grad_weight.defined())
                    KASMINA_CUDA_CHECK(cudaMemsetAsync(grad_weight.raw_data(), 0, n * sizeof(T), launch_stream()));
                if (grad_bias.defined())
                    KASMINA_CUDA_CHECK(cudaMemsetAsync(grad_bias.raw_data(), 0, n * sizeof(T), launch_stream()));
            }
        }
    });
    check_launch("layer_norm_backward");
}

void batch_norm_training(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, double momentum,
                         const Tensor& output, const Tensor& save_mean, const Tensor& save_invstd,
                         const Tensor& running_mean, const Tensor& running_var) {
    const int64_t batch = x.size(0), channels = x.size(1), spatial = x.size(2);
    dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
        const T* xs = static_cast<const T*>(x.raw_data());
        T* mean = static_cast<T*>(save_mean.raw_data());
        const T inverse_count = T(1) / static_cast<T>(batch * spatial);
        // One pass over x: the moments about each channel's first value.
        const Tensor second_moment = Tensor::empty({channels}, x.options());
        channel_sums<T>(ShiftedMoments<T>{xs, channels * spatial, spatial}, batch, channels, spatial, inverse_count, mean,
                        static_cast<T*>(second_moment.raw_data()), x);
        batch_norm_finish_kernel<T><<<grid_for(channels), kThreads, 0, launch_stream()>>>(
            xs, spatial, mean, static_cast<const T*>(second_moment.raw_data()), static_cast<T>(eps),
            static_cast<T>(momentum), batch * spatial, static_cast<T*>(save_invstd.raw_data()),
            mutable_or_null<T>(running_mean), mutable_or_null<T>(running_var), channels);
        batch_norm_apply<T>(static_cast<const T*>(x.raw_data()), static_cast<const T*>(save_mean.raw_data()),
                            static_cast<const T*>(save_invstd.raw_data()), false, T(0), data_or_null<T>(weight),
                            data_or_null<T>(bias), static_cast<T*>(output.raw_data()), batch, channels, spatial);
    });
    check_launch("batch_norm");
}

void batch_norm_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                          const Tensor& running_var, double eps, const Tensor& output) {
    const int64_t channels = x.size(1), spatial = x.size(2);
    dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
        batch_norm_apply<T>(static_cast<const T*>(x.raw_data()), static_cast<const T*>(running_mean.raw_data()),
                            static_cast<const T*>(running_var.raw_data()), true, static_cast<T>(eps), data_or_null<T>(weight),
                            data_or_null<T>(bias), static_cast<T*>(output.raw_data()), x.size(0), channels, spatial);
    });
    check_launch("batch_norm");
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, bool training, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
    const int64_t batch = x.size(0), channels = x.size(1), spatial = x.size(2);
    const bool need_sums = grad_weight.defined() || grad_bias.defined() || (training && grad_input.defined());
    const Tensor sum_dy = grad_bias.defined() ? grad_bias : Tensor::empty({channels}, x.options());
    const Tensor sum_dy_xhat = grad_weight.defined() ? grad_weight : Tensor::empty({channels}, x.options());
    dispatch_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
        const T* g = static_cast<const T*>(grad.raw_data());
        const T* xs = static_cast<const T*>(x.raw_data());
        const T* mu = static_cast<const T*>(mean.raw_data());
        const T* is = static_cast<const T*>(invstd.raw_data());
        if (need_sums) {
            channel_sums<T>(GradAndGradTimesNormalized<T>{g, xs, mu, is, channels * spatial, spatial}, batch, channels,
                            spatial, T(1), static_cast<T*>(sum_dy.raw_data()), static_cast<T*>(sum_dy_xhat.raw_data()), x);
        }
        if (grad_input.defined())
            batch_norm_backward_input<T>(g, xs, mu, is, data_or_null<T>(weight), static_cast<const T*>(sum_dy.raw_data()),
                                         static_cast<const T*>(sum_dy_xhat.raw_data()), training,
                                         static_cast<T*>(grad_input.raw_data()), batch, channels, spatial);
    });
    check_launch("batch_norm_backward");
}

}  // namespace kasmina::kernels::cuda
