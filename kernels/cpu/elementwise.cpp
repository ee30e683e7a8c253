// Elementwise ops on the CPU: one strided map over any number of broadcast inputs; float32
// contiguous unary ops go through oneDNN eltwise primitives, everything else through the loop.
#include <tuple>
#include <utility>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/onednn_utils.h"
#include "kernels/elementwise_math.h"
#include "runtime/strided_loop.h"

namespace kasmina::kernels::cpu {
namespace {

// out[i] = fn(inputs[i]...) with every input broadcast to out's shape (typed by In...).
template <typename Out, typename... In, typename Fn, size_t... K>
void map_impl(const Tensor& out, Fn fn, std::index_sequence<K...>, const std::array<const Tensor*, sizeof...(In)>& inputs) {
    constexpr size_t N = 1 + sizeof...(In);
    std::array<Shape, N> strides;
    strides[0] = out.strides();
    ((strides[K + 1] = broadcast_strides(inputs[K]->shape(), inputs[K]->strides(), out.shape())), ...);
    Out* out_data = static_cast<Out*>(out.raw_data());
    const std::tuple<const In*...> in_data{static_cast<const In*>(inputs[K]->raw_data())...};
    for_each_row<N>(out.shape(), strides, [&](const std::array<int64_t, N>& offsets, int64_t count, const std::array<int64_t, N>& inner) {
        Out* o = out_data + offsets[0];
        const std::tuple<const In*...> row{(std::get<K>(in_data) + offsets[K + 1])...};
        if (all_unit(inner)) {
#pragma omp simd
            for (int64_t i = 0; i < count; ++i) o[i] = fn(std::get<K>(row)[i]...);
        } else {
            for (int64_t i = 0; i < count; ++i) o[i * inner[0]] = fn(std::get<K>(row)[i * inner[K + 1]]...);
        }
    });
}

template <typename Out, typename... In, typename Fn>
void map(const Tensor& out, Fn fn, const std::same_as<Tensor> auto&... inputs) {
    map_impl<Out, In...>(out, fn, std::index_sequence_for<In...>{}, {&inputs...});
}

std::optional<dnnl::algorithm> onednn_algorithm(UnaryOp op, float& alpha, float& beta) {
    alpha = 0.f;
    beta = 0.f;
    switch (op) {
        case UnaryOp::relu: return dnnl::algorithm::eltwise_relu;
        case UnaryOp::gelu: return dnnl::algorithm::eltwise_gelu_erf;
        case UnaryOp::gelu_tanh: return dnnl::algorithm::eltwise_gelu_tanh;
        case UnaryOp::sigmoid: return dnnl::algorithm::eltwise_logistic;
        case UnaryOp::tanh: return dnnl::algorithm::eltwise_tanh;
        case UnaryOp::exp: return dnnl::algorithm::eltwise_exp;
        case UnaryOp::log: return dnnl::algorithm::eltwise_log;
        case UnaryOp::sqrt: return dnnl::algorithm::eltwise_sqrt;
        case UnaryOp::abs: return dnnl::algorithm::eltwise_abs;
        case UnaryOp::neg: alpha = -1.f; return dnnl::algorithm::eltwise_linear;
        default: return std::nullopt;
    }
}

// The oneDNN algorithm for an op's backward and whether it reads the forward output instead of the input.
std::optional<dnnl::algorithm> onednn_backward_algorithm(UnaryOp op, float& alpha) {
    alpha = 0.f;
    switch (op) {
        case UnaryOp::relu: return dnnl::algorithm::eltwise_relu;
        case UnaryOp::gelu: return dnnl::algorithm::eltwise_gelu_erf;
        case UnaryOp::gelu_tanh: return dnnl::algorithm::eltwise_gelu_tanh;
        case UnaryOp::tanh: return dnnl::algorithm::eltwise_tanh_use_dst_for_bwd;
        case UnaryOp::sigmoid: return dnnl::algorithm::eltwise_logistic_use_dst_for_bwd;
        case UnaryOp::exp: return dnnl::algorithm::eltwise_exp_use_dst_for_bwd;
        case UnaryOp::sqrt: return dnnl::algorithm::eltwise_sqrt_use_dst_for_bwd;
        case UnaryOp::log: return dnnl::algorithm::eltwise_log;
        default: return std::nullopt;
    }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
    float alpha = 0, beta = 0;
    const std::optional<dnnl::algorithm> algorithm = onednn_algorithm(op, alpha, beta);
    if (algorithm && x.dtype() == DType::f32 && x.is_contiguous() && out.is_contiguous() && x.shape() == out.shape() &&
        x.numel() > 0) {
        onednn::eltwise_forward(*algorithm, alpha, beta, x, out);
        return;
    }
    dispatch_all(x.dtype(), unary_name(op), [&]<typename T>() {
        math::dispatch_unary(op, [&]<UnaryOp Op>() { map<T, T>(out, [](T v) { return math::unary<Op, T>(v); }, x); });
    });
}

void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& out) {
    float alpha = 0;
    if (const auto algorithm = onednn_backward_algorithm(op, alpha); algorithm && grad.dtype() == DType::f32) {
        const Tensor& saved = onednn::uses_dst(*algorithm) ? y : x;
        if (saved.defined() && grad.is_contiguous() && saved.is_contiguous() && out.is_contiguous() &&
            saved.shape() == grad.shape() && grad.numel() > 0) {
            onednn::eltwise_backward(*algorithm, alpha, 0.f, grad, saved, out);
            return;
        }
    }
    dispatch_floating(grad.dtype(), unary_name(op), [&]<typename T>() {
        math::dispatch_unary(op, [&]<UnaryOp Op>() {
            // Unused saved operands may be undefined: substitute grad (never read).
            const Tensor& xs = x.defined() ? x : grad;
            const Tensor& ys = y.defined() ? y : grad;
            map<T, T, T, T>(out, [](T g, T xv, T yv) { return math::unary_derivative<Op, T>(g, xv, yv); }, grad, xs, ys);
        });
    });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(a.dtype(), binary_name(op), [&]<typename T>() {
        math::dispatch_binary(op, [&]<BinaryOp Op>() {
            using Result = decltype(math::binary<Op, T>(T{}, T{}));
            map<Result, T, T>(out, [](T l, T r) { return math::binary<Op, T>(l, r); }, a, b);
        });
    });
}

void clamp(const Tensor& x, std::optional<double> min, std::optional<double> max, const Tensor& out) {
    dispatch_numeric(x.dtype(), "clamp", [&]<typename T>() {
        const bool has_min = min.has_value(), has_max = max.has_value();
        const T low = has_min ? static_cast<T>(*min) : T{}, high = has_max ? static_cast<T>(*max) : T{};
        map<T, T>(out, [=](T v) {
            if (math::is_nan(v)) return v;
            if (has_min && v < low) v = low;
            if (has_max && v > high) v = high;
            return v;
        }, x);
    });
}

void clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max,
                    const Tensor& out) {
    dispatch_floating(grad.dtype(), "clamp", [&]<typename T>() {
        const bool has_min = min.has_value(), has_max = max.has_value();
        const T low = has_min ? static_cast<T>(*min) : T{}, high = has_max ? static_cast<T>(*max) : T{};
        map<T, T, T>(out, [=](T g, T v) {
            const bool inside = (!has_min || v >= low) && (!has_max || v <= high);
            return inside ? g : T(0);
        }, grad, x);
    });
}

void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(a.dtype(), "where", [&]<typename T>() {
        map<T, bool, T, T>(out, [](bool c, T l, T r) { return c ? l : r; }, condition, a, b);
    });
}

void add_into(const Tensor& destination, const Tensor& source, double alpha) {
    dispatch_numeric(destination.dtype(), "add_", [&]<typename T>() {
        const T scale = static_cast<T>(alpha);
        if (alpha == 1.0)
            map<T, T, T>(destination, [](T d, T s) { return static_cast<T>(d + s); }, destination, source);
        else
            map<T, T, T>(destination, [=](T d, T s) { return static_cast<T>(d + scale * s); }, destination, source);
    });
}

}  // namespace kasmina::kernels::cpu
