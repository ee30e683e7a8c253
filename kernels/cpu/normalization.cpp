// Layer and batch normalization on the CPU. float32 layer norm and [N, C] batch norm run on oneDNN
// primitives (which report the biased variance, turned into rstd / invstd here); batch norm with
// spatial dims and every float64 op run on OpenMP loops, which reduce in blocks in the element type and
// combine the blocks in double.
#include "kernels/normalization.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/onednn_utils.h"

namespace kasmina::kernels::cpu {
namespace {

// Below this many elements a loop runs on one thread: the fork costs more than the work.
constexpr int64_t kParallelWork = 32768;

template <typename T>
const T* data_or_null(const Tensor& t) {
    return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}
template <typename T>
T* mutable_or_null(const Tensor& t) {
    return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

// oneDNN 2.6 has a JIT batch norm for [N, C] (as NHWC [N, C, 1, 1]) but only a plain C++ one for NCHW
// with spatial dims, which the loops below beat by 3-4x (bench/bench_normalization.cpp); the loops take
// those shapes.
bool onednn_batch_norm_fits(const Tensor& x) { return x.dtype() == DType::f32 && x.size(2) == 1; }

// Values are reduced in blocks of at most kBlock elements in the element type (vectorized, and short
// enough that float sums stay accurate); block results are combined in double.
constexpr int64_t kBlock = 2048;

// Count, mean and sum of squared deviations of a stream of values, block by block: each block is
// reduced in two passes while it sits in cache, then merged (Chan, Golub and LeVeque's update).
struct Moments {
    double count = 0, mean = 0, m2 = 0;

    template <typename T>
    void add(const T* values, int64_t length) {
        for (int64_t start = 0; start < length; start += kBlock) {
            const T* block = values + start;
            const int64_t size = std::min(kBlock, length - start);
            T sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < size; ++i) sum += block[i];
            const T block_mean = static_cast<T>(static_cast<double>(sum) / static_cast<double>(size));
            T squares = 0;
#pragma omp simd reduction(+ : squares)
            for (int64_t i = 0; i < size; ++i) {
                const T centered = block[i] - block_mean;
                squares += centered * centered;
            }
            merge(static_cast<double>(size), block_mean, squares);
        }
    }
    void merge(double n, double block_mean, double block_m2) {
        const double total = count + n, delta = block_mean - mean;
        mean += delta * n / total;
        m2 += block_m2 + delta * delta * count * n / total;
        count = total;
    }
    double biased_variance() const { return m2 / count; }
};

// ---- layer norm loops: x [rows, n] -------------------------------------------------------------------

template <typename T>
void layer_norm_loop(const T* x, const T* weight, const T* bias, double eps, int64_t rows, int64_t n, T* y, T* mean,
                     T* rstd) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
        const T* in = x + r * n;
        T* out = y + r * n;
        Moments moments;
        moments.add(in, n);
        const double row_rstd = 1.0 / std::sqrt(moments.biased_variance() + eps);
        mean[r] = static_cast<T>(moments.mean);
        rstd[r] = static_cast<T>(row_rstd);
        // out = x * rstd - mean * rstd, then the affine transform
        const T scale = static_cast<T>(row_rstd), shift = static_cast<T>(-moments.mean * row_rstd);
        if (weight != nullptr && bias != nullptr) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) out[i] = (in[i] * scale + shift) * weight[i] + bias[i];
        } else if (weight != nullptr) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) out[i] = (in[i] * scale + shift) * weight[i];
        } else if (bias != nullptr) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) out[i] = (in[i] * scale + shift) + bias[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) out[i] = in[i] * scale + shift;
        }
    }
}

// grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = grad * weight, xhat = (x - mean) * rstd;
// grad_weight = sum over rows of grad * xhat; grad_bias = sum over rows of grad.
template <typename T>
void layer_norm_backward_loop(const T* grad, const T* x, const T* mean, const T* rstd, const T* weight, int64_t rows,
                              int64_t n, T* grad_x, T* grad_weight, T* grad_bias) {
    const bool parallel = rows * n > kParallelWork;
    const int threads = parallel ? omp_get_max_threads() : 1;
    // Per-thread column sums, combined in thread order afterwards (deterministic for a thread count).
    std::vector<double> partial_weight(grad_weight != nullptr ? threads * n : 0);
    std::vector<double> partial_bias(grad_bias != nullptr ? threads * n : 0);
    const double inv_n = 1.0 / static_cast<double>(n);
#pragma omp parallel num_threads(threads) if (parallel)
    {
        const int thread = omp_get_thread_num();
        double* weight_sums = grad_weight != nullptr ? partial_weight.data() + thread * n : nullptr;
        double* bias_sums = grad_bias != nullptr ? partial_bias.data() + thread * n : nullptr;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const T* dy = grad + r * n;
            const T* in = x + r * n;
            const T row_mean = mean[r], row_rstd = rstd[r];
            if (weight_sums != nullptr) {
#pragma omp simd
                for (int64_t i = 0; i < n; ++i)
                    weight_sums[i] += static_cast<double>(dy[i] * ((in[i] - row_mean) * row_rstd));
            }
            if (bias_sums != nullptr) {
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) bias_sums[i] += static_cast<double>(dy[i]);
            }
            if (grad_x == nullptr) continue;
            // sums of g and g * (x - mean) over the row
            double sum_g = 0, sum_g_centered = 0;
            for (int64_t start = 0; start < n; start += kBlock) {
                const int64_t end = std::min(n, start + kBlock);
                T block_g = 0, block_g_centered = 0;
                if (weight != nullptr) {
#pragma omp simd reduction(+ : block_g, block_g_centered)
                    for (int64_t i = start; i < end; ++i) {
                        const T g = dy[i] * weight[i];
                        block_g += g;
                        block_g_centered += g * (in[i] - row_mean);
                    }
                } else {
#pragma omp simd reduction(+ : block_g, block_g_centered)
                    for (int64_t i = start; i < end; ++i) {
                        block_g += dy[i];
                        block_g_centered += dy[i] * (in[i] - row_mean);
                    }
                }
                sum_g += block_g;
                sum_g_centered += block_g_centered;
            }
            // grad_x = a * g + b * x + c
            const double s = row_rstd, m = row_mean;
            const double b = -s * s * s * sum_g_centered * inv_n;
            const double c = -b * m - s * sum_g * inv_n;
            T* dx = grad_x + r * n;
            const T ta = row_rstd, tb = static_cast<T>(b), tc = static_cast<T>(c);
            if (weight != nullptr) {
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) dx[i] = ta * (dy[i] * weight[i]) + tb * in[i] + tc;
            } else {
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) dx[i] = ta * dy[i] + tb * in[i] + tc;
            }
        }
    }
    for (int64_t i = 0; i < n; ++i) {
        double weight_total = 0, bias_total = 0;
        for (int t = 0; t < threads; ++t) {
            if (grad_weight != nullptr) weight_total += partial_weight[t * n + i];
            if (grad_bias != nullptr) bias_total += partial_bias[t * n + i];
        }
        if (grad_weight != nullptr) grad_weight[i] = static_cast<T>(weight_total);
        if (grad_bias != nullptr) grad_bias[i] = static_cast<T>(bias_total);
    }
}

// ---- batch norm loops: x [N, C, S] -------------------------------------------------------------------

struct ChannelGeometry {
    int64_t batch = 1, channels = 1, spatial = 1;
    int64_t numel() const { return batch * channels * spatial; }
};

ChannelGeometry channel_geometry(const Tensor& x) { return {x.size(0), x.size(1), x.size(2)}; }

// Runs fn(begin, end) over blocks of channels, one block per thread (S == 1: channels are the contiguous
// axis, so loops run across channels).
template <typename Fn>
void for_channel_blocks(ChannelGeometry g, Fn fn) {
#pragma omp parallel if (g.numel() > kParallelWork)
    {
        const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
        const int64_t block = (g.channels + threads - 1) / threads;
        const int64_t begin = std::min(g.channels, thread * block), end = std::min(g.channels, begin + block);
        fn(begin, end);
    }
}

// first_sums[c] = sum of first(i, c) (and second_sums[c] of second(i, c), unless Second is nullptr_t)
// over the elements i of channel c; the functions return T.
template <typename T, typename First, typename Second = std::nullptr_t>
void channel_sums(ChannelGeometry g, First first, double* first_sums, Second second = nullptr,
                  double* second_sums = nullptr) {
    constexpr bool two = !std::is_same_v<Second, std::nullptr_t>;
    if (g.spatial == 1) {
        std::fill(first_sums, first_sums + g.channels, 0.0);
        if constexpr (two) std::fill(second_sums, second_sums + g.channels, 0.0);
        for_channel_blocks(g, [&](int64_t begin, int64_t end) {
            for (int64_t n = 0; n < g.batch; ++n) {
                const int64_t row = n * g.channels;
#pragma omp simd
                for (int64_t c = begin; c < end; ++c) {
                    first_sums[c] += static_cast<double>(first(row + c, c));
                    if constexpr (two) second_sums[c] += static_cast<double>(second(row + c, c));
                }
            }
        });
        return;
    }
#pragma omp parallel for schedule(static) if (g.numel() > kParallelWork)
    for (int64_t c = 0; c < g.channels; ++c) {
        double first_total = 0, second_total = 0;
        for (int64_t n = 0; n < g.batch; ++n) {
            const int64_t run = (n * g.channels + c) * g.spatial;
            for (int64_t start = 0; start < g.spatial; start += kBlock) {
                const int64_t end = std::min(g.spatial, start + kBlock);
                T first_block = 0, second_block = 0;
#pragma omp simd reduction(+ : first_block, second_block)
                for (int64_t s = start; s < end; ++s) {
                    first_block += first(run + s, c);
                    if constexpr (two) second_block += second(run + s, c);
                }
                first_total += first_block;
                second_total += second_block;
            }
        }
        first_sums[c] = first_total;
        if constexpr (two) second_sums[c] = second_total;
    }
}

// out[i] = a[c] * (first[i] - center[c]) + b[c] * second[i] + k[c] for every element i of channel c
// (center and second may be null). Centering before scaling keeps x == center exact (a constant
// channel normalizes to exactly the bias, as in float64), where a[c] * x + (k[c] - a[c] * center[c])
// would leave the rounding of two large products.
template <typename T>
void channel_affine(ChannelGeometry g, const T* first, const T* center, const T* a, const T* second, const T* b,
                    const T* k, T* out) {
    const bool parallel = g.numel() > kParallelWork;
    if (g.spatial == 1) {
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t n = 0; n < g.batch; ++n) {
            const int64_t row = n * g.channels;
            if (second != nullptr) {
#pragma omp simd
                for (int64_t c = 0; c < g.channels; ++c)
                    out[row + c] = a[c] * (first[row + c] - (center ? center[c] : T(0))) + b[c] * second[row + c] + k[c];
            } else {
#pragma omp simd
                for (int64_t c = 0; c < g.channels; ++c)
                    out[row + c] = a[c] * (first[row + c] - (center ? center[c] : T(0))) + k[c];
            }
        }
        return;
    }
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t n = 0; n < g.batch; ++n) {
        for (int64_t c = 0; c < g.channels; ++c) {
            const int64_t start = (n * g.channels + c) * g.spatial;
            const T ac = a[c], bc = second != nullptr ? b[c] : T(0), kc = k[c], cc = center ? center[c] : T(0);
            if (second != nullptr) {
#pragma omp simd
                for (int64_t s = 0; s < g.spatial; ++s)
                    out[start + s] = ac * (first[start + s] - cc) + bc * second[start + s] + kc;
            } else {
#pragma omp simd
                for (int64_t s = 0; s < g.spatial; ++s) out[start + s] = ac * (first[start + s] - cc) + kc;
            }
        }
    }
}

// out = (x - mean[c]) * scale[c] + bias[c] with scale = invstd * weight.
template <typename T>
void batch_norm_normalize(ChannelGeometry g, const T* x, const double* mean, const double* invstd, const T* weight,
                          const T* bias, T* out) {
    std::vector<T> center(g.channels), scale(g.channels), shift(g.channels);
    for (int64_t c = 0; c < g.channels; ++c) {
        center[c] = static_cast<T>(mean[c]);
        scale[c] = static_cast<T>(invstd[c] * (weight != nullptr ? static_cast<double>(weight[c]) : 1.0));
        shift[c] = bias != nullptr ? bias[c] : T(0);
    }
    channel_affine<T>(g, x, center.data(), scale.data(), nullptr, nullptr, shift.data(), out);
}

template <typename T>
void batch_statistics(ChannelGeometry g, const T* x, double* mean, double* variance) {
    const double count = static_cast<double>(g.batch * g.spatial);
    if (g.spatial == 1) {
        channel_sums<T>(
            g, [x](int64_t i, int64_t) { return x[i]; }, mean);
        for (int64_t c = 0; c < g.channels; ++c) mean[c] /= count;
        channel_sums<T>(
            g,
            [x, mean](int64_t i, int64_t c) {
                const double centered = x[i] - mean[c];
                return centered * centered;
            },
            variance);
        for (int64_t c = 0; c < g.channels; ++c) variance[c] /= count;
        return;
    }
#pragma omp parallel for schedule(static) if (g.numel() > kParallelWork)
    for (int64_t c = 0; c < g.channels; ++c) {
        Moments moments;
        for (int64_t n = 0; n < g.batch; ++n) moments.add(x + (n * g.channels + c) * g.spatial, g.spatial);
        mean[c] = moments.mean;
        variance[c] = moments.biased_variance();
    }
}

template <typename T>
void batch_norm_training_loop(ChannelGeometry g, const T* x, const T* weight, const T* bias, double eps,
                              double momentum, T* out, T* save_mean, T* save_invstd, T* running_mean, T* running_var) {
    std::vector<double> mean(g.channels), variance(g.channels), invstd(g.channels);
    batch_statistics(g, x, mean.data(), variance.data());
    const double count = static_cast<double>(g.batch * g.spatial);
    for (int64_t c = 0; c < g.channels; ++c) {
        invstd[c] = 1.0 / std::sqrt(variance[c] + eps);
        save_mean[c] = static_cast<T>(mean[c]);
        save_invstd[c] = static_cast<T>(invstd[c]);
        if (running_mean != nullptr) {
            running_mean[c] = static_cast<T>((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
            running_var[c] =
                static_cast<T>((1.0 - momentum) * running_var[c] + momentum * variance[c] * count / (count - 1.0));
        }
    }
    batch_norm_normalize(g, x, mean.data(), invstd.data(), weight, bias, out);
}

template <typename T>
void batch_norm_inference_loop(ChannelGeometry g, const T* x, const T* weight, const T* bias, const T* running_mean,
                               const T* running_var, double eps, T* out) {
    std::vector<double> mean(g.channels), invstd(g.channels);
    for (int64_t c = 0; c < g.channels; ++c) {
        mean[c] = running_mean[c];
        invstd[c] = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
    }
    batch_norm_normalize(g, x, mean.data(), invstd.data(), weight, bias, out);
}

// Training: grad_x = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), statistics over N and S.
// Eval (statistics constant): grad_x = dy * w * invstd. Both: grad_weight = sum(dy * xhat), grad_bias = sum(dy).
template <typename T>
void batch_norm_backward_loop(ChannelGeometry g, const T* grad, const T* x, const T* weight, const T* mean,
                              const T* invstd, bool training, T* grad_x, T* grad_weight, T* grad_bias) {
    std::vector<double> sum_dy(g.channels), sum_dy_centered(g.channels);
    const bool need_sums = training || grad_weight != nullptr || grad_bias != nullptr;
    if (need_sums)
        channel_sums<T>(
            g, [grad](int64_t i, int64_t) { return grad[i]; }, sum_dy.data(),
            [grad, x, mean](int64_t i, int64_t c) { return grad[i] * (x[i] - mean[c]); }, sum_dy_centered.data());
    for (int64_t c = 0; c < g.channels; ++c) {
        if (grad_weight != nullptr) grad_weight[c] = static_cast<T>(sum_dy_centered[c] * invstd[c]);
        if (grad_bias != nullptr) grad_bias[c] = static_cast<T>(sum_dy[c]);
    }
    if (grad_x == nullptr) return;
    // grad_x = a[c] * dy + b[c] * x + k[c]
    const double count = static_cast<double>(g.batch * g.spatial);
    std::vector<T> a(g.channels), b(g.channels), k(g.channels);
    for (int64_t c = 0; c < g.channels; ++c) {
        const double s = invstd[c], scale = s * (weight != nullptr ? static_cast<double>(weight[c]) : 1.0);
        a[c] = static_cast<T>(scale);
        if (training) {
            const double slope = -scale * s * s * sum_dy_centered[c] / count;  // times x
            b[c] = static_cast<T>(slope);
            k[c] = static_cast<T>(-slope * mean[c] - scale * sum_dy[c] / count);
        } else {
            b[c] = T(0);
            k[c] = T(0);
        }
    }
    channel_affine<T>(g, grad, nullptr, a.data(), training ? x : nullptr, b.data(), k.data(), grad_x);
}

// ---- oneDNN (float32) ---------------------------------------------------------------------------------

using dnnl::normalization_flags;

normalization_flags affine_flags(bool scale, bool shift) {
    normalization_flags flags = normalization_flags::none;
    if (scale) flags = flags | normalization_flags::use_scale;
    if (shift) flags = flags | normalization_flags::use_shift;
    return flags;
}

// Cache key text for the flags and the float epsilon the primitive was built with (its exact bits).
std::string flags_key(normalization_flags flags, double eps = 0.0) {
    return std::to_string(static_cast<unsigned>(flags)) + "/" +
           std::to_string(std::bit_cast<uint32_t>(static_cast<float>(eps)));
}

dnnl::memory::desc vector_desc(int64_t count) {
    return dnnl::memory::desc({count}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
}

// oneDNN's backward takes the variance and eps, and uses only 1 / sqrt(variance + eps): it is given
// variance = 1 / rstd^2 with eps = 0, which reproduces the saved rstd without needing the forward's eps.
Tensor variance_for_rstd(const Tensor& rstd) {
    Tensor variance = Tensor::empty(rstd.shape(), rstd.options());
    const float* in = rstd.data<float>();
    float* out = variance.data<float>();
    for (int64_t i = 0; i < rstd.numel(); ++i) {
        const double r = in[i];
        out[i] = static_cast<float>(1.0 / (r * r));
    }
    return variance;
}

// Batch norm data descriptor for x [N, C, 1]: described as NHWC [N, C, 1, 1] (the same bytes), which
// oneDNN 2.6 runs on its JIT kernel; 2-D "nc" and 3-D "ncw" descriptors get slow C++ implementations.
dnnl::memory::desc batch_norm_desc(const Tensor& x) {
    return dnnl::memory::desc({x.size(0), x.size(1), 1, 1}, dnnl::memory::data_type::f32,
                              dnnl::memory::format_tag::acdb);
}

void onednn_layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& output,
                       const Tensor& mean, const Tensor& rstd) {
    const auto data = onednn::describe(x, "layer_norm");
    const auto stats = vector_desc(x.size(0));
    const normalization_flags flags = affine_flags(weight.defined(), bias.defined());
    const std::string key = onednn::geometry_key("layer_norm", {&x}, flags_key(flags, eps));
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::layer_normalization_forward::desc op(dnnl::prop_kind::forward_training, data, stats,
                                                         static_cast<float>(eps), flags);
        return dnnl::layer_normalization_forward(
            dnnl::layer_normalization_forward::primitive_desc(op, onednn::engine()));
    });
    // The variance lands in rstd's memory and is turned into rstd below.
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(data, x)},
                                               {DNNL_ARG_DST, onednn::wrap(data, output)},
                                               {DNNL_ARG_MEAN, onednn::wrap(stats, mean)},
                                               {DNNL_ARG_VARIANCE, onednn::wrap(stats, rstd)}};
    if (weight.defined()) args.emplace(DNNL_ARG_SCALE, onednn::wrap(vector_desc(weight.numel()), weight));
    if (bias.defined()) args.emplace(DNNL_ARG_SHIFT, onednn::wrap(vector_desc(bias.numel()), bias));
    primitive.execute(onednn::stream(), args);
    onednn::stream().wait();
    float* r = rstd.data<float>();
    for (int64_t i = 0; i < rstd.numel(); ++i)
        r[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(r[i]) + eps));
}

void onednn_layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                const Tensor& weight, const Tensor& grad_input, const Tensor& grad_weight,
                                const Tensor& grad_bias) {
    const auto data = onednn::describe(x, "layer_norm_backward");
    const auto stats = vector_desc(x.size(0));
    const normalization_flags flags = affine_flags(weight.defined(), grad_bias.defined());
    const bool parameters = grad_weight.defined() || grad_bias.defined();
    const std::string key =
        onednn::geometry_key("layer_norm_backward", {&x}, flags_key(flags) + (parameters ? "/p" : "/d"));
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::layer_normalization_forward::primitive_desc hint(
            dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_training, data, stats, 0.0f, flags),
            onednn::engine());
        const dnnl::layer_normalization_backward::desc op(
            parameters ? dnnl::prop_kind::backward : dnnl::prop_kind::backward_data, data, data, stats, 0.0f, flags);
        return dnnl::layer_normalization_backward(
            dnnl::layer_normalization_backward::primitive_desc(op, onednn::engine(), hint));
    });
    const Tensor variance = variance_for_rstd(rstd);
    // oneDNN 2.6 refuses to run a use_shift backward without a SHIFT argument, though it does not need it.
    const Tensor unused_shift = grad_bias.defined() ? Tensor::zeros(grad_bias.shape(), x.options()) : Tensor();
    const Tensor diff_src = grad_input.defined() ? grad_input : Tensor::empty(x.shape(), x.options());
    // diff_scale is written whenever use_scale is set and parameters are asked for.
    const Tensor diff_scale = grad_weight.defined() || !weight.defined() || !parameters
                                  ? grad_weight
                                  : Tensor::empty({x.size(1)}, x.options());
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(data, x)},
                                               {DNNL_ARG_DIFF_DST, onednn::wrap(data, grad)},
                                               {DNNL_ARG_MEAN, onednn::wrap(stats, mean)},
                                               {DNNL_ARG_VARIANCE, onednn::wrap(stats, variance)},
                                               {DNNL_ARG_DIFF_SRC, onednn::wrap(data, diff_src)}};
    if (weight.defined()) args.emplace(DNNL_ARG_SCALE, onednn::wrap(vector_desc(x.size(1)), weight));
    if (diff_scale.defined()) args.emplace(DNNL_ARG_DIFF_SCALE, onednn::wrap(vector_desc(x.size(1)), diff_scale));
    if (grad_bias.defined()) {
        args.emplace(DNNL_ARG_DIFF_SHIFT, onednn::wrap(vector_desc(x.size(1)), grad_bias));
        args.emplace(DNNL_ARG_SHIFT, onednn::wrap(vector_desc(x.size(1)), unused_shift));
    }
    primitive.execute(onednn::stream(), args);
    onednn::stream().wait();
}

void onednn_batch_norm_training(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, double momentum,
                                const Tensor& output, const Tensor& save_mean, const Tensor& save_invstd,
                                const Tensor& running_mean, const Tensor& running_var) {
    const auto data = batch_norm_desc(x);
    const int64_t channels = x.size(1);
    const auto stats = vector_desc(channels);
    const normalization_flags flags = affine_flags(weight.defined(), bias.defined());
    const std::string key = onednn::geometry_key("batch_norm_training", {&x}, flags_key(flags, eps));
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::batch_normalization_forward::desc op(dnnl::prop_kind::forward_training, data,
                                                         static_cast<float>(eps), flags);
        return dnnl::batch_normalization_forward(
            dnnl::batch_normalization_forward::primitive_desc(op, onednn::engine()));
    });
    // The biased variance lands in save_invstd's memory and is turned into invstd below.
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(data, x)},
                                               {DNNL_ARG_DST, onednn::wrap(data, output)},
                                               {DNNL_ARG_MEAN, onednn::wrap(stats, save_mean)},
                                               {DNNL_ARG_VARIANCE, onednn::wrap(stats, save_invstd)}};
    if (weight.defined()) args.emplace(DNNL_ARG_SCALE, onednn::wrap(stats, weight));
    if (bias.defined()) args.emplace(DNNL_ARG_SHIFT, onednn::wrap(stats, bias));
    primitive.execute(onednn::stream(), args);
    onednn::stream().wait();
    const double count = static_cast<double>(x.size(0) * x.size(2));
    const float* mean = save_mean.data<float>();
    float* invstd = save_invstd.data<float>();
    float* rm = mutable_or_null<float>(running_mean);
    float* rv = mutable_or_null<float>(running_var);
    for (int64_t c = 0; c < channels; ++c) {
        const double variance = invstd[c];
        invstd[c] = static_cast<float>(1.0 / std::sqrt(variance + eps));
        if (rm != nullptr) {
            rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean[c]);
            rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * variance * count / (count - 1.0));
        }
    }
}

void onednn_batch_norm_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                                 const Tensor& running_var, double eps, const Tensor& output) {
    const auto data = batch_norm_desc(x);
    const auto stats = vector_desc(x.size(1));
    const normalization_flags flags =
        affine_flags(weight.defined(), bias.defined()) | normalization_flags::use_global_stats;
    const std::string key = onednn::geometry_key("batch_norm_inference", {&x}, flags_key(flags, eps));
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::batch_normalization_forward::desc op(dnnl::prop_kind::forward_inference, data,
                                                         static_cast<float>(eps), flags);
        return dnnl::batch_normalization_forward(
            dnnl::batch_normalization_forward::primitive_desc(op, onednn::engine()));
    });
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(data, x)},
                                               {DNNL_ARG_DST, onednn::wrap(data, output)},
                                               {DNNL_ARG_MEAN, onednn::wrap(stats, running_mean)},
                                               {DNNL_ARG_VARIANCE, onednn::wrap(stats, running_var)}};
    if (weight.defined()) args.emplace(DNNL_ARG_SCALE, onednn::wrap(stats, weight));
    if (bias.defined()) args.emplace(DNNL_ARG_SHIFT, onednn::wrap(stats, bias));
    primitive.execute(onednn::stream(), args);
    onednn::stream().wait();
}

void onednn_batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& invstd, const Tensor& grad_input, const Tensor& grad_weight,
                                const Tensor& grad_bias) {
    const auto data = batch_norm_desc(x);
    const int64_t channels = x.size(1);
    const auto stats = vector_desc(channels);
    const normalization_flags flags = affine_flags(weight.defined(), grad_bias.defined());
    const bool parameters = grad_weight.defined() || grad_bias.defined();
    const std::string key =
        onednn::geometry_key("batch_norm_backward", {&x}, flags_key(flags) + (parameters ? "/p" : "/d"));
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::batch_normalization_forward::primitive_desc hint(
            dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_training, data, 0.0f, flags),
            onednn::engine());
        const dnnl::batch_normalization_backward::desc op(
            parameters ? dnnl::prop_kind::backward : dnnl::prop_kind::backward_data, data, data, 0.0f, flags);
        return dnnl::batch_normalization_backward(
            dnnl::batch_normalization_backward::primitive_desc(op, onednn::engine(), hint));
    });
    const Tensor variance = variance_for_rstd(invstd);
    // oneDNN 2.6 refuses to run a use_shift backward without a SHIFT argument, though it does not need it.
    const Tensor unused_shift = grad_bias.defined() ? Tensor::zeros(grad_bias.shape(), x.options()) : Tensor();
    const Tensor diff_src = grad_input.defined() ? grad_input : Tensor::empty(x.shape(), x.options());
    const Tensor diff_scale = grad_weight.defined() || !weight.defined() || !parameters
                                  ? grad_weight
                                  : Tensor::empty({channels}, x.options());
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(data, x)},
                                               {DNNL_ARG_DIFF_DST, onednn::wrap(data, grad)},
                                               {DNNL_ARG_MEAN, onednn::wrap(stats, mean)},
                                               {DNNL_ARG_VARIANCE, onednn::wrap(stats, variance)},
                                               {DNNL_ARG_DIFF_SRC, onednn::wrap(data, diff_src)}};
    if (weight.defined()) args.emplace(DNNL_ARG_SCALE, onednn::wrap(stats, weight));
    if (diff_scale.defined()) args.emplace(DNNL_ARG_DIFF_SCALE, onednn::wrap(stats, diff_scale));
    if (grad_bias.defined()) {
        args.emplace(DNNL_ARG_DIFF_SHIFT, onednn::wrap(stats, grad_bias));
        args.emplace(DNNL_ARG_SHIFT, onednn::wrap(stats, unused_shift));
    }
    primitive.execute(onednn::stream(), args);
    onednn::stream().wait();
}

}  // namespace

// ---- entry points --------------------------------------------------------------------------------------

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& output,
                const Tensor& mean, const Tensor& rstd) {
    if (x.dtype() == DType::f32) return onednn_layer_norm(x, weight, bias, eps, output, mean, rstd);
    dispatch_floating(x.dtype(), "layer_norm", [&]<typename T>() {
        layer_norm_loop(static_cast<const T*>(x.raw_data()), data_or_null<T>(weight), data_or_null<T>(bias), eps,
                        x.size(0), x.size(1), static_cast<T*>(output.raw_data()), static_cast<T*>(mean.raw_data()),
                        static_cast<T*>(rstd.raw_data()));
    });
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
    // oneDNN computes the input gradient in any case; a weight gradient without a weight is left to the loop.
    const bool onednn_fits = grad_input.defined() && (weight.defined() || !grad_weight.defined());
    if (x.dtype() == DType::f32 && onednn_fits)
        return onednn_layer_norm_backward(grad, x, mean, rstd, weight, grad_input, grad_weight, grad_bias);
    dispatch_floating(x.dtype(), "layer_norm_backward", [&]<typename T>() {
        layer_norm_backward_loop(static_cast<const T*>(grad.raw_data()), static_cast<const T*>(x.raw_data()),
                                 static_cast<const T*>(mean.raw_data()), static_cast<const T*>(rstd.raw_data()),
                                 data_or_null<T>(weight), x.size(0), x.size(1), mutable_or_null<T>(grad_input),
                                 mutable_or_null<T>(grad_weight), mutable_or_null<T>(grad_bias));
    });
}

void batch_norm_training(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, double momentum,
                         const Tensor& output, const Tensor& save_mean, const Tensor& save_invstd,
                         const Tensor& running_mean, const Tensor& running_var, const Tensor& batches_tracked) {
    if (onednn_batch_norm_fits(x)) {
        onednn_batch_norm_training(x, weight, bias, eps, momentum, output, save_mean, save_invstd, running_mean,
                                   running_var);
    } else {
        dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
            batch_norm_training_loop(channel_geometry(x), static_cast<const T*>(x.raw_data()), data_or_null<T>(weight),
                                     data_or_null<T>(bias), eps, momentum, static_cast<T*>(output.raw_data()),
                                     static_cast<T*>(save_mean.raw_data()), static_cast<T*>(save_invstd.raw_data()),
                                     mutable_or_null<T>(running_mean), mutable_or_null<T>(running_var));
        });
    }
    if (batches_tracked.defined()) ++*static_cast<int64_t*>(batches_tracked.raw_data());
}

void batch_norm_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                          const Tensor& running_var, double eps, const Tensor& output) {
    if (onednn_batch_norm_fits(x))
        return onednn_batch_norm_inference(x, weight, bias, running_mean, running_var, eps, output);
    dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
        batch_norm_inference_loop(channel_geometry(x), static_cast<const T*>(x.raw_data()), data_or_null<T>(weight),
                                  data_or_null<T>(bias), static_cast<const T*>(running_mean.raw_data()),
                                  static_cast<const T*>(running_var.raw_data()), eps,
                                  static_cast<T*>(output.raw_data()));
    });
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, bool training, const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
    const bool onednn_fits = training && grad_input.defined() && (weight.defined() || !grad_weight.defined());
    if (onednn_batch_norm_fits(x) && onednn_fits)
        return onednn_batch_norm_backward(grad, x, weight, mean, invstd, grad_input, grad_weight, grad_bias);
    dispatch_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
        batch_norm_backward_loop(
            channel_geometry(x), static_cast<const T*>(grad.raw_data()), static_cast<const T*>(x.raw_data()),
            data_or_null<T>(weight), static_cast<const T*>(mean.raw_data()), static_cast<const T*>(invstd.raw_data()),
            training, mutable_or_null<T>(grad_input), mutable_or_null<T>(grad_weight), mutable_or_null<T>(grad_bias));
    });
}

}  // namespace kasmina::kernels::cpu
