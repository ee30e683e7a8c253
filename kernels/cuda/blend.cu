// The fused seed blend on the GPU: out = c0 * d + sum_i c_i * k_i in one pass (every operand read
// once, out written once; a k_i whose device-side guard is false is replaced by d), and its backward in one pass that also forms the dot products giving the
// blend weights' gradients (read back to the host only when those gradients are wanted).
#include <array>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kMaxKernels = 16;

template <typename T>
struct BlendOperands {
    const T* kernels[kMaxKernels];
    T* grads[kMaxKernels];
    T coefficients[kMaxKernels];
    const bool* guards[kMaxKernels];  // null: always taken; false: the output is replaced by d
    int count;
};

// Each thread reads the guards once: bit i set when output i is taken.
template <typename T>
__device__ unsigned taken_outputs(const BlendOperands<T>& operands) {
    unsigned taken = 0;
    for (int i = 0; i < operands.count; ++i)
        if (!operands.guards[i] || *operands.guards[i]) taken |= 1u << i;
    return taken;
}

// out = c0 * d + sum_i c_i * (k_i, or d where output i's guard is false), kPack elements at a time.
template <int kPack, typename T>
__global__ void blend_kernel(const T* d, T c0, BlendOperands<T> operands, T* out, int64_t packs) {
    const unsigned taken = taken_outputs(operands);
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < packs;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const Pack<T, kPack> base = load_pack<T, kPack>(d, j * kPack);
        Pack<T, kPack> value;
#pragma unroll
        for (int e = 0; e < kPack; ++e) value.v[e] = c0 * base.v[e];
        for (int i = 0; i < operands.count; ++i) {
            const Pack<T, kPack> k = (taken >> i) & 1u ? load_pack<T, kPack>(operands.kernels[i], j * kPack) : base;
            const T coefficient = operands.coefficients[i];
#pragma unroll
            for (int e = 0; e < kPack; ++e) value.v[e] += coefficient * k.v[e];
        }
        *reinterpret_cast<Pack<T, kPack>*>(out + j * kPack) = value;
    }
}

// dots[0] += sum grad * d, dots[1 + i] += sum grad * k_i (per-block partials, then atomics); an output
// whose guard is false gets no gradient, d gets its share, and its dot is that of d.
template <typename T>
__global__ void blend_backward_kernel(const T* grad, const T* d, T c0, BlendOperands<T> operands, T* grad_d,
                                      double* dots, bool need_dots, int64_t total) {
    const unsigned taken = taken_outputs(operands);
    T d_coefficient = c0;
    for (int i = 0; i < operands.count; ++i)
        if (!((taken >> i) & 1u)) d_coefficient += operands.coefficients[i];
    double dot_d = 0.0, dot_k[kMaxKernels] = {};
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < total;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const T g = grad[j];
        if (grad_d) grad_d[j] = d_coefficient * g;
        for (int i = 0; i < operands.count; ++i) operands.grads[i][j] = (taken >> i) & 1u ? operands.coefficients[i] * g : T(0);
        if (need_dots) {
            const T base = d[j];
            dot_d += static_cast<double>(g) * base;
            for (int i = 0; i < operands.count; ++i)
                dot_k[i] += static_cast<double>(g) * ((taken >> i) & 1u ? operands.kernels[i][j] : base);
        }
    }
    if (!need_dots) return;
    dot_d = block_sum(dot_d);
    if (threadIdx.x == 0) atomicAdd(dots, dot_d);
    for (int i = 0; i < operands.count; ++i) {
        const double total_k = block_sum(dot_k[i]);
        if (threadIdx.x == 0) atomicAdd(dots + 1 + i, total_k);
    }
}

template <typename T>
BlendOperands<T> operands_of(const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
                             const std::vector<Tensor>& guards, const std::vector<Tensor>* grads) {
    if (kernel_outputs.size() > kMaxKernels)
        raise<ShapeError>("blend_seeds", "at most ", kMaxKernels, " kernel outputs, got ", kernel_outputs.size());
    BlendOperands<T> operands{};
    operands.count = static_cast<int>(kernel_outputs.size());
    for (size_t i = 0; i < kernel_outputs.size(); ++i) {
        operands.kernels[i] = static_cast<const T*>(kernel_outputs[i].raw_data());
        operands.coefficients[i] = static_cast<T>(coefficients[i + 1]);
        if (grads) operands.grads[i] = static_cast<T*>((*grads)[i].raw_data());
        operands.guards[i] = i < guards.size() && guards[i].defined() ? static_cast<const bool*>(guards[i].raw_data()) : nullptr;
    }
    return operands;
}

}  // namespace

void blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
           const std::vector<Tensor>& guards, const Tensor& out) {
    const int64_t total = d.numel();
    if (total == 0) return;
    dispatch_floating(d.dtype(), "blend_seeds", [&]<typename T>() {
        const BlendOperands<T> operands = operands_of<T>(kernel_outputs, coefficients, guards, nullptr);
        std::vector<const void*> pointers{d.raw_data(), out.raw_data()};
        for (int i = 0; i < operands.count; ++i) pointers.push_back(operands.kernels[i]);
        with_pack<T>(pack_for<T>(total, pointers), [&]<int kPack>() {
            blend_kernel<kPack, T><<<grid_for(total / kPack), kThreads, 0, launch_stream()>>>(
                static_cast<const T*>(d.raw_data()), static_cast<T>(coefficients[0]), operands,
                static_cast<T*>(out.raw_data()), total / kPack);
        });
    });
    check_launch("blend_seeds");
}

void blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                    const std::vector<double>& coefficients, const std::vector<Tensor>& guards, BlendBackward& result,
                    bool need_dots) {
    const int64_t total = d.numel();
    const size_t n = kernel_outputs.size();
    result.grad_dot_kernels.assign(n, 0.0);
    result.grad_dot_d = 0.0;
    if (total == 0) return;
    Tensor dots;
    if (need_dots) dots = Tensor::zeros({static_cast<int64_t>(n + 1)}, {.dtype = DType::f64, .device = d.device()});
    dispatch_floating(d.dtype(), "blend_seeds_backward", [&]<typename T>() {
        blend_backward_kernel<T><<<std::min<unsigned>(grid_for(total), 1024), kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(grad.raw_data()), static_cast<const T*>(d.raw_data()),
            static_cast<T>(coefficients[0]), operands_of<T>(kernel_outputs, coefficients, guards, &result.grad_kernels),
            result.grad_d.defined() ? static_cast<T*>(result.grad_d.raw_data()) : nullptr,
            need_dots ? static_cast<double*>(dots.raw_data()) : nullptr, need_dots, total);
    });
    check_launch("blend_seeds_backward");
    if (!need_dots) return;
    const std::vector<double> values = dots.to_vector<double>();  // the one read-back: alphas need host gradients
    result.grad_dot_d = values[0];
    for (size_t i = 0; i < n; ++i) result.grad_dot_kernels[i] = values[i + 1];
}

}  // namespace kasmina::kernels::cuda
