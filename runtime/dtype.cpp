#include "runtime/dtype.h"

namespace kasmina {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::i64: return 8;
        case DType::i32: return 4;
        case DType::u8: return 1;
        case DType::boolean: return 1;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::i64: return "int64";
        case DType::i32: return "int32";
        case DType::u8: return "uint8";
        case DType::boolean: return "bool";
    }
    return "unknown";
}

bool is_floating(DType dtype) { return dtype == DType::f32 || dtype == DType::f64; }

std::ostream& operator<<(std::ostream& stream, DType dtype) { return stream << dtype_name(dtype); }

}  // namespace kasmina
