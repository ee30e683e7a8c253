// Element types a tensor can hold, their sizes and names, and the one dtype-dispatch mechanism
// every kernel uses (so no op body is written once per dtype by hand).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "runtime/error.h"

namespace kasmina {

enum class DType : uint8_t { f32, f64, i64, i32, u8, boolean };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "float32", "float64", "int64", ...
bool is_floating(DType dtype);
std::ostream& operator<<(std::ostream& stream, DType dtype);

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::boolean; }

// Calls fn.template operator()<T>() with T the C++ type of dtype. `op` names the caller in errors.
template <typename Fn>
decltype(auto) dispatch_all(DType dtype, const char* op, Fn&& fn) {
    switch (dtype) {
        case DType::f32: return fn.template operator()<float>();
        case DType::f64: return fn.template operator()<double>();
        case DType::i64: return fn.template operator()<int64_t>();
        case DType::i32: return fn.template operator()<int32_t>();
        case DType::u8: return fn.template operator()<uint8_t>();
        case DType::boolean: return fn.template operator()<bool>();
    }
    raise<DTypeError>(op, "unknown dtype");
}

// Like dispatch_all, restricted to float32/float64; other dtypes raise DTypeError.
template <typename Fn>
decltype(auto) dispatch_floating(DType dtype, const char* op, Fn&& fn) {
    switch (dtype) {
        case DType::f32: return fn.template operator()<float>();
        case DType::f64: return fn.template operator()<double>();
        default: break;
    }
    raise<DTypeError>(op, "expected a floating dtype (float32 or float64), got ", dtype_name(dtype));
}

// Numeric dtypes: floating and integer, not bool.
template <typename Fn>
decltype(auto) dispatch_numeric(DType dtype, const char* op, Fn&& fn) {
    switch (dtype) {
        case DType::f32: return fn.template operator()<float>();
        case DType::f64: return fn.template operator()<double>();
        case DType::i64: return fn.template operator()<int64_t>();
        case DType::i32: return fn.template operator()<int32_t>();
        case DType::u8: return fn.template operator()<uint8_t>();
        default: break;
    }
    raise<DTypeError>(op, "expected a numeric dtype, got ", dtype_name(dtype));
}

}  // namespace kasmina
