// Reductions on the CPU over a [outer, inner] (reduce rows) or [reduced, kept] (reduce columns)
// contiguous layout, prepared by the dispatcher. Float32 accumulates in double for accuracy.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/elementwise_math.h"

namespace kasmina::kernels::cpu {
namespace {

template <typename T>
using Accumulator = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t outer = x.size(0), inner = x.size(1);
    dispatch_numeric(x.dtype(), "reduce", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
#pragma omp parallel for schedule(static) if (outer * inner > 32768 && outer > 1)
        for (int64_t row = 0; row < outer; ++row) {
            const T* values = in + row * inner;
            if (op == ReduceOp::sum || op == ReduceOp::mean) {
                Accumulator<T> total = 0;
#pragma omp simd reduction(+ : total)
                for (int64_t i = 0; i < inner; ++i) total += values[i];
                result[row] = op == ReduceOp::mean ? static_cast<T>(static_cast<double>(total) / static_cast<double>(inner))
                                                   : static_cast<T>(total);
            } else {
                T best = values[0];
                for (int64_t i = 1; i < inner; ++i) {
                    const T v = values[i];
                    if (math::is_nan(best)) break;
                    if (math::is_nan(v) || (op == ReduceOp::max ? v > best : v < best)) best = v;
                }
                result[row] = best;
            }
        }
    });
}

void reduce_columns(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t reduced = x.size(0), kept = x.size(1);
    dispatch_numeric(x.dtype(), "reduce", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        constexpr int64_t kBlock = 256;
        const int64_t blocks = (kept + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (reduced * kept > 32768 && blocks > 1)
        for (int64_t block = 0; block < blocks; ++block) {
            const int64_t begin = block * kBlock, end = std::min(kept, begin + kBlock);
            if (op == ReduceOp::sum || op == ReduceOp::mean) {
                Accumulator<T> totals[kBlock] = {};
                for (int64_t r = 0; r < reduced; ++r) {
                    const T* row = in + r * kept;
#pragma omp simd
                    for (int64_t j = begin; j < end; ++j) totals[j - begin] += row[j];
                }
                for (int64_t j = begin; j < end; ++j)
                    result[j] = op == ReduceOp::mean
                                    ? static_cast<T>(static_cast<double>(totals[j - begin]) / static_cast<double>(reduced))
                                    : static_cast<T>(totals[j - begin]);
            } else {
                for (int64_t j = begin; j < end; ++j) result[j] = in[j];
                for (int64_t r = 1; r < reduced; ++r) {
                    const T* row = in + r * kept;
                    for (int64_t j = begin; j < end; ++j) {
                        const T best = result[j], v = row[j];
                        if (math::is_nan(best)) continue;
                        if (math::is_nan(v) || (op == ReduceOp::max ? v > best : v < best)) result[j] = v;
                    }
                }
            }
        }
    });
}

void variance_rows(const Tensor& x, int64_t correction, const Tensor& out) {
    const int64_t outer = x.size(0), inner = x.size(1);
    dispatch_floating(x.dtype(), "var", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
        const double divisor = static_cast<double>(inner - correction);
#pragma omp parallel for schedule(static) if (outer * inner > 32768 && outer > 1)
        for (int64_t row = 0; row < outer; ++row) {
            const T* values = in + row * inner;
            double total = 0;
#pragma omp simd reduction(+ : total)
            for (int64_t i = 0; i < inner; ++i) total += values[i];
            const double mean = total / static_cast<double>(inner);
            double squares = 0;
#pragma omp simd reduction(+ : squares)
            for (int64_t i = 0; i < inner; ++i) squares += (values[i] - mean) * (values[i] - mean);
            // PyTorch: divisor <= 0 gives inf/nan (with a warning); we return NaN the same way.
            result[row] = static_cast<T>(divisor > 0 ? squares / divisor : std::numeric_limits<double>::quiet_NaN());
        }
    });
}

void logsumexp_rows(const Tensor& x, const Tensor& out) {
    const int64_t outer = x.size(0), inner = x.size(1);
    dispatch_floating(x.dtype(), "logsumexp", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* result = static_cast<T*>(out.raw_data());
#pragma omp parallel for schedule(static) if (outer * inner > 32768 && outer > 1)
        for (int64_t row = 0; row < outer; ++row) {
            const T* values = in + row * inner;
            T peak = -std::numeric_limits<T>::infinity();
            for (int64_t i = 0; i < inner; ++i) peak = std::max(peak, values[i]);
            if (!std::isfinite(peak)) {  // all -inf -> -inf; +inf -> inf; NaN propagates below
                double total = 0;
                for (int64_t i = 0; i < inner; ++i) total += values[i];
                result[row] = std::isnan(total) ? static_cast<T>(total) : peak;
                continue;
            }
            double total = 0;
            for (int64_t i = 0; i < inner; ++i) total += std::exp(static_cast<double>(values[i] - peak));
            result[row] = static_cast<T>(peak + std::log(total));
        }
    });
}

void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices) {
    const int64_t outer = x.size(0), inner = x.size(1);
    dispatch_numeric(x.dtype(), "max", [&]<typename T>() {
        const T* in = static_cast<const T*>(x.raw_data());
        T* best_values = static_cast<T*>(values.raw_data());
        int64_t* best_indices = static_cast<int64_t*>(indices.raw_data());
#pragma omp parallel for schedule(static) if (outer * inner > 32768 && outer > 1)
        for (int64_t row = 0; row < outer; ++row) {
            const T* data = in + row * inner;
            int64_t best = 0;
            for (int64_t i = 1; i < inner; ++i) {
                if (math::is_nan(data[best])) break;
                if (math::is_nan(data[i]) || data[i] > data[best]) best = i;
            }
            best_values[row] = data[best];
            best_indices[row] = best;
        }
    });
}

void finite_flag(const Tensor& x, const Tensor& out) {
    *static_cast<bool*>(out.raw_data()) = dispatch_floating(x.dtype(), "finite_flag", [&]<typename T>() {
        const T* data = static_cast<const T*>(x.raw_data());
        const int64_t count = x.numel();
        // x * 0 is 0 for a finite x and NaN otherwise, so the sum is 0 exactly when all are finite.
        T total = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : total) if (count > (int64_t{1} << 16))
        for (int64_t i = 0; i < count; ++i) total += data[i] * T(0);
        return total == T(0);
    });
}

}  // namespace kasmina::kernels::cpu
