// Views a contiguous tensor as [outer, size(dim), inner] — the geometry of every "along one
// dimension" loop on either backend (softmax, index_select, index_add, ...).
#pragma once

#include <cstdint>

#include "runtime/shape.h"

namespace kasmina::kernels {

struct AxisSplit {
    int64_t outer = 1, n = 1, inner = 1;
};

inline AxisSplit split_at(const Shape& shape, int64_t dim) {
    AxisSplit split;
    for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
        if (d < dim) split.outer *= shape[d];
        else if (d == dim) split.n = shape[d];
        else split.inner *= shape[d];
    }
    return split;
}

}  // namespace kasmina::kernels
