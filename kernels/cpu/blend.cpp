// The seed blend on the CPU: one vectorized pass over d and the kernel outputs (at most a handful).
#include "kernels/cpu/cpu_blend.h"

#include <array>

namespace kasmina::kernels::cpu {
namespace {
constexpr size_t kMaxKernels = 16;
constexpr int64_t kChunk = 16384;

// Host guards read here: an output whose guard is false becomes d, and its coefficient moves onto d's
// (0 left in its place), which gives the guarded blend and its backward through the plain loops.
struct Guarded {
    std::vector<Tensor> outputs;
    std::vector<double> coefficients;
};
Guarded resolve_guards(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
                       const std::vector<Tensor>& guards) {
    Guarded result{kernel_outputs, coefficients};
    for (size_t i = 0; i < guards.size(); ++i) {
        if (!guards[i].defined() || guards[i].item<bool>()) continue;
        result.outputs[i] = d;
        result.coefficients[0] += result.coefficients[i + 1];
        result.coefficients[i + 1] = 0.0;
    }
    return result;
}
}  // namespace

void blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs_in, const std::vector<double>& coefficients_in,
           const std::vector<Tensor>& guards, const Tensor& out) {
    const Guarded guarded = resolve_guards(d, kernel_outputs_in, coefficients_in, guards);
    const std::vector<Tensor>& kernel_outputs = guarded.outputs;  // not structured bindings: lambdas capture these
    const std::vector<double>& coefficients = guarded.coefficients;
    const int64_t count = d.numel();
    const size_t n = kernel_outputs.size();
    if (n > kMaxKernels) raise<ShapeError>("blend_seeds", "at most ", kMaxKernels, " kernel outputs, got ", n);
    dispatch_floating(d.dtype(), "blend_seeds", [&]<typename T>() {
        const T* base = static_cast<const T*>(d.raw_data());
        std::array<const T*, kMaxKernels> k{};
        std::array<T, kMaxKernels> c{};
        for (size_t i = 0; i < n; ++i) {
            k[i] = static_cast<const T*>(kernel_outputs[i].raw_data());
            c[i] = static_cast<T>(coefficients[i + 1]);
        }
        const T c0 = static_cast<T>(coefficients[0]);
        T* result = static_cast<T*>(out.raw_data());
        const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
            const int64_t begin = chunk * kChunk, end = std::min(count, begin + kChunk);
#pragma omp simd
            for (int64_t j = begin; j < end; ++j) result[j] = c0 * base[j];
            for (size_t i = 0; i < n; ++i) {
                const T* ki = k[i];
                const T ci = c[i];
#pragma omp simd
                for (int64_t j = begin; j < end; ++j) result[j] += ci * ki[j];
            }
        }
    });
}

void blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs_in,
                    const std::vector<double>& coefficients_in, const std::vector<Tensor>& guards, BlendBackward& result,
                    bool need_dots) {
    const Guarded guarded = resolve_guards(d, kernel_outputs_in, coefficients_in, guards);
    const std::vector<Tensor>& kernel_outputs = guarded.outputs;  // not structured bindings: lambdas capture these
    const std::vector<double>& coefficients = guarded.coefficients;
    const int64_t count = d.numel();
    const size_t n = kernel_outputs.size();
    dispatch_floating(d.dtype(), "blend_seeds_backward", [&]<typename T>() {
        const T* g = static_cast<const T*>(grad.raw_data());
        const T* base = static_cast<const T*>(d.raw_data());
        T* grad_d = result.grad_d.defined() ? static_cast<T*>(result.grad_d.raw_data()) : nullptr;
        const T c0 = static_cast<T>(coefficients[0]);
        double dot_d = 0.0;
        std::vector<double> dots(n, 0.0);
        const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1) reduction(+ : dot_d)
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
            const int64_t begin = chunk * kChunk, end = std::min(count, begin + kChunk);
            if (grad_d) {
#pragma omp simd
                for (int64_t j = begin; j < end; ++j) grad_d[j] = c0 * g[j];
            }
            if (!need_dots) continue;
            double local = 0.0;
#pragma omp simd reduction(+ : local)
            for (int64_t j = begin; j < end; ++j) local += static_cast<double>(g[j]) * base[j];
            dot_d += local;
        }
        for (size_t i = 0; i < n; ++i) {
            const T* ki = static_cast<const T*>(kernel_outputs[i].raw_data());
            T* gi = static_cast<T*>(result.grad_kernels[i].raw_data());
            const T ci = static_cast<T>(coefficients[i + 1]);
            double dot = 0.0;
#pragma omp parallel for schedule(static) if (chunks > 1) reduction(+ : dot)
            for (int64_t chunk = 0; chunk < chunks; ++chunk) {
                const int64_t begin = chunk * kChunk, end = std::min(count, begin + kChunk);
#pragma omp simd
                for (int64_t j = begin; j < end; ++j) gi[j] = ci * g[j];
                if (!need_dots) continue;
                double local = 0.0;
#pragma omp simd reduction(+ : local)
                for (int64_t j = begin; j < end; ++j) local += static_cast<double>(g[j]) * ki[j];
                dot += local;
            }
            dots[i] = dot;
        }
        result.grad_dot_d = dot_d;
        result.grad_dot_kernels = dots;
    });
}

}  // namespace kasmina::kernels::cpu
