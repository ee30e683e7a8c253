// The scalar math of every elementwise op and its derivative, written once for both backends
// (host and device callable): the CPU loops and the CUDA kernels apply these same functions.
#pragma once

#include <cmath>
#include <type_traits>

#include "kernels/kernels.h"
#include "runtime/random.h"  // KASMINA_HOST_DEVICE

namespace kasmina::kernels::math {

template <typename T>
KASMINA_HOST_DEVICE inline T sigmoid(T x) {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
}

template <typename T>
KASMINA_HOST_DEVICE inline T gelu_tanh_inner(T x) {
    constexpr double kSqrt2OverPi = 0.7978845608028654;
    return T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
}

template <UnaryOp Op, typename T>
KASMINA_HOST_DEVICE inline T unary(T x) {
    if constexpr (Op == UnaryOp::neg) return -x;
    if constexpr (Op == UnaryOp::abs) return x < T(0) ? T(-x) : x;
    if constexpr (Op == UnaryOp::relu) return x > T(0) ? x : T(0);
    if constexpr (Op == UnaryOp::sign) return static_cast<T>((T(0) < x) - (x < T(0)));
    if constexpr (std::is_floating_point_v<T>) {
        if constexpr (Op == UnaryOp::exp) return std::exp(x);
        if constexpr (Op == UnaryOp::log) return std::log(x);
        if constexpr (Op == UnaryOp::sqrt) return std::sqrt(x);
        if constexpr (Op == UnaryOp::rsqrt) return T(1) / std::sqrt(x);
        if constexpr (Op == UnaryOp::gelu) return T(0.5) * x * (T(1) + std::erf(x * T(0.7071067811865476)));
        if constexpr (Op == UnaryOp::gelu_tanh) return T(0.5) * x * (T(1) + std::tanh(gelu_tanh_inner(x)));
        if constexpr (Op == UnaryOp::sigmoid) return sigmoid(x);
        if constexpr (Op == UnaryOp::tanh) return std::tanh(x);
    }
    return x;
}

// grad * d(op)/dx at input x with output y.
template <UnaryOp Op, typename T>
KASMINA_HOST_DEVICE inline T unary_derivative(T grad, T x, T y) {
    if constexpr (Op == UnaryOp::neg) return -grad;
    if constexpr (Op == UnaryOp::abs) return x > T(0) ? grad : (x < T(0) ? T(-grad) : T(0));
    if constexpr (Op == UnaryOp::relu) return x > T(0) ? grad : T(0);
    if constexpr (Op == UnaryOp::sign) return T(0);
    if constexpr (Op == UnaryOp::exp) return grad * y;
    if constexpr (Op == UnaryOp::log) return grad / x;
    if constexpr (Op == UnaryOp::sqrt) return grad / (T(2) * y);
    if constexpr (Op == UnaryOp::rsqrt) return T(-0.5) * grad * y * y * y;
    if constexpr (Op == UnaryOp::sigmoid) return grad * y * (T(1) - y);
    if constexpr (Op == UnaryOp::tanh) return grad * (T(1) - y * y);
    if constexpr (std::is_floating_point_v<T>) {
        if constexpr (Op == UnaryOp::gelu) {
            const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.7071067811865476)));
            const T pdf = std::exp(T(-0.5) * x * x) * T(0.3989422804014327);
            return grad * (cdf + x * pdf);
        }
        if constexpr (Op == UnaryOp::gelu_tanh) {
            const T t = std::tanh(gelu_tanh_inner(x));
            const T inner_derivative = T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * x * x);
            return grad * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * inner_derivative);
        }
    }
    return grad;
}

template <typename T>
KASMINA_HOST_DEVICE inline bool is_nan(T x) {
    if constexpr (std::is_floating_point_v<T>) return x != x;
    return false;
}

template <BinaryOp Op, typename T>
KASMINA_HOST_DEVICE inline auto binary(T a, T b) {
    if constexpr (Op == BinaryOp::add) return static_cast<T>(a + b);
    if constexpr (Op == BinaryOp::sub) return static_cast<T>(a - b);
    if constexpr (Op == BinaryOp::mul) return static_cast<T>(a * b);
    if constexpr (Op == BinaryOp::div) return static_cast<T>(a / b);
    if constexpr (Op == BinaryOp::pow) {
        if constexpr (std::is_floating_point_v<T>) return static_cast<T>(std::pow(a, b));
        return a;
    }
    if constexpr (Op == BinaryOp::maximum) return is_nan(a) ? a : (is_nan(b) ? b : (a > b ? a : b));
    if constexpr (Op == BinaryOp::minimum) return is_nan(a) ? a : (is_nan(b) ? b : (a < b ? a : b));
    if constexpr (Op == BinaryOp::eq) return a == b;
    if constexpr (Op == BinaryOp::ne) return a != b;
    if constexpr (Op == BinaryOp::lt) return a < b;
    if constexpr (Op == BinaryOp::le) return a <= b;
    if constexpr (Op == BinaryOp::gt) return a > b;
    if constexpr (Op == BinaryOp::ge) return a >= b;
}

// Calls fn.template operator()<Op>() for the runtime op value (turns an enum into a template argument).
template <typename Fn>
decltype(auto) dispatch_unary(UnaryOp op, Fn&& fn) {
    switch (op) {
        case UnaryOp::neg: return fn.template operator()<UnaryOp::neg>();
        case UnaryOp::exp: return fn.template operator()<UnaryOp::exp>();
        case UnaryOp::log: return fn.template operator()<UnaryOp::log>();
        case UnaryOp::sqrt: return fn.template operator()<UnaryOp::sqrt>();
        case UnaryOp::rsqrt: return fn.template operator()<UnaryOp::rsqrt>();
        case UnaryOp::abs: return fn.template operator()<UnaryOp::abs>();
        case UnaryOp::relu: return fn.template operator()<UnaryOp::relu>();
        case UnaryOp::gelu: return fn.template operator()<UnaryOp::gelu>();
        case UnaryOp::gelu_tanh: return fn.template operator()<UnaryOp::gelu_tanh>();
        case UnaryOp::sigmoid: return fn.template operator()<UnaryOp::sigmoid>();
        case UnaryOp::tanh: return fn.template operator()<UnaryOp::tanh>();
        case UnaryOp::sign: return fn.template operator()<UnaryOp::sign>();
    }
    return fn.template operator()<UnaryOp::neg>();
}

template <typename Fn>
decltype(auto) dispatch_binary(BinaryOp op, Fn&& fn) {
    switch (op) {
        case BinaryOp::add: return fn.template operator()<BinaryOp::add>();
        case BinaryOp::sub: return fn.template operator()<BinaryOp::sub>();
        case BinaryOp::mul: return fn.template operator()<BinaryOp::mul>();
        case BinaryOp::div: return fn.template operator()<BinaryOp::div>();
        case BinaryOp::pow: return fn.template operator()<BinaryOp::pow>();
        case BinaryOp::maximum: return fn.template operator()<BinaryOp::maximum>();
        case BinaryOp::minimum: return fn.template operator()<BinaryOp::minimum>();
        case BinaryOp::eq: return fn.template operator()<BinaryOp::eq>();
        case BinaryOp::ne: return fn.template operator()<BinaryOp::ne>();
        case BinaryOp::lt: return fn.template operator()<BinaryOp::lt>();
        case BinaryOp::le: return fn.template operator()<BinaryOp::le>();
        case BinaryOp::gt: return fn.template operator()<BinaryOp::gt>();
        case BinaryOp::ge: return fn.template operator()<BinaryOp::ge>();
    }
    return fn.template operator()<BinaryOp::add>();
}

}  // namespace kasmina::kernels::math
