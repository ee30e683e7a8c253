// Layer and batch normalization on the GPU (contracts of kernels/normalization.h's cpu:: functions).
//   layer norm   one block per row with the row in registers (x read once; rows over 4096 elements
//                fall back to a two-pass kernel); backward likewise, weight/bias gradients by the
//                tiled column sum.
//   batch norm   per-channel sums in one pass over the data (blocks over (channel, batch slice) on
//                [N, C, S], tiled column sums on [N, C]), finished per channel in a fixed order
//                (deterministic), then an elementwise pass; backward likewise. Packs of four floats.
//                A training forward on [N, C] whose batch fits on chip runs as one cooperative kernel
//                that reads x once (set_batch_norm_on_chip).
#include <cooperative_groups.h>

#include <algorithm>
#include <climits>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/normalization.h"
#include "kernels/settings.h"

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

// How a pass reads the gradient: not at all (zeros), dense, or one value for every element (`uniform`:
// the gradient of a sum, read once rather than expanded into a copy).
template <typename T>
struct GradRead {
    const T* data = nullptr;
    bool uniform = false;
    __device__ T at(int64_t i) const { return data == nullptr ? T(0) : data[uniform ? 0 : i]; }
    // The pointer whose alignment the packed loads need (none when nothing is read per element).
    const void* per_element() const { return uniform ? nullptr : data; }
};

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
    wait_for_previous_kernel();
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
        launch_overlapped(layer_norm_warp_kernel<kVec>, blocks, kThreads, static_cast<const float*>(x.raw_data()), w, b,
                          static_cast<float>(eps), static_cast<float*>(output.raw_data()),
                          static_cast<float*>(mean.raw_data()), static_cast<float*>(rstd.raw_data()), rows, n);
    };
    if (per_lane <= 1) launch.template operator()<1>();
    else if (per_lane <= 2) launch.template operator()<2>();
    else if (per_lane <= 4) launch.template operator()<4>();
    else if (per_lane <= 8) launch.template operator()<8>();
    else launch.template operator()<16>();
    return true;
}

// The backward of the warp-per-row layer norm, on the same rows (float32, n % 4 == 0, here n <= 1024,
// 16-byte aligned): a warp holds a row's grad and xhat in registers, packs of four, and reduces with
// shuffles. With affine_partials, each lane also keeps its columns' (grad * xhat, grad) sums from row
// to row; at the end the block adds its warps' sums in warp order (deterministic) and writes them to
// affine_partials[block][column], which the column sums then finish.
constexpr int64_t kBackwardWarpColumns = 1024;

__device__ __forceinline__ float4 operator*(float4 a, float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }
__device__ __forceinline__ float4 operator+(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__device__ __forceinline__ float4 operator-(float4 a, float b) { return make_float4(a.x - b, a.y - b, a.z - b, a.w - b); }
__device__ __forceinline__ float4 operator*(float4 a, float b) { return make_float4(a.x * b, a.y * b, a.z * b, a.w * b); }
__device__ __forceinline__ float component_sum(float4 a) { return (a.x + a.y) + (a.z + a.w); }

template <int kVec>
__global__ void __launch_bounds__(kThreads, 1)
    layer_norm_backward_warp_kernel(GradRead<float> grad, const float* x, const float* mean, const float* rstd,
                                    const float* weight, float* grad_input, int64_t rows, int64_t n,
                                    PairSum<float>* affine_partials) {
    __shared__ PairSum<float> block_affine[kBackwardWarpColumns];
    wait_for_previous_kernel();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t warps = blockDim.x / 32, quads = n / 4;
    const float4* weight4 = reinterpret_cast<const float4*>(weight);
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 affine_g_xhat[kVec], affine_g[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) affine_g_xhat[k] = affine_g[k] = zero;
    for (int64_t row = blockIdx.x * warps + warp; row < rows; row += static_cast<int64_t>(gridDim.x) * warps) {
        const float4* g_row = reinterpret_cast<const float4*>(grad.data + row * n);
        const float4* x_row = reinterpret_cast<const float4*>(x + row * n);
        float4 g[kVec], xhat[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            const int64_t j = lane + 32 * k;
            const float value = grad.uniform ? grad.data[0] : 0.0f;
            g[k] = j >= quads ? zero : grad.uniform ? make_float4(value, value, value, value) : g_row[j];
            xhat[k] = j < quads ? x_row[j] : zero;
        }
        const float mu = mean[row], r = rstd[row];
        float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            const int64_t j = lane + 32 * k;
            if (j >= quads) continue;
            xhat[k] = (xhat[k] - mu) * r;
            affine_g_xhat[k] = affine_g_xhat[k] + g[k] * xhat[k];
            affine_g[k] = affine_g[k] + g[k];
            if (weight) g[k] = g[k] * weight4[j];
            sum_g += component_sum(g[k]);
            sum_g_xhat += component_sum(g[k] * xhat[k]);
        }
        const float mean_g = warp_all_sum(sum_g) / static_cast<float>(n);
        const float mean_g_xhat = warp_all_sum(sum_g_xhat) / static_cast<float>(n);
        float4* out = reinterpret_cast<float4*>(grad_input + row * n);
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
            const int64_t j = lane + 32 * k;
            if (j < quads) out[j] = ((g[k] - mean_g) + xhat[k] * -mean_g_xhat) * r;
        }
    }
    if (!affine_partials) return;
    for (int64_t w = 0; w < warps; ++w) {
        if (warp == w) {
#pragma unroll
            for (int k = 0; k < kVec; ++k) {
                const int64_t j = lane + 32 * k;
                if (j >= quads) continue;
                const float gx[4] = {affine_g_xhat[k].x, affine_g_xhat[k].y, affine_g_xhat[k].z, affine_g_xhat[k].w};
                const float gg[4] = {affine_g[k].x, affine_g[k].y, affine_g[k].z, affine_g[k].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    PairSum<float>& slot = block_affine[4 * j + e];
                    slot = w == 0 ? PairSum<float>{gx[e], gg[e]} : PairSum<float>{slot.first + gx[e], slot.second + gg[e]};
                }
            }
        }
        __syncthreads();
    }
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) affine_partials[blockIdx.x * n + c] = block_affine[c];
}

// Runs the warp-per-row backward when the rows fit it; false otherwise. `affine_partials` (or null) gets
// blocks() rows of n (grad * xhat, grad) sums.
struct LayerNormBackwardByWarps {
    int64_t rows, n;
    bool fits(GradRead<float> grad, const Tensor& x, const Tensor& weight, const Tensor& grad_input) const {
        return x.dtype() == DType::f32 && n % 4 == 0 && n <= kBackwardWarpColumns && grad_input.defined() &&
               aligned_to(grad.per_element(), 16) && aligned_to(x.raw_data(), 16) &&
               aligned_to(grad_input.raw_data(), 16) &&
               (!weight.defined() || aligned_to(weight.raw_data(), 16));
    }
    // One block a multiprocessor when the affine sums ride along (their partials stay few); else
    // enough blocks for every row's warp.
    int64_t blocks(bool affine) const {
        const int64_t warps = kThreads / 32, needed = (rows + warps - 1) / warps;
        return affine ? std::min<int64_t>(needed, current_device_attribute<cudaDevAttrMultiProcessorCount>())
                      : std::min<int64_t>(needed, 65535 * 16);
    }
    void launch(GradRead<float> grad, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& weight,
                const Tensor& grad_input, PairSum<float>* affine_partials) const {
        const unsigned grid = static_cast<unsigned>(blocks(affine_partials != nullptr));
        const int64_t per_lane = (n / 4 + 31) / 32;
        const auto run = [&]<int kVec>() {
            launch_overlapped(layer_norm_backward_warp_kernel<kVec>, grid, kThreads, grad,
                              static_cast<const float*>(x.raw_data()), static_cast<const float*>(mean.raw_data()),
                              static_cast<const float*>(rstd.raw_data()), data_or_null<float>(weight),
                              static_cast<float*>(grad_input.raw_data()), rows, n, affine_partials);
        };
        if (per_lane <= 1) run.template operator()<1>();
        else if (per_lane <= 2) run.template operator()<2>();
        else if (per_lane <= 4) run.template operator()<4>();
        else run.template operator()<8>();
    }
};

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

// ---- batch norm over [N, C, S] (contiguous) ------------------------------------------------------------
// Every pass finds each element's channel without dividing: with S == 1 (batch norm 1d) a thread owns
// channels and walks rows; with S >= kPlaneMin a block walks (n, c) planes; between them a flat kernel
// divides. Where rows (S == 1) or planes (S > 1) split into whole 16-byte packs and the pointers are
// aligned, every load and store moves a pack (four floats). A pass is given as a per-channel op: its
// constants, op.channel(c), loaded once per channel, and op(constants, x, g) per element (g is the
// gradient, or 0 where the pass reads none).

constexpr int64_t kPlaneMin = 128;
constexpr int64_t kRowsPerThread = 8;

using cuda::load_pack;  // the dense loads, which the overload below would hide

template <typename T, int kPack>
__device__ __forceinline__ Pack<T, kPack> load_pack(GradRead<T> g, int64_t i) {
    if (!g.uniform) return load_pack<T, kPack>(g.data, i);
    Pack<T, kPack> pack;
    const T value = g.data[0];
#pragma unroll
    for (int e = 0; e < kPack; ++e) pack.v[e] = value;
    return pack;
}

// Moments about each channel's first value K = x[0, c, 0]: d = x - K gives (sum d, sum d^2) in one
// pass. |mean - K| is of the order of the spread, so variance = E[d^2] - E[d]^2 keeps float32's
// precision for any offset of the data (raw moments would cancel it away).
template <typename T>
struct ShiftedMoments {
    const T* x;
    int64_t spatial;
    struct Channel {
        T shift;
    };
    __device__ Channel channel(int64_t c) const { return {x[c * spatial]}; }
    __device__ PairSum<T> operator()(const Channel& k, T value, T) const {
        const T d = value - k.shift;
        return {d, d * d};
    }
};

// (dy, dy * xhat): the backward's two channel sums in one pass.
template <typename T>
struct GradAndGradTimesNormalized {
    const T *mean, *invstd;
    struct Channel {
        T mean, invstd;
    };
    __device__ Channel channel(int64_t c) const { return {mean[c], invstd[c]}; }
    __device__ PairSum<T> operator()(const Channel& k, T x, T g) const { return {g, g * (x - k.mean) * k.invstd}; }
};

// out = (x - mean[c]) * invstd[c] * weight[c] + bias[c], as (x - mean) * a + b with a, b per channel
// (the subtraction first keeps a large mean from cancelling); invstd from the variance when
// `from_variance` (eval).
template <typename T>
struct Normalize {
    const T *mean, *scale_source, *weight, *bias;
    bool from_variance;
    T eps;
    struct Channel {
        T mean, a, b;
    };
    __device__ Channel channel(int64_t c) const {
        const T invstd = from_variance ? T(1) / sqrt(scale_source[c] + eps) : scale_source[c];
        return {mean[c], weight ? invstd * weight[c] : invstd, bias ? bias[c] : T(0)};
    }
    __device__ T operator()(const Channel& k, T x, T) const { return (x - k.mean) * k.a + k.b; }
};

// training: dx = weight * invstd * (dy - (sum_dy + xhat * sum_dy_xhat) / n), written as
// scale * (g - mean_dy - (x - mean) * slope) with slope = invstd * mean_dy_xhat; eval: dx = dy * weight * invstd.
template <typename T>
struct InputGradient {
    const T *mean, *invstd, *weight, *sum_dy, *sum_dy_xhat;
    bool training;
    T inverse_count;
    struct Channel {
        T scale, mean_dy, slope, mean;
    };
    __device__ Channel channel(int64_t c) const {
        return {(weight ? weight[c] : T(1)) * invstd[c], training ? sum_dy[c] * inverse_count : T(0),
                training ? invstd[c] * sum_dy_xhat[c] * inverse_count : T(0), mean[c]};
    }
    __device__ T operator()(const Channel& k, T x, T g) const { return k.scale * (g - k.mean_dy - (x - k.mean) * k.slope); }
};

// (x, 0): plain channel totals through the pair machinery (the second sum is dropped).
template <typename T>
struct ValueAndNothing {
    struct Channel {};
    __device__ Channel channel(int64_t) const { return {}; }
    __device__ PairSum<T> operator()(const Channel&, T x, T) const { return {x, T(0)}; }
};

// x + bias[c].
template <typename T>
struct AddBias {
    const T* bias;
    struct Channel {
        T bias;
    };
    __device__ Channel channel(int64_t c) const { return {bias[c]}; }
    __device__ T operator()(const Channel& k, T x, T) const { return x + k.bias; }
};

// The forward's store of each channel's shifted moment sums (d, d^2 about K = x[0, c, 0]): the mean,
// invstd, the running statistics (unbiased variance) when tracked, and the batch count when given.
template <typename T>
struct FinishStatistics {
    const T* x;
    int64_t spatial, count;
    T eps, momentum;
    T *mean, *invstd, *running_mean, *running_var;
    int64_t* batches_tracked;
    // Brings what operator() reads besides the sums into L2 ahead of it.
    __device__ void prefetch(int64_t c) const {
        prefetch_to_l2(x + c * spatial);
        if (running_mean) {
            prefetch_to_l2(running_mean + c);
            prefetch_to_l2(running_var + c);
        }
    }
    __device__ void operator()(int64_t c, PairSum<T> sums) const {
        const T inverse_count = T(1) / static_cast<T>(count);
        const T shifted_mean = sums.first * inverse_count;
        const T variance = max(sums.second * inverse_count - shifted_mean * shifted_mean, T(0));
        const T batch_mean = x[c * spatial] + shifted_mean;
        mean[c] = batch_mean;
        invstd[c] = T(1) / sqrt(variance + eps);
        if (running_mean) {
            running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * batch_mean;
            running_var[c] = (T(1) - momentum) * running_var[c] +
                             momentum * variance * static_cast<T>(count) / static_cast<T>(count - 1);
        }
        if (batches_tracked && c == 0) ++*batches_tracked;
    }
};

// ---- elementwise passes: out[i] = op(channel constants, x[i], g[i]) --------------------------------------

template <int kPack, typename T, typename Op>
__global__ void channel_rows_kernel(Op op, const T* x, GradRead<T> g, T* out, int64_t batch, int64_t channels) {
    wait_for_previous_kernel();
    const int64_t c = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kPack;
    if (c >= channels) return;
    typename Op::Channel k[kPack];
#pragma unroll
    for (int j = 0; j < kPack; ++j) k[j] = op.channel(c + j);
    for (int64_t step = blockIdx.y; step < batch; step += gridDim.y) {
        const int64_t n = batch - 1 - step;  // from the end: see channel_map
        const int64_t i = n * channels + c;
        const Pack<T, kPack> xs = load_pack<T, kPack>(x, i), gs = load_pack<T, kPack>(g, i);
        Pack<T, kPack> result;
#pragma unroll
        for (int j = 0; j < kPack; ++j) result.v[j] = op(k[j], xs.v[j], gs.v[j]);
        store_pack_streaming(out, i, result);
    }
}

template <int kPack, typename T, typename Op>
__global__ void channel_planes_kernel(Op op, const T* x, GradRead<T> g, T* out, int64_t planes, int64_t channels,
                                      int64_t spatial) {
    wait_for_previous_kernel();
    const int64_t packs = spatial / kPack;
    for (int64_t step = blockIdx.x; step < planes; step += gridDim.x) {
        const int64_t p = planes - 1 - step;  // from the end: see channel_map
        const typename Op::Channel k = op.channel(p % channels);
        const int64_t base = p * spatial;
#pragma unroll 4
        for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
            const int64_t i = base + j * kPack;
            const Pack<T, kPack> xs = load_pack<T, kPack>(x, i), gs = load_pack<T, kPack>(g, i);
            Pack<T, kPack> result;
#pragma unroll
            for (int e = 0; e < kPack; ++e) result.v[e] = op(k, xs.v[e], gs.v[e]);
            store_pack_streaming(out, i, result);
        }
    }
}

template <typename T, typename Op>
__global__ void channel_flat_kernel(Op op, const T* x, GradRead<T> g, T* out, int64_t total, int64_t channels,
                                    int64_t spatial) {
    wait_for_previous_kernel();
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i] = op(op.channel((i / spatial) % channels), x[i], g.at(i));
}

// The row and plane kernels walk the data from its end. Each follows a sums pass over the same data
// that walked it from the start, so the part read last (as much as L2 holds, up to ~50 MB) is read
// again from L2 rather than from memory. Their stores are marked evict-first, so the output does not
// push out the input lines still to be re-read.
template <typename T, typename Op>
void channel_map(Op op, const T* x, GradRead<T> g, T* out, int64_t batch, int64_t channels, int64_t spatial) {
    const int64_t total = batch * channels * spatial;
    if (total == 0) return;
    if (spatial == 1) {
        with_pack<T>(pack_for<T>(channels, {x, g.per_element(), out}), [&]<int kPack>() {
            const int64_t threads = channels / kPack;
            const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads),
                            static_cast<unsigned>(std::clamp<int64_t>(batch / kRowsPerThread, 1, 65535)));
            launch_overlapped(channel_rows_kernel<kPack, T, Op>, grid, kThreads, op, x, g, out, batch, channels);
        });
    } else if (spatial >= kPlaneMin) {
        const int64_t planes = batch * channels;
        with_pack<T>(pack_for<T>(spatial, {x, g.per_element(), out}), [&]<int kPack>() {
            launch_overlapped(channel_planes_kernel<kPack, T, Op>,
                              static_cast<unsigned>(std::min<int64_t>(planes, 1 << 20)), kThreads, op, x, g, out,
                              planes, channels, spatial);
        });
    } else {
        launch_overlapped(channel_flat_kernel<T, Op>, grid_for(total), kThreads, op, x, g, out, total, channels,
                          spatial);
    }
}

// ---- channel sums: store(c, the pair of sums over n, s of op(constants, x, g)) -----------------------------

// S == 1: a column of [N, C] is a channel; the tiled column sums do it.
template <typename T, typename Op>
struct ColumnOfChannels {
    Op op;
    const T* x;
    GradRead<T> g;
    int64_t channels;
    __device__ PairSum<T> operator()(int64_t r, int64_t c) const {
        const int64_t i = r * channels + c;
        return op(op.channel(c), x[i], g.at(i));
    }
};

// S > 1: block (c, split) sums planes (n, c) for n = split, split + splits, ... into partial[c][split],
// walking them as one run of packs so each thread keeps several loads in flight. The blocks advance
// through the batch together, so the data is read from its start to its end (see channel_map). The last
// block of a channel to finish adds its splits' partial sums (its first warp, each lane a fixed subset:
// the same result whichever block is last) and hands the channel's total to the store.
template <int kPack, typename T, typename Op, typename Store>
__global__ void channel_plane_sums_kernel(Op op, const T* x, GradRead<T> g, PairSum<T>* partial, unsigned* counters,
                                          Store store, int64_t batch, int64_t channels, int64_t spatial) {
    wait_for_previous_kernel();
    const int64_t c = blockIdx.x, split = blockIdx.y, splits = gridDim.y, packs = spatial / kPack;
    const int64_t planes = (batch - split + splits - 1) / splits;
    const typename Op::Channel k = op.channel(c);
    PairSum<T> total{T(0), T(0)};
    const auto add = [&](int64_t step, int64_t j) {
        const int64_t i = ((split + step * splits) * channels + c) * spatial + j * kPack;
        const Pack<T, kPack> xs = load_pack<T, kPack>(x, i), gs = load_pack<T, kPack>(g, i);
#pragma unroll
        for (int e = 0; e < kPack; ++e) total += op(k, xs.v[e], gs.v[e]);
    };
    if (planes * packs <= INT_MAX) {  // 32-bit divisions
        const unsigned count = static_cast<unsigned>(planes * packs), run = static_cast<unsigned>(packs);
#pragma unroll 4
        for (unsigned index = threadIdx.x; index < count; index += blockDim.x) add(index / run, index % run);
    } else {
        for (int64_t index = threadIdx.x; index < planes * packs; index += blockDim.x) add(index / packs, index % packs);
    }
    const PairSum<T> sums{block_sum(total.first), block_sum(total.second)};
    if (splits == 1) {
        if (threadIdx.x == 0) store(c, sums);
        return;
    }
    if (threadIdx.x == 0) partial[c * splits + split] = sums;
    if (!last_block_of(counters + c, static_cast<unsigned>(splits)) || threadIdx.x >= 32) return;
    total = {T(0), T(0)};
    for (int64_t s = threadIdx.x; s < splits; s += 32) total += load_from_l2(partial + c * splits + s);
    total.first = warp_all_sum(total.first);
    total.second = warp_all_sum(total.second);
    if (threadIdx.x == 0) store(c, total);
}

// Hands store(c, sums) each channel's pair of sums over n, s of op(constants, x, g).
template <typename T, typename Op, typename Store>
void channel_sums(Op op, const T* x, GradRead<T> g, int64_t batch, int64_t channels, int64_t spatial, Store store,
                  const Tensor& like) {
    if (spatial == 1) {
        const Tensor scratch = Tensor::empty({2 * column_chunks(batch, channels) * channels}, like.options());
        column_sums(ColumnOfChannels<T, Op>{op, x, g, channels}, batch, channels,
                    static_cast<PairSum<T>*>(scratch.raw_data()), store);
        return;
    }
    // One wave of blocks, each over whole planes: as many (channel, split) blocks as the device holds at
    // once (so every block's loads are in flight from the start and no second wave waits on a tail).
    // Measured on the H200 at [64, 64, 56, 56]: one plane a block (4,096 blocks, four waves) read at
    // 2.35 TB/s (21.8 us under ncu); eight planes a block left half the device idle (512 blocks).
    with_pack<T>(pack_for<T>(spatial, {x, g.per_element()}), [&]<int kPack>() {
        const auto kernel = channel_plane_sums_kernel<kPack, T, Op, Store>;
        static PerDeviceValue resident_blocks;
        const int64_t resident = resident_blocks.get([&] {
            int blocks = 0;
            KASMINA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0));
            return std::max(blocks, 1) * current_device_attribute<cudaDevAttrMultiProcessorCount>();
        });
        const int64_t splits = std::clamp<int64_t>(resident / channels, 1, std::min<int64_t>(batch, 65535));
        const Tensor scratch = Tensor::empty({2 * channels * splits}, like.options());
        auto* partial = static_cast<PairSum<T>*>(scratch.raw_data());
        unsigned* counters = splits > 1 ? stream_block_counters(channels) : nullptr;
        launch_overlapped(kernel, dim3(static_cast<unsigned>(channels), static_cast<unsigned>(splits)), kThreads, op, x,
                          g, partial, counters, store, batch, channels, spatial);
    });
}

// ---- batch norm 1d forward with the batch held on chip ---------------------------------------------------
// Training-mode batch norm of a float32 [N, C] that fits in the registers and shared memory of one block
// per multiprocessor. Block b holds rows [b * R, (b + 1) * R) as packs of four floats, pack p of its
// rows at thread p % kOnChipThreads: the first kOnChipRegisterPacks packs of a thread in registers, the
// rest in shared memory (copied by cp.async, all in flight at once). With C dividing 4 * kOnChipThreads a
// thread's packs all belong to the same four channels. The kernel then
//   1. sums each thread's shifted moments (ShiftedMoments), adds the threads of each channel in thread
//      order and writes the block's partial sums, partial[c][b];
//   2. after a grid-wide barrier, finishes each channel in one warp: its lanes add the blocks' partials
//      in a fixed order (deterministic) and FinishStatistics stores mean, invstd and the running
//      statistics;
//   3. after a second barrier, normalizes what it holds (Normalize) and writes it.
// x is read from memory once instead of twice (the two-pass kernels read it for the sums, then again
// to normalize).
constexpr int kOnChipThreads = 1024, kOnChipRegisterPacks = 4;
constexpr int64_t kOnChipSlotBytes = kOnChipThreads * sizeof(float4);  // one pack per thread
constexpr int64_t kOnChipSumSlots = 2;                                  // each thread's (sum d, sum d^2)
constexpr int64_t kOnChipMinElements = int64_t{1} << 20;                // smaller: the two passes hit L2

__global__ void __launch_bounds__(kOnChipThreads, 1)
batch_norm_on_chip_kernel(ShiftedMoments<float> moments, FinishStatistics<float> finish, Normalize<float> normalize,
                          const float* x, float* out, PairSum<float>* partial, int64_t rows, int64_t channels,
                          int64_t rows_per_block, int shared_packs) {
    extern __shared__ float4 held[];  // [shared_packs][kOnChipThreads] packs, then the sums' two slots
    wait_for_previous_kernel();
    const int t = threadIdx.x;
    const int64_t groups = channels / 4;  // packs a row; groups divides kOnChipThreads
    const int64_t first = blockIdx.x * rows_per_block;
    const int packs = static_cast<int>((min(rows, first + rows_per_block) - first) * groups);  // at most ~2^14
    const auto* source = reinterpret_cast<const float4*>(x) + first * groups;
    const int c0 = 4 * (t % static_cast<int>(groups));  // this thread's four channels
    const auto pack_index = [&](int k) { return t + k * kOnChipThreads; };

    for (int k = 0; k < shared_packs; ++k) {
        const int p = pack_index(kOnChipRegisterPacks + k);
        cp_async_16(reinterpret_cast<float*>(held + k * kOnChipThreads + t),
                    reinterpret_cast<const float*>(p < packs ? source + p : source), p < packs);
    }
    cp_async_commit();
    float4 kept[kOnChipRegisterPacks];
#pragma unroll
    for (int k = 0; k < kOnChipRegisterPacks; ++k)
        kept[k] = pack_index(k) < packs ? source[pack_index(k)] : float4{0.f, 0.f, 0.f, 0.f};

    // 1. The block's sums.
    ShiftedMoments<float>::Channel shift[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) shift[e] = moments.channel(c0 + e);
    PairSum<float> sums[4] = {};
    const auto add = [&](const float4& v) {
        sums[0] += moments(shift[0], v.x, 0.f);
        sums[1] += moments(shift[1], v.y, 0.f);
        sums[2] += moments(shift[2], v.z, 0.f);
        sums[3] += moments(shift[3], v.w, 0.f);
    };
#pragma unroll
    for (int k = 0; k < kOnChipRegisterPacks; ++k)
        if (pack_index(k) < packs) add(kept[k]);
    cp_async_wait<0>();  // this thread's own copies: it alone reads its packs
    for (int k = 0; k < shared_packs; ++k)
        if (pack_index(kOnChipRegisterPacks + k) < packs) add(held[k * kOnChipThreads + t]);
    float4* firsts = held + static_cast<int64_t>(shared_packs) * kOnChipThreads;
    float4* seconds = firsts + kOnChipThreads;
    firsts[t] = {sums[0].first, sums[1].first, sums[2].first, sums[3].first};
    seconds[t] = {sums[0].second, sums[1].second, sums[2].second, sums[3].second};
    __syncthreads();
    if (t < groups) {  // thread t adds its channels' threads t, t + groups, ... in that order
        for (int64_t other = t + groups; other < kOnChipThreads; other += groups) {
            const float4 f = firsts[other], q = seconds[other];
            sums[0] += {f.x, q.x};
            sums[1] += {f.y, q.y};
            sums[2] += {f.z, q.z};
            sums[3] += {f.w, q.w};
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) partial[(c0 + e) * gridDim.x + blockIdx.x] = sums[e];
    }
    // Channel c is finished by warp c / gridDim.x of block c % gridDim.x: spread over every block.
    const auto for_each_channel_of_warp = [&](auto&& body) {
        for (int64_t c = blockIdx.x + static_cast<int64_t>(t / 32) * gridDim.x; c < channels;
             c += static_cast<int64_t>(gridDim.x) * (kOnChipThreads / 32))
            body(c);
    };
    for_each_channel_of_warp([&](int64_t c) {
        if (t % 32 == 0) finish.prefetch(c);
    });
    cooperative_groups::this_grid().sync();

    // 2. Each channel's statistics, one warp a channel; its blocks' partials are adjacent.
    const int lane = t % 32;
    for_each_channel_of_warp([&](int64_t c) {
        PairSum<float> total{0.f, 0.f};
#pragma unroll 8
        for (int b = lane; b < static_cast<int>(gridDim.x); b += 32) total += load_from_l2(partial + c * gridDim.x + b);
        total.first = warp_all_sum(total.first);
        total.second = warp_all_sum(total.second);
        if (lane == 0) finish(c, total);
    });
    cooperative_groups::this_grid().sync();

    // 3. The output, from the packs held.
    Normalize<float>::Channel k[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) k[e] = normalize.channel(c0 + e);
    auto* destination = reinterpret_cast<float4*>(out) + first * groups;
    const auto write = [&](int p, const float4& v) {
        __stcs(destination + p, float4{normalize(k[0], v.x, 0.f), normalize(k[1], v.y, 0.f), normalize(k[2], v.z, 0.f),
                                       normalize(k[3], v.w, 0.f)});
    };
#pragma unroll
    for (int j = 0; j < kOnChipRegisterPacks; ++j)
        if (pack_index(j) < packs) write(pack_index(j), kept[j]);
    for (int j = 0; j < shared_packs; ++j)
        if (pack_index(kOnChipRegisterPacks + j) < packs) write(pack_index(kOnChipRegisterPacks + j), held[j * kOnChipThreads + t]);
}

// Runs the forward on chip when the batch fits (see set_batch_norm_on_chip); false otherwise.
bool batch_norm_on_chip_forward(const Tensor& x, const FinishStatistics<float>& finish, const Normalize<float>& normalize,
                                const Tensor& output) {
    const int64_t rows = x.size(0), channels = x.size(1);
    const bool shape_fits = x.dtype() == DType::f32 && x.size(2) == 1 && channels >= 128 &&
                            (4 * kOnChipThreads) % channels == 0 && rows * channels >= kOnChipMinElements &&
                            reinterpret_cast<uintptr_t>(x.raw_data()) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(output.raw_data()) % 16 == 0;
    if (!batch_norm_on_chip() || !shape_fits || current_device_attribute<cudaDevAttrComputeCapabilityMajor>() < 8)
        return false;
    // The most packs a thread may hold in shared memory on this device with one block a multiprocessor
    // (-1: the kernel does not fit, or the device cannot launch it cooperatively).
    static PerDeviceValue most_shared_packs;
    const int64_t most = most_shared_packs.get([] {
        int cooperative = 0, device = 0, optin = 0, blocks = 0;
        KASMINA_CUDA_CHECK(cudaGetDevice(&device));
        KASMINA_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
        KASMINA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        const int64_t packs = optin / kOnChipSlotBytes - kOnChipSumSlots;
        if (!cooperative || packs < 1) return int64_t{-1};
        const size_t bytes = static_cast<size_t>((packs + kOnChipSumSlots) * kOnChipSlotBytes);
        allow_shared_memory(batch_norm_on_chip_kernel, bytes);
        KASMINA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, batch_norm_on_chip_kernel,
                                                                         kOnChipThreads, bytes));
        return blocks >= 1 ? packs : int64_t{-1};
    });
    const int64_t processors = current_device_attribute<cudaDevAttrMultiProcessorCount>();
    const int64_t rows_per_block = (rows + processors - 1) / processors;
    const int64_t packs_per_thread = (rows_per_block * channels / 4 + kOnChipThreads - 1) / kOnChipThreads;
    const int64_t shared_packs = std::max<int64_t>(packs_per_thread - kOnChipRegisterPacks, 0);
    if (most < 0 || shared_packs > most) return false;
    const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
    const Tensor partials = Tensor::empty({2 * blocks * channels}, x.options());
    const cudaError_t launched = launch_cooperative(
        batch_norm_on_chip_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kOnChipThreads),
        static_cast<size_t>((shared_packs + kOnChipSumSlots) * kOnChipSlotBytes),
        ShiftedMoments<float>{static_cast<const float*>(x.raw_data()), 1}, finish, normalize,
        static_cast<const float*>(x.raw_data()), static_cast<float*>(output.raw_data()),
        static_cast<PairSum<float>*>(partials.raw_data()), rows, channels, rows_per_block, static_cast<int>(shared_packs));
    if (launched == cudaErrorCooperativeLaunchTooLarge) {  // fewer multiprocessors free than counted: two passes
        (void)cudaGetLastError();
        return false;
    }
    return true;
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

void layer_norm_backward(const Tensor& grad_operand, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
    const int64_t rows = x.size(0), n = x.size(1);
    const bool uniform_grad = grad_operand.numel() == 1;
    const LayerNormBackwardByWarps by_warps{rows, n};
    const GradRead<float> grad_read{static_cast<const float*>(grad_operand.raw_data()), uniform_grad};
    if (rows > 0 && by_warps.fits(grad_read, x, weight, grad_input)) {
        const bool affine = grad_weight.defined() || grad_bias.defined();
        const int64_t blocks = by_warps.blocks(affine);
        const Tensor partials = Tensor::empty({affine ? 2 * blocks * n : 0}, x.options());
        auto* affine_partials = affine ? static_cast<PairSum<float>*>(partials.raw_data()) : nullptr;
        by_warps.launch(grad_read, x, mean, rstd, weight, grad_input, affine_partials);
        if (affine) {
            const Tensor scratch = Tensor::empty({2 * column_chunks(blocks, n) * n}, x.options());
            column_sums(MatrixElement<PairSum<float>>{affine_partials, n}, blocks, n,
                        static_cast<PairSum<float>*>(scratch.raw_data()),
                        StorePairScaled<float>{mutable_or_null<float>(grad_weight), mutable_or_null<float>(grad_bias)});
        }
        check_launch("layer_norm_backward");
        return;
    }
    // The other kernels read the gradient per element: a uniform one is expanded for them.
    Tensor grad = grad_operand;
    if (uniform_grad && x.numel() > 1) {
        grad = Tensor::empty(x.shape(), x.options());
        copy_into(grad, detail::make_view(grad_operand, x.shape(), Shape(x.shape().size(), 0), grad_operand.offset()));
    }
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
                         const Tensor& running_mean, const Tensor& running_var, const Tensor& batches_tracked) {
    const int64_t batch = x.size(0), channels = x.size(1), spatial = x.size(2);
    dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
        const T* xs = static_cast<const T*>(x.raw_data());
        T* mean = static_cast<T*>(save_mean.raw_data());
        T* invstd = static_cast<T*>(save_invstd.raw_data());
        // One pass over x: the moments about each channel's first value, finished per channel.
        const FinishStatistics<T> finish{xs,
                                         spatial,
                                         batch * spatial,
                                         static_cast<T>(eps),
                                         static_cast<T>(momentum),
                                         mean,
                                         invstd,
                                         mutable_or_null<T>(running_mean),
                                         mutable_or_null<T>(running_var),
                                         mutable_or_null<int64_t>(batches_tracked)};
        const Normalize<T> normalize{mean, invstd, data_or_null<T>(weight), data_or_null<T>(bias), false, T(0)};
        if constexpr (std::is_same_v<T, float>)
            if (batch_norm_on_chip_forward(x, finish, normalize, output)) return;
        channel_sums<T>(ShiftedMoments<T>{xs, spatial}, xs, GradRead<T>{}, batch, channels, spatial, finish, x);
        channel_map<T>(normalize, xs, GradRead<T>{}, static_cast<T*>(output.raw_data()), batch, channels, spatial);
    });
    check_launch("batch_norm");
}

void batch_norm_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                          const Tensor& running_var, double eps, const Tensor& output) {
    const int64_t channels = x.size(1), spatial = x.size(2);
    dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
        const Normalize<T> normalize{static_cast<const T*>(running_mean.raw_data()),
                                     static_cast<const T*>(running_var.raw_data()), data_or_null<T>(weight),
                                     data_or_null<T>(bias), true, static_cast<T>(eps)};
        channel_map<T>(normalize, static_cast<const T*>(x.raw_data()), GradRead<T>{}, static_cast<T*>(output.raw_data()),
                       x.size(0), channels, spatial);
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
        const GradRead<T> g{static_cast<const T*>(grad.raw_data()), grad.numel() == 1};
        const T* xs = static_cast<const T*>(x.raw_data());
        const T* mu = static_cast<const T*>(mean.raw_data());
        const T* is = static_cast<const T*>(invstd.raw_data());
        T* first = static_cast<T*>(sum_dy.raw_data());
        T* second = static_cast<T*>(sum_dy_xhat.raw_data());
        if (need_sums)
            channel_sums<T>(GradAndGradTimesNormalized<T>{mu, is}, xs, g, batch, channels, spatial,
                            StorePairScaled<T>{first, second}, x);
        if (grad_input.defined()) {
            const InputGradient<T> input_gradient{mu, is, data_or_null<T>(weight), first, second, training,
                                                  T(1) / static_cast<T>(batch * spatial)};
            channel_map<T>(input_gradient, xs, g, static_cast<T*>(grad_input.raw_data()), batch, channels, spatial);
        }
    });
    check_launch("batch_norm_backward");
}

void channel_totals(const Tensor& x, const Tensor& out) {
    const int64_t batch = x.size(0), channels = x.size(1), spatial = x.size(2);
    if (x.numel() == 0) {
        if (channels > 0) KASMINA_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, channels * dtype_size(x.dtype()), launch_stream()));
        return;
    }
    dispatch_floating(x.dtype(), "channel_totals", [&]<typename T>() {
        channel_sums<T>(ValueAndNothing<T>{}, static_cast<const T*>(x.raw_data()), GradRead<T>{}, batch, channels, spatial,
                        StorePairScaled<T>{static_cast<T*>(out.raw_data()), nullptr}, x);
    });
    check_launch("channel_totals");
}

void add_channel_bias(const Tensor& x, const Tensor& bias) {
    dispatch_floating(x.dtype(), "add_channel_bias", [&]<typename T>() {
        T* data = static_cast<T*>(x.raw_data());
        channel_map<T>(AddBias<T>{static_cast<const T*>(bias.raw_data())}, data, GradRead<T>{}, data, x.size(0), x.size(1),
                       x.size(2));
    });
    check_launch("add_channel_bias");
}

}  // namespace kasmina::kernels::cuda
