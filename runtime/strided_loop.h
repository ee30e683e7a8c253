// The one strided iteration mechanism of the CPU side: walks N operands that share an iteration
// shape (each with its own strides, broadcast dims have stride 0), merging dimensions that are
// contiguous for every operand and handing whole innermost rows to a callback, in parallel.
#pragma once

#include <array>
#include <cstdint>

#include "runtime/shape.h"

namespace kasmina {

// Row callback: fn(offsets, count, inner_strides) where offsets[k] is operand k's element offset at
// the row start and inner_strides[k] its stride along the row.
template <size_t N>
struct StridedRows {
    Shape shape;                       // merged iteration shape (rank >= 1)
    std::array<Shape, N> strides;      // merged strides per operand
};

template <size_t N>
StridedRows<N> merge_dimensions(const Shape& shape, const std::array<Shape, N>& strides) {
    StridedRows<N> rows;
    if (shape.empty()) {
        rows.shape = {1};
        for (size_t k = 0; k < N; ++k) rows.strides[k] = {0};
        return rows;
    }
    rows.shape.push_back(shape[0]);
    for (size_t k = 0; k < N; ++k) rows.strides[k].push_back(strides[k][0]);
    for (size_t d = 1; d < shape.size(); ++d) {
        bool mergeable = true;
        for (size_t k = 0; k < N; ++k)
            if (rows.strides[k].back() != strides[k][d] * shape[d]) mergeable = false;
        if (shape[d] == 1) {  // size-1 dims never matter
            continue;
        }
        if (rows.shape.back() == 1) {  // previous was size 1: replace it
            rows.shape.back() = shape[d];
            for (size_t k = 0; k < N; ++k) rows.strides[k].back() = strides[k][d];
            continue;
        }
        if (mergeable) {
            rows.shape.back() *= shape[d];
            for (size_t k = 0; k < N; ++k) rows.strides[k].back() = strides[k][d];
        } else {
            rows.shape.push_back(shape[d]);
            for (size_t k = 0; k < N; ++k) rows.strides[k].push_back(strides[k][d]);
        }
    }
    return rows;
}

// Rows are distributed over OpenMP threads when the total work is large enough to pay for it.
template <size_t N, typename RowFn>
void for_each_row(const Shape& shape, const std::array<Shape, N>& strides, RowFn&& fn) {
    const int64_t total = shape_numel(shape);
    if (total == 0) return;
    const StridedRows<N> rows = merge_dimensions<N>(shape, strides);
    const int64_t rank = static_cast<int64_t>(rows.shape.size());
    const int64_t row_length = rows.shape[rank - 1];
    const int64_t row_count = total / row_length;
    std::array<int64_t, N> inner{};
    for (size_t k = 0; k < N; ++k) inner[k] = rows.strides[k][rank - 1];

    auto run_rows = [&](int64_t first, int64_t last) {
        for (int64_t row = first; row < last; ++row) {
            std::array<int64_t, N> offsets{};
            int64_t rest = row;
            for (int64_t d = rank - 2; d >= 0; --d) {
                const int64_t index = rest % rows.shape[d];
                rest /= rows.shape[d];
                for (size_t k = 0; k < N; ++k) offsets[k] += index * rows.strides[k][d];
            }
            fn(offsets, row_length, inner);
        }
    };
    constexpr int64_t kParallelThreshold = 1 << 15;
    if (total >= kParallelThreshold && row_count > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t row = 0; row < row_count; ++row) run_rows(row, row + 1);
    } else if (total >= kParallelThreshold && row_count == 1) {
        // One long row: split it into chunks.
        const int64_t chunk = 8192;
        const int64_t chunks = (row_length + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < chunks; ++c) {
            std::array<int64_t, N> offsets{};
            for (size_t k = 0; k < N; ++k) offsets[k] = c * chunk * inner[k];
            fn(offsets, std::min(chunk, row_length - c * chunk), inner);
        }
    } else {
        run_rows(0, row_count);
    }
}

// Convenience: element-wise callback fn(index_k...) over N operands with typed pointers is built
// by each kernel on top of for_each_row; contiguous rows (all inner strides 1) vectorize.
template <size_t N>
bool all_unit(const std::array<int64_t, N>& inner) {
    for (int64_t s : inner)
        if (s != 1) return false;
    return true;
}

}  // namespace kasmina
