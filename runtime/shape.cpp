#include "runtime/shape.h"

#include <sstream>

#include "runtime/error.h"

namespace kasmina {

std::string shape_str(const Shape& shape) {
    std::ostringstream stream;
    stream << '[';
    for (size_t i = 0; i < shape.size(); ++i) stream << (i ? ", " : "") << shape[i];
    stream << ']';
    return stream.str();
}

int64_t shape_numel(const Shape& shape) {
    int64_t numel = 1;
    for (int64_t size : shape) numel *= size;
    return numel;
}

Shape contiguous_strides(const Shape& shape) {
    Shape strides(shape.size());
    int64_t stride = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        strides[i] = stride;
        stride *= std::max<int64_t>(shape[i], 1);
    }
    return strides;
}

int64_t wrap_dim(int64_t dim, int64_t rank, const char* op) {
    const int64_t bound = std::max<int64_t>(rank, 1);
    if (dim < -bound || dim >= bound)
        raise<ShapeError>(op, "dimension ", dim, " out of range for a tensor of rank ", rank,
                          " (expected in [", -bound, ", ", bound - 1, "])");
    return dim < 0 ? dim + bound : dim;
}

int64_t wrap_dim(int64_t dim, const Shape& shape, const char* op) {
    const int64_t rank = static_cast<int64_t>(shape.size()), bound = std::max<int64_t>(rank, 1);
    if (dim < -bound || dim >= bound)
        raise<ShapeError>(op, "dimension ", dim, " out of range for a tensor of shape ", shape_str(shape), " (expected in [",
                          -bound, ", ", bound - 1, "])");
    return dim < 0 ? dim + bound : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    const size_t rank = std::max(a.size(), b.size());
    Shape out(rank);
    for (size_t i = 0; i < rank; ++i) {
        const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1)
            raise<ShapeError>(op, "shapes ", shape_str(a), " and ", shape_str(b),
                              " do not broadcast (dimension ", i, ": ", da, " vs ", db, ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

Shape broadcast_strides(const Shape& shape, const Shape& strides, const Shape& target) {
    Shape out(target.size(), 0);
    const size_t lead = target.size() - shape.size();
    for (size_t i = 0; i < shape.size(); ++i)
        out[lead + i] = (shape[i] == 1 && target[lead + i] != 1) ? 0 : strides[i];
    return out;
}

}  // namespace kasmina
