// Elementwise ops on the GPU: one strided map kernel for 1-3 broadcast inputs, with a vectorized
// path (four elements per thread, 16-byte loads for float32) when every operand is dense and
// aligned or a single value broadcast (a scalar, a guard flag). The scalar math is
// kernels/elementwise_math.h, shared with the CPU loops.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/elementwise_math.h"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kVector = 4;

template <typename T>
struct alignas(sizeof(T) * kVector) Pack {
    T value[kVector];
};

template <typename T>
bool aligned(const void* pointer) {
    return aligned_to(pointer, sizeof(T) * kVector);
}

// out[i] = fn(a[i], b[i], c[i]) over the iteration space (unused inputs are nullptr and never read).
template <typename Out, typename A, typename B, typename C, int Inputs, typename Fn>
__global__ void map_kernel(Out* out, const A* a, const B* b, const C* c, OffsetCalculator<1 + Inputs> calc,
                           int64_t count, Fn fn) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < count;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t o[1 + Inputs];
        calc.offsets(linear, o);
        if constexpr (Inputs == 1) out[o[0]] = fn(a[o[1]]);
        if constexpr (Inputs == 2) out[o[0]] = fn(a[o[1]], b[o[2]]);
        if constexpr (Inputs == 3) out[o[0]] = fn(a[o[1]], b[o[2]], c[o[3]]);
    }
}

// One operand's pack p: its packed load, or (uniform: one value broadcast to every element, such as a
// 0-d scalar or an expanded one) that value repeated.
template <typename T>
__device__ Pack<T> load_pack(const T* data, int64_t p, bool uniform) {
    if (!uniform) return reinterpret_cast<const Pack<T>*>(data)[p];
    Pack<T> pack;
    const T value = data[0];
#pragma unroll
    for (int i = 0; i < kVector; ++i) pack.value[i] = value;
    return pack;
}

// Dense and aligned: kVector elements per thread through packed loads; the tail goes element-wise.
// Bit k of `uniform` marks input k as one value broadcast to every element (read at offset 0).
template <typename Out, typename A, typename B, typename C, int Inputs, typename Fn>
__global__ void map_dense_kernel(Out* out, const A* a, const B* b, const C* c, int64_t count, unsigned uniform, Fn fn) {
    const bool uniform_a = uniform & 1u, uniform_b = uniform & 2u, uniform_c = uniform & 4u;
    const int64_t packs = count / kVector;
    for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
         p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        Pack<Out> result;
        const Pack<A> pa = load_pack(a, p, uniform_a);
        Pack<B> pb;
        Pack<C> pc;
        if constexpr (Inputs >= 2) pb = load_pack(b, p, uniform_b);
        if constexpr (Inputs >= 3) pc = load_pack(c, p, uniform_c);
#pragma unroll
        for (int i = 0; i < kVector; ++i) {
            if constexpr (Inputs == 1) result.value[i] = fn(pa.value[i]);
            if constexpr (Inputs == 2) result.value[i] = fn(pa.value[i], pb.value[i]);
            if constexpr (Inputs == 3) result.value[i] = fn(pa.value[i], pb.value[i], pc.value[i]);
        }
        reinterpret_cast<Pack<Out>*>(out)[p] = result;
    }
    const int64_t tail = packs * kVector + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (blockIdx.x == 0 && tail < count) {
        const int64_t ia = uniform_a ? 0 : tail, ib = uniform_b ? 0 : tail, ic = uniform_c ? 0 : tail;
        if constexpr (Inputs == 1) out[tail] = fn(a[ia]);
        if constexpr (Inputs == 2) out[tail] = fn(a[ia], b[ib]);
        if constexpr (Inputs == 3) out[tail] = fn(a[ia], b[ib], c[ic]);
    }
}

// Launches fn over out's shape with Inputs (1 to 3) inputs broadcast to it.
template <int Inputs, typename Out, typename A, typename B = A, typename C = A, typename Fn>
void map(const char* op, const Tensor& out, Fn fn, const Tensor& a, const Tensor* b = nullptr, const Tensor* c = nullptr) {
    const int64_t count = out.numel();
    if (count == 0) return;
    Out* out_data = static_cast<Out*>(out.raw_data());
    const A* a_data = static_cast<const A*>(a.raw_data());
    const B* b_data = b ? static_cast<const B*>(b->raw_data()) : nullptr;
    const C* c_data = c ? static_cast<const C*>(c->raw_data()) : nullptr;
    // Each input is dense in out's shape (and aligned), or uniform: one value broadcast everywhere.
    const auto uniform_input = [&](const Tensor& t) {
        for (int64_t stride : broadcast_strides(t.shape(), t.strides(), out.shape()))
            if (stride != 0) return false;
        return true;
    };
    unsigned uniform = 0;
    bool packable = out.is_contiguous() && aligned<Out>(out_data);
    const auto admit = [&](const Tensor* t, const void* data, bool data_aligned, unsigned bit) {
        if (!t || !packable) return;
        if (uniform_input(*t)) uniform |= bit;
        else packable = t->shape() == out.shape() && t->is_contiguous() && data_aligned;
    };
    admit(&a, a_data, aligned<A>(a_data), 1u);
    admit(b, b_data, b && aligned<B>(b_data), 2u);
    admit(c, c_data, c && aligned<C>(c_data), 4u);
    {
        if (packable) {
            map_dense_kernel<Out, A, B, C, Inputs><<<grid_for(count / kVector + 1), kThreads, 0, launch_stream()>>>(
                out_data, a_data, b_data, c_data, count, uniform, fn);
            check_launch(op);
            return;
        }
        std::array<Shape, 1 + Inputs> strides;
        strides[0] = out.strides();
        strides[1] = broadcast_strides(a.shape(), a.strides(), out.shape());
        if constexpr (Inputs >= 2) strides[2] = broadcast_strides(b->shape(), b->strides(), out.shape());
        if constexpr (Inputs >= 3) strides[3] = broadcast_strides(c->shape(), c->strides(), out.shape());
        const OffsetCalculator<1 + Inputs> calc = make_offsets<1 + Inputs>(out.shape(), strides, op);
        map_kernel<Out, A, B, C, Inputs>
            <<<grid_for(count), kThreads, 0, launch_stream()>>>(out_data, a_data, b_data, c_data, calc, count, fn);
    }
    check_launch(op);
}

// ---- device functors (extended lambdas cannot live inside the generic dispatch lambdas) ----------

template <UnaryOp Op, typename T>
struct UnaryFn {
    __device__ T operator()(T x) const { return math::unary<Op, T>(x); }
};

template <UnaryOp Op, typename T>
struct UnaryDerivativeFn {
    __device__ T operator()(T g, T x, T y) const { return math::unary_derivative<Op, T>(g, x, y); }
};

template <BinaryOp Op, typename T>
struct BinaryFn {
    __device__ auto operator()(T a, T b) const { return math::binary<Op, T>(a, b); }
};

template <typename T>
struct ClampFn {
    bool has_min, has_max;
    T low, high;
    __device__ T operator()(T v) const {
        if (math::is_nan(v)) return v;
        if (has_min && v < low) v = low;
        if (has_max && v > high) v = high;
        return v;
    }
};

template <typename T>
struct ClampBackwardFn {
    bool has_min, has_max;
    T low, high;
    __device__ T operator()(T g, T v) const { return (!has_min || v >= low) && (!has_max || v <= high) ? g : T(0); }
};

template <typename T>
struct WhereFn {
    __device__ T operator()(bool condition, T a, T b) const { return condition ? a : b; }
};

template <typename T>
struct AddScaledFn {
    T scale;
    __device__ T operator()(T d, T s) const { return static_cast<T>(d + scale * s); }
};

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
    dispatch_numeric(x.dtype(), unary_name(op), [&]<typename T>() {
        math::dispatch_unary(op, [&]<UnaryOp Op>() { map<1, T, T>(unary_name(op), out, UnaryFn<Op, T>{}, x); });
    });
}

void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& out) {
    dispatch_floating(grad.dtype(), unary_name(op), [&]<typename T>() {
        math::dispatch_unary(op, [&]<UnaryOp Op>() {
            const Tensor& xs = x.defined() ? x : grad;  // unused saved operands may be undefined
            const Tensor& ys = y.defined() ? y : grad;
            map<3, T, T, T, T>(unary_name(op), out, UnaryDerivativeFn<Op, T>{}, grad, &xs, &ys);
        });
    });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(a.dtype(), binary_name(op), [&]<typename T>() {
        math::dispatch_binary(op, [&]<BinaryOp Op>() {
            using Result = decltype(math::binary<Op, T>(T{}, T{}));
            map<2, Result, T, T>(binary_name(op), out, BinaryFn<Op, T>{}, a, &b);
        });
    });
}

void clamp(const Tensor& x, std::optional<double> min, std::optional<double> max, const Tensor& out) {
    dispatch_numeric(x.dtype(), "clamp", [&]<typename T>() {
        const ClampFn<T> fn{min.has_value(), max.has_value(), min ? static_cast<T>(*min) : T{}, max ? static_cast<T>(*max) : T{}};
        map<1, T, T>("clamp", out, fn, x);
    });
}

void clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max,
                    const Tensor& out) {
    dispatch_floating(grad.dtype(), "clamp", [&]<typename T>() {
        const ClampBackwardFn<T> fn{min.has_value(), max.has_value(), min ? static_cast<T>(*min) : T{},
                                    max ? static_cast<T>(*max) : T{}};
        map<2, T, T, T>("clamp", out, fn, grad, &x);
    });
}

void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(a.dtype(), "where", [&]<typename T>() { map<3, T, bool, T, T>("where", out, WhereFn<T>{}, condition, &a, &b); });
}

void add_into(const Tensor& destination, const Tensor& source, double alpha) {
    dispatch_numeric(destination.dtype(), "add_", [&]<typename T>() {
        map<2, T, T, T>("add_", destination, AddScaledFn<T>{static_cast<T>(alpha)}, destination, &source);
    });
}

}  // namespace kasmina::kernels::cuda
