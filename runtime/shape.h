// Shapes and strides: formatting for error messages, dimension wrapping, contiguous strides and
// broadcasting. Written once here; every op and backend uses these helpers.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

namespace kasmina {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

// Maps a possibly negative dim into [0, rank); raises ShapeError naming `op` when out of range.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);
// The same for a tensor of `shape`; the error names the shape too.
int64_t wrap_dim(int64_t dim, const Shape& shape, const char* op);

// The broadcast of two shapes (NumPy rules); raises ShapeError naming `op` if they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Strides that read a tensor of (shape, strides) as if it had broadcast shape `target`
// (0 stride on broadcast dims). `shape` must broadcast to `target`.
Shape broadcast_strides(const Shape& shape, const Shape& strides, const Shape& target);

}  // namespace kasmina
