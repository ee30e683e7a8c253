// Fused scaled-dot-product attention (flash-attention style): softmax(q k^T * scale + mask) v without
// ever storing the whole [heads, L, S] score tensor. One block of 256 threads per (64 query rows,
// batch*head); key/value tiles of 64 stream through shared memory with an online softmax, and the
// forward keeps each row's log-sum-exp for the backward. The backward recomputes the probabilities:
// by chunks of heads whose scores fit the workspace budget, with cuBLAS for the five products (the
// fastest in fp32 on H100: CUDA cores alone run the products at ~2/3 of cuBLAS's rate); a head too
// large for the budget goes tile by tile through two kernels (dK/dV per key tile over all query
// tiles, dQ per query tile over all key tiles) that hold no scores at all. No atomics anywhere, so
// results are deterministic. The tiled products are register-tiled micro-GEMMs over shared memory
// (tile_product below), in the input's precision (no TF32).
#include <atomic>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3.cuh"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kAttentionThreads = 256;
constexpr int kLanes = 16;   // threads sharing a row group (tx); 16 row groups (ty)
constexpr int kTile = 64;    // query rows per forward/dQ block, keys per tile
constexpr int kPad = 4;      // shared-memory row padding (keeps 16-byte alignment, spreads banks)

// A [batch, heads, rows, head_dim] operand with unit stride along head_dim.
template <typename T>
struct HeadView {
    T* data;
    int64_t batch_stride, head_stride, row_stride;
    __device__ T* row(int b, int h, int64_t r) const { return data + b * batch_stride + h * head_stride + r * row_stride; }
};

// The additive mask, broadcast to [batch, heads, target, source] by zero strides; data null: none.
template <typename T>
struct MaskView {
    const T* data;
    int64_t batch_stride, head_stride, row_stride, col_stride;
};

template <typename T>
struct AttentionParams {
    int heads, target, source, head_dim;
    T scale;
    bool causal;
    HeadView<const T> q, k, v, grad_out;
    HeadView<T> out, grad_q, grad_k, grad_v;
    MaskView<T> mask;
    bool vectors;    // every operand row 16-byte aligned and head_dim a multiple of 16 bytes
    T* lse;          // [batch*heads, target]: each row's log-sum-exp of its scaled, masked scores
    const T* delta;  // [batch*heads, target]: rowsum(grad_out * out), for the backward
};

// The scaled, masked score of query row r against key c (both in range), -inf where masked.
template <typename T>
__device__ __forceinline__ T masked_score(const AttentionParams<T>& p, int b, int h, int r, int c, T dot) {
    if (p.causal && c > r) return -INFINITY;
    T score = dot * p.scale;
    if (p.mask.data)
        score += p.mask.data[b * p.mask.batch_stride + h * p.mask.head_stride + r * p.mask.row_stride +
                             c * p.mask.col_stride];
    return score;
}

// N consecutive shared-memory values starting at a 16-byte aligned address, in vector loads.
template <int N, typename T>
__device__ __forceinline__ void load_run(const T* from, T (&to)[N]) {
    if constexpr (sizeof(T) * N % 16 == 0) {
        using Vector = std::conditional_t<sizeof(T) == 4, float4, double2>;
        constexpr int kPer = 16 / sizeof(T);
#pragma unroll
        for (int i = 0; i < N / kPer; ++i) *reinterpret_cast<Vector*>(&to[i * kPer]) = reinterpret_cast<const Vector*>(from)[i];
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) to[i] = from[i];
    }
}

// acc[i][j] += sum_k a[k * lda + row0 + i] * b[k * ldb + col0 + j] for k < K: both operands are laid
// out reduction-index first, so each step is two short vector loads and R*C fused multiply-adds.
template <int K, int R, int C, typename T>
__device__ __forceinline__ void tile_product(T (&acc)[R][C], const T* a, int lda, int row0, const T* b, int ldb, int col0) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
        T left[R], right[C];
        load_run<R>(a + k * lda + row0, left);
        load_run<C>(b + k * ldb + col0, right);
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < C; ++j) acc[i][j] += left[i] * right[j];
    }
}

// Copies rows [first, first + kRows) of a head operand into shared memory, either as stored
// ([row][d], leading dimension ld) or transposed ([d][row]); rows past `count` and d past head_dim
// are zero, so partial tiles need no special cases in the products. With `vectors` (16-byte aligned
// rows, head_dim a multiple of the vector width) global reads are 16 bytes; transposed tiles put
// consecutive threads on consecutive rows so the shared-memory stores do not collide.
template <int kRows, int kD, bool kTransposed, typename T, int kBlock = kAttentionThreads>
__device__ void load_tile(T* tile, int ld, const HeadView<const T>& view, int b, int h, int first, int count,
                          int head_dim, bool vectors) {
    constexpr int kVector = 16 / sizeof(T);
    using Vector = std::conditional_t<sizeof(T) == 4, float4, double2>;
    if (!vectors) {
        for (int index = threadIdx.x; index < kRows * kD; index += kBlock) {
            const int r = kTransposed ? index % kRows : index / kD, d = kTransposed ? index / kRows : index % kD;
            T value = 0;
            if (first + r < count && d < head_dim) value = view.row(b, h, first + r)[d];
            tile[kTransposed ? d * ld + r : r * ld + d] = value;
        }
        return;
    }
    constexpr int kChunks = kD / kVector;
    for (int index = threadIdx.x; index < kRows * kChunks; index += kBlock) {
        const int r = kTransposed ? index % kRows : index / kChunks;
        const int d = (kTransposed ? index / kRows : index % kChunks) * kVector;
        T values[kVector] = {};
        if (first + r < count && d < head_dim)
            *reinterpret_cast<Vector*>(values) = *reinterpret_cast<const Vector*>(view.row(b, h, first + r) + d);
        if constexpr (kTransposed) {
#pragma unroll
            for (int i = 0; i < kVector; ++i) tile[(d + i) * ld + r] = values[i];
        } else {
            *reinterpret_cast<Vector*>(&tile[r * ld + d]) = *reinterpret_cast<const Vector*>(values);
        }
    }
}

template <int kD>
constexpr int forward_shared_elements() {
    return 2 * kD * (kTile + kPad) + kTile * (kD + kPad) + kTile * (kTile + kPad);
}

// Forward: thread (ty, tx) owns query rows ty*4..ty*4+3, score columns tx*4..tx*4+3 of each key tile
// and output columns tx*(kD/16)... of its rows.
template <typename T, int kD>
__global__ void __launch_bounds__(kAttentionThreads) attention_forward_kernel(AttentionParams<T> p) {
    constexpr int kRows = 4, kCols = kTile / kLanes, kOutCols = kD / kLanes, ld = kTile + kPad;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    T* q_t = reinterpret_cast<T*>(shared_bytes);  // [kD][ld]
    T* k_t = q_t + kD * ld;                         // [kD][ld]
    T* v_s = k_t + kD * ld;                         // [kTile][kD + kPad]
    T* p_t = v_s + kTile * (kD + kPad);             // [kTile keys][ld]
    const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, row_begin = blockIdx.x * kTile;

    load_tile<kTile, kD, true>(q_t, ld, p.q, b, h, row_begin, p.target, p.head_dim, p.vectors);
    T running_max[kRows], running_sum[kRows], acc[kRows][kOutCols] = {};
#pragma unroll
    for (int i = 0; i < kRows; ++i) running_max[i] = -INFINITY, running_sum[i] = 0;

    const int key_end = p.causal ? min(p.source, row_begin + kTile) : p.source;
    for (int key_begin = 0; key_begin < key_end; key_begin += kTile) {
        __syncthreads();  // the previous tile's readers are done
        load_tile<kTile, kD, true>(k_t, ld, p.k, b, h, key_begin, p.source, p.head_dim, p.vectors);
        load_tile<kTile, kD, false>(v_s, kD + kPad, p.v, b, h, key_begin, p.source, p.head_dim, p.vectors);
        __syncthreads();
        T score[kRows][kCols] = {};
        tile_product<kD>(score, q_t, ld, ty * kRows, k_t, ld, tx * kCols);
#pragma unroll
        for (int i = 0; i < kRows; ++i) {
            const int r = row_begin + ty * kRows + i;
            T tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < kCols; ++j) {
                const int c = key_begin + tx * kCols + j;
                score[i][j] = (r < p.target && c < p.source) ? masked_score(p, b, h, r, c, score[i][j]) : -INFINITY;
                tile_max = fmax(tile_max, score[i][j]);
            }
            for (int offset = kLanes / 2; offset > 0; offset >>= 1)
                tile_max = fmax(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
            const T new_max = fmax(running_max[i], tile_max);
            // A row masked so far keeps max -inf: its probabilities are 0 and nothing needs rescaling.
            const T shift = isinf(new_max) ? T(0) : new_max;
            const T correction = exp(running_max[i] - shift);
            T tile_sum = 0;
#pragma unroll
            for (int j = 0; j < kCols; ++j) {
                const T probability = exp(score[i][j] - shift);
                tile_sum += probability;
                p_t[(tx * kCols + j) * ld + ty * kRows + i] = probability;
            }
            for (int offset = kLanes / 2; offset > 0; offset >>= 1) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, offset);
            running_sum[i] = running_sum[i] * correction + tile_sum;
            running_max[i] = new_max;
#pragma unroll
            for (int j = 0; j < kOutCols; ++j) acc[i][j] *= correction;
        }
        __syncthreads();
        tile_product<kTile>(acc, p_t, ld, ty * kRows, v_s, kD + kPad, tx * kOutCols);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
        const int r = row_begin + ty * kRows + i;
        if (r >= p.target) continue;
        // A fully masked row has sum 0: NaN output and -inf log-sum-exp, as softmax of all -inf gives.
        const T inverse = T(1) / running_sum[i];
        T* out = p.out.row(b, h, r);
#pragma unroll
        for (int j = 0; j < kOutCols; ++j)
            if (tx * kOutCols + j < p.head_dim) out[tx * kOutCols + j] = acc[i][j] * inverse;
        if (tx == 0) p.lse[static_cast<int64_t>(blockIdx.y) * p.target + r] = running_max[i] + log(running_sum[i]);
    }
}

// delta[row] = sum_d grad_out[row, d] * out[row, d]: one warp per row.
template <typename T>
__global__ void attention_delta_kernel(AttentionParams<T> p, T* delta, int64_t rows) {
    const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int bh = static_cast<int>(row / p.target), r = static_cast<int>(row % p.target);
    const int b = bh / p.heads, h = bh % p.heads;
    const T* g = p.grad_out.row(b, h, r);
    const T* o = p.out.row(b, h, r);
    T total = 0;
    for (int d = lane; d < p.head_dim; d += 32) total += g[d] * o[d];
    total = warp_sum(total);
    if (lane == 0) delta[row] = total;
}

// The probability and score gradient of (r, c) from the recomputed dot product q.k and dO.v, given
// row r's log-sum-exp and delta (which the caller may leave unread, as anything, for r out of range).
template <typename T>
__device__ __forceinline__ void probability_and_gradient(const AttentionParams<T>& p, int b, int h, int r, int c, T dot,
                                                         T grad_dot, T lse, T delta, T& probability, T& grad_score) {
    probability = 0;
    grad_score = 0;
    if (r >= p.target || c >= p.source) return;
    probability = exp(masked_score(p, b, h, r, c, dot) - lse);
    grad_score = probability * (grad_dot - delta);
}

// The same, reading row r's log-sum-exp and delta at row_index.
template <typename T>
__device__ __forceinline__ void probability_and_gradient(const AttentionParams<T>& p, int b, int h, int r, int c, T dot,
                                                         T grad_dot, int64_t row_index, T& probability, T& grad_score) {
    const bool in_range = r < p.target;
    probability_and_gradient(p, b, h, r, c, dot, grad_dot, in_range ? p.lse[row_index] : T(0),
                             in_range ? p.delta[row_index] : T(0), probability, grad_score);
}

// The chunked backward's elementwise steps over the scores [rows = heads * L, S] of one chunk whose
// first head is first_head: one block row per score row, so the head and row indices cost one
// division per row, not per element.
// probabilities = exp(scores * scale + mask - lse), in place.
template <typename T>
__global__ void chunk_probabilities_kernel(T* scores, AttentionParams<T> p, int64_t first_head, int64_t rows) {
    for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const int64_t head = first_head + row / p.target;
        const int r = static_cast<int>(row % p.target), b = static_cast<int>(head / p.heads), h = static_cast<int>(head % p.heads);
        const T lse = p.lse[head * p.target + r];
        T* line = scores + row * p.source;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < p.source; c += gridDim.x * blockDim.x)
            line[c] = exp(masked_score(p, b, h, r, c, line[c]) - lse);
    }
}

// grad (dP, in place) becomes scale * P * (dP - delta): the gradient of the scaled scores.
template <typename T>
__global__ void chunk_score_gradient_kernel(const T* probabilities, T* grad, AttentionParams<T> p, int64_t first_head,
                                            int64_t rows) {
    for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const int64_t head = first_head + row / p.target;
        const T delta = p.delta[head * p.target + row % p.target];
        const T* probability = probabilities + row * p.source;
        T* line = grad + row * p.source;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < p.source; c += gridDim.x * blockDim.x)
            line[c] = p.scale * probability[c] * (line[c] - delta);
    }
}

dim3 score_rows_grid(int64_t rows, int64_t source) {
    return dim3(static_cast<unsigned>(std::min<int64_t>((source + kThreads - 1) / kThreads, 64)),
                static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
}

// Query rows per inner step of the dK/dV kernel: 64 where shared memory allows, else 32.
template <typename T, int kD>
constexpr int query_tile() {
    return sizeof(T) == 4 && kD <= 64 ? 64 : 32;
}

template <typename T, int kD>
constexpr int key_gradient_shared_elements() {
    constexpr int kQueryTile = query_tile<T, kD>();
    return 2 * kD * (kTile + kPad) + 2 * kD * (kQueryTile + kPad) + 2 * kQueryTile * (kD + kPad) +
           2 * kQueryTile * (kTile + kPad);
}

// dK, dV for one tile of 64 keys, summed over every query tile. Thread (ty, tx) owns keys
// ty*4..ty*4+3; in the transposed score tile, query columns tx*(kQueryTile/16)...; in dK/dV, columns tx*(kD/16)...
template <typename T, int kD>
__global__ void __launch_bounds__(kAttentionThreads) attention_key_gradient_kernel(AttentionParams<T> p) {
    constexpr int kQueryTile = query_tile<T, kD>();
    constexpr int kKeys = 4, kQueries = kQueryTile / kLanes, kOutCols = kD / kLanes;
    constexpr int ld_keys = kTile + kPad, ld_queries = kQueryTile + kPad, ld_d = kD + kPad;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    T* k_t = reinterpret_cast<T*>(shared_bytes);  // [kD][ld_keys]
    T* v_t = k_t + kD * ld_keys;                    // [kD][ld_keys]
    T* q_t = v_t + kD * ld_keys;                    // [kD][ld_queries]
    T* go_t = q_t + kD * ld_queries;                // [kD][ld_queries]
    T* q_s = go_t + kD * ld_queries;                // [kQueryTile][ld_d]
    T* go_s = q_s + kQueryTile * ld_d;              // [kQueryTile][ld_d]
    T* p_s = go_s + kQueryTile * ld_d;              // [kQueryTile][ld_keys]
    T* ds_s = p_s + kQueryTile * ld_keys;           // [kQueryTile][ld_keys]
    const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, key_begin = blockIdx.x * kTile;

    load_tile<kTile, kD, true>(k_t, ld_keys, p.k, b, h, key_begin, p.source, p.head_dim, p.vectors);
    load_tile<kTile, kD, true>(v_t, ld_keys, p.v, b, h, key_begin, p.source, p.head_dim, p.vectors);
    T grad_k[kKeys][kOutCols] = {}, grad_v[kKeys][kOutCols] = {};
    // Causal: query rows before key_begin see none of these keys.
    const int query_start = p.causal ? key_begin / kQueryTile * kQueryTile : 0;
    for (int query_begin = query_start; query_begin < p.target; query_begin += kQueryTile) {
        __syncthreads();
        load_tile<kQueryTile, kD, true>(q_t, ld_queries, p.q, b, h, query_begin, p.target, p.head_dim, p.vectors);
        load_tile<kQueryTile, kD, true>(go_t, ld_queries, p.grad_out, b, h, query_begin, p.target, p.head_dim, p.vectors);
        load_tile<kQueryTile, kD, false>(q_s, ld_d, p.q, b, h, query_begin, p.target, p.head_dim, p.vectors);
        load_tile<kQueryTile, kD, false>(go_s, ld_d, p.grad_out, b, h, query_begin, p.target, p.head_dim, p.vectors);
        __syncthreads();
        T dot[kKeys][kQueries] = {}, grad_dot[kKeys][kQueries] = {};
        tile_product<kD>(dot, k_t, ld_keys, ty * kKeys, q_t, ld_queries, tx * kQueries);
        tile_product<kD>(grad_dot, v_t, ld_keys, ty * kKeys, go_t, ld_queries, tx * kQueries);
#pragma unroll
        for (int i = 0; i < kKeys; ++i)
#pragma unroll
            for (int j = 0; j < kQueries; ++j) {
                const int c = key_begin + ty * kKeys + i, r = query_begin + tx * kQueries + j;
                T probability, grad_score;
                probability_and_gradient(p, b, h, r, c, dot[i][j], grad_dot[i][j],
                                         static_cast<int64_t>(blockIdx.y) * p.target + r, probability, grad_score);
                p_s[(tx * kQueries + j) * ld_keys + ty * kKeys + i] = probability;
                ds_s[(tx * kQueries + j) * ld_keys + ty * kKeys + i] = grad_score;
            }
        __syncthreads();
        tile_product<kQueryTile>(grad_v, p_s, ld_keys, ty * kKeys, go_s, ld_d, tx * kOutCols);
        tile_product<kQueryTile>(grad_k, ds_s, ld_keys, ty * kKeys, q_s, ld_d, tx * kOutCols);
    }
#pragma unroll
    for (int i = 0; i < kKeys; ++i) {
        const int c = key_begin + ty * kKeys + i;
        if (c >= p.source) continue;
        T* dk = p.grad_k.row(b, h, c);
        T* dv = p.grad_v.row(b, h, c);
#pragma unroll
        for (int j = 0; j < kOutCols; ++j) {
            const int d = tx * kOutCols + j;
            if (d >= p.head_dim) continue;
            dk[d] = grad_k[i][j] * p.scale;
            dv[d] = grad_v[i][j];
        }
    }
}

template <int kD>
constexpr int query_gradient_shared_elements() {
    return 4 * kD * (kTile + kPad) + kTile * (kD + kPad) + kTile * (kTile + kPad);
}

// dQ for one tile of 64 query rows, summed over every key tile; the thread layout of the forward.
template <typename T, int kD>
__global__ void __launch_bounds__(kAttentionThreads) attention_query_gradient_kernel(AttentionParams<T> p) {
    constexpr int kRows = 4, kCols = kTile / kLanes, kOutCols = kD / kLanes, ld = kTile + kPad, ld_d = kD + kPad;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    T* q_t = reinterpret_cast<T*>(shared_bytes);  // [kD][ld]
    T* go_t = q_t + kD * ld;                        // [kD][ld]
    T* k_t = go_t + kD * ld;                        // [kD][ld]
    T* v_t = k_t + kD * ld;                         // [kD][ld]
    T* k_s = v_t + kD * ld;                         // [kTile][ld_d]
    T* ds_t = k_s + kTile * ld_d;                   // [kTile keys][ld]
    const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, row_begin = blockIdx.x * kTile;

    load_tile<kTile, kD, true>(q_t, ld, p.q, b, h, row_begin, p.target, p.head_dim, p.vectors);
    load_tile<kTile, kD, true>(go_t, ld, p.grad_out, b, h, row_begin, p.target, p.head_dim, p.vectors);
    T grad_q[kRows][kOutCols] = {};
    const int key_end = p.causal ? min(p.source, row_begin + kTile) : p.source;
    for (int key_begin = 0; key_begin < key_end; key_begin += kTile) {
        __syncthreads();
        load_tile<kTile, kD, true>(k_t, ld, p.k, b, h, key_begin, p.source, p.head_dim, p.vectors);
        load_tile<kTile, kD, true>(v_t, ld, p.v, b, h, key_begin, p.source, p.head_dim, p.vectors);
        load_tile<kTile, kD, false>(k_s, ld_d, p.k, b, h, key_begin, p.source, p.head_dim, p.vectors);
        __syncthreads();
        T dot[kRows][kCols] = {}, grad_dot[kRows][kCols] = {};
        tile_product<kD>(dot, q_t, ld, ty * kRows, k_t, ld, tx * kCols);
        tile_product<kD>(grad_dot, go_t, ld, ty * kRows, v_t, ld, tx * kCols);
#pragma unroll
        for (int i = 0; i < kRows; ++i)
#pragma unroll
            for (int j = 0; j < kCols; ++j) {
                const int r = row_begin + ty * kRows + i, c = key_begin + tx * kCols + j;
                T probability, grad_score;
                probability_and_gradient(p, b, h, r, c, dot[i][j], grad_dot[i][j],
                                         static_cast<int64_t>(blockIdx.y) * p.target + r, probability, grad_score);
                ds_t[(tx * kCols + j) * ld + ty * kRows + i] = grad_score;
            }
        __syncthreads();
        tile_product<kTile>(grad_q, ds_t, ld, ty * kRows, k_s, ld_d, tx * kOutCols);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
        const int r = row_begin + ty * kRows + i;
        if (r >= p.target) continue;
        T* dq = p.grad_q.row(b, h, r);
#pragma unroll
        for (int j = 0; j < kOutCols; ++j)
            if (tx * kOutCols + j < p.head_dim) dq[tx * kOutCols + j] = grad_q[i][j] * p.scale;
    }
}

// The float32 kernels on tensor cores (tf32x3.cuh: float32 accuracy). A block is four warps; each warp
// owns 16 rows of the operand the block is tiled by (query rows in the forward and the dQ pass, keys
// in the dK/dV pass), which stay in shared memory while the other operand streams through it in tiles. Head dims 32 and 64 (kD; a smaller head dim is zero-padded).
constexpr int kTensorWarps = 4, kTensorThreads = 32 * kTensorWarps, kTensorRows = 16 * kTensorWarps;
constexpr int kTensorQueryTile = 32;  // query rows per step of the dK/dV pass
static_assert(kTensorRows == kTile, "the tensor-core kernels share attention_grid's rows per block");

// Stages rows [first, first + kRows) of a float32 head operand into a row-major shared tile (zero
// past `count` and past head_dim). With `vectors` the copies are asynchronous (cp.async, 16 bytes
// each, all in flight at once): the caller commits them as a group and waits for it (cp_async_wait)
// before its barrier. Without, they are plain loads and stores, visible after the barrier.
template <int kRows, int kD>
__device__ __forceinline__ void stage_tile(float* tile, int ld, const HeadView<const float>& view, int b, int h, int first,
                                           int count, int head_dim, bool vectors) {
    constexpr int kChunks = kD / 4;
    static_assert(kRows * kChunks % kTensorThreads == 0, "every thread stages the same number of chunks");
    if (!vectors) {
        load_tile<kRows, kD, false, float, kTensorThreads>(tile, ld, view, b, h, first, count, head_dim, false);
        return;
    }
#pragma unroll
    for (int i = 0; i < kRows * kChunks / kTensorThreads; ++i) {
        const int index = threadIdx.x + i * kTensorThreads, r = index / kChunks, d = index % kChunks * 4;
        const bool inside = first + r < count && d < head_dim;
        // A zero-filled chunk reads nothing (source size 0) but still names a valid address.
        const float* source = inside ? view.row(b, h, first + r) + d : view.data;
        cp_async_16(tile + r * ld + d, source, inside);
    }
}

// The tensor-core kernels keep scores in log2 units (exp2 is one multifunction instruction; the
// scale is folded into it) and skip the per-element checks on a plain tile: no mask, not causal,
// every row and key of the tile in range (the same for the whole block).
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ bool plain_tile(const AttentionParams<float>& p, int row_begin, int rows, int key_begin, int keys) {
    return !p.mask.data && !p.causal && row_begin + rows <= p.target && key_begin + keys <= p.source;
}

// The scaled, masked score of (r, c) in log2 units, -inf where masked or out of range.
__device__ __forceinline__ float log2_score(const AttentionParams<float>& p, bool plain, float log2_scale, int b, int h,
                                            int r, int c, float dot) {
    if (plain) return dot * log2_scale;
    return (r < p.target && c < p.source) ? masked_score(p, b, h, r, c, dot) * kLog2e : -INFINITY;
}

// The probability of (r, c) from its dot product and its row's log-sum-exp in log2 units; 0 out of range.
__device__ __forceinline__ float log2_probability(const AttentionParams<float>& p, bool plain, float log2_scale, int b,
                                                  int h, int r, int c, float dot, float log2_lse) {
    if (plain) return exp2f(dot * log2_scale - log2_lse);
    if (r >= p.target || c >= p.source) return 0.0f;
    return exp2f(masked_score(p, b, h, r, c, dot) * kLog2e - log2_lse);
}

// Calls fn(j, i, plain) for every element i of every C fragment j of a warp's scores, with the tile's
// plain flag as a compile-time constant: a plain tile runs a loop of its own, so the masked path's
// per-element checks (rarely run) do not sit among the instructions every tile executes.
template <int kN, typename Fn>
__device__ __forceinline__ void for_each_score(bool plain, Fn&& fn) {
    const auto every = [&](auto plain_constant) {
#pragma unroll
        for (int j = 0; j < kN; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) fn(j, i, plain_constant);
    };
    if (plain) every(std::true_type{});
    else every(std::false_type{});
}

// Writes one row (half 0: row g of the warp's 16, half 1: row g + 8) of a 16 x kD accumulator held as
// C fragments, times `factor`, into `row`, up to head_dim.
template <int kSteps>
__device__ __forceinline__ void store_fragment_row(float* row, const float (&acc)[kSteps][4], int half, int t,
                                                   int head_dim, float factor) {
#pragma unroll
    for (int n = 0; n < kSteps; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e)
            if (8 * n + 2 * t + e < head_dim) row[8 * n + 2 * t + e] = acc[n][2 * half + e] * factor;
}

// Row r's log-sum-exp (in log2 units) and delta for the backward; zeros for a row out of range.
__device__ __forceinline__ void backward_row_terms(const AttentionParams<float>& p, int r, float& log2_lse, float& delta) {
    const int64_t row_index = static_cast<int64_t>(blockIdx.y) * p.target + r;
    log2_lse = r < p.target ? p.lse[row_index] * kLog2e : 0.0f;
    delta = r < p.target ? p.delta[row_index] : 0.0f;
}

template <int kD>
constexpr int tensor_forward_shared_floats() {
    return (kTensorRows + 2 * kTile) * (kD + kPad);
}

// Forward: per key tile, S = Q K^T (16 x 64 per warp), the online softmax on the C fragments (each
// thread holds two rows, g and g + 8, whose maxima and sums the four lanes of a group share), then
// O += P V with P straight from the C fragments.
template <int kD, bool kPlain>
__global__ void __launch_bounds__(kTensorThreads) attention_forward_tensor_kernel(AttentionParams<float> p) {
    constexpr int ld = kD + kPad, kSteps = kD / 8, kKeySteps = kTile / 8;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    float* q_s = reinterpret_cast<float*>(shared_bytes);  // [kTensorRows][ld]
    float* k_s = q_s + kTensorRows * ld;                   // [kTile][ld]
    float* v_s = k_s + kTile * ld;                         // [kTile][ld]
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, row_begin = blockIdx.x * kTensorRows;
    const bool vectors = kPlain || p.vectors;  // a constant in the plain build

    float out[kSteps][4] = {};
    float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0, 0};  // in log2 units
    const float log2_scale = p.scale * kLog2e;
    const int key_end = p.causal ? min(p.source, row_begin + kTensorRows) : p.source;
    // Pipeline: the next K tile loads while this tile's softmax and P V run, the next V tile while
    // the next S = Q K^T does. Groups in flight at the top of each tile: [Q,] K(i), V(i).
    stage_tile<kTensorRows, kD>(q_s, ld, p.q, b, h, row_begin, p.target, p.head_dim, vectors);
    stage_tile<kTile, kD>(k_s, ld, p.k, b, h, 0, p.source, p.head_dim, vectors);
    cp_async_commit();
    stage_tile<kTile, kD>(v_s, ld, p.v, b, h, 0, p.source, p.head_dim, vectors);
    cp_async_commit();
    for (int key_begin = 0; key_begin < key_end; key_begin += kTile) {
        const bool more = key_begin + kTile < key_end;
        cp_async_wait<1>();  // K(i) has landed
        __syncthreads();
        float score[kKeySteps][4] = {};
        warp_product_with_rows<kSteps>(score, q_s, warp * 16, k_s, ld, g, t);
        __syncthreads();  // every warp is done with K(i)
        if (more) stage_tile<kTile, kD>(k_s, ld, p.k, b, h, key_begin + kTile, p.source, p.head_dim, vectors);
        cp_async_commit();
        const bool plain = kPlain || plain_tile(p, row_begin, kTensorRows, key_begin, kTile);
        for_each_score<kKeySteps>(plain, [&](int j, int i, auto plain_constant) {
            const int r = row_begin + warp * 16 + g + 8 * (i / 2), c = key_begin + 8 * j + 2 * t + i % 2;
            score[j][i] = log2_score(p, plain_constant, log2_scale, b, h, r, c, score[j][i]);
        });
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < kKeySteps; ++j) tile_max = fmaxf(tile_max, fmaxf(score[j][2 * half], score[j][2 * half + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            const float new_max = fmaxf(running_max[half], tile_max);
            // A row masked so far keeps max -inf: its probabilities are 0 and nothing needs rescaling.
            const float shift = isinf(new_max) ? 0.0f : new_max;
            const float correction = exp2f(running_max[half] - shift);
            float tile_sum = 0;
#pragma unroll
            for (int j = 0; j < kKeySteps; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& value = score[j][2 * half + e];
                    value = exp2f(value - shift);
                    tile_sum += value;
                }
            tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
            tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 2);
            running_sum[half] = running_sum[half] * correction + tile_sum;
            running_max[half] = new_max;
#pragma unroll
            for (int n = 0; n < kSteps; ++n) out[n][2 * half] *= correction, out[n][2 * half + 1] *= correction;
        }
        cp_async_wait<1>();  // V(i) has landed (K(i + 1) may still be in flight)
        __syncthreads();
        warp_product_of_accumulators(out, score, v_s, ld, g, t);
        __syncthreads();  // every warp is done with V(i)
        if (more) stage_tile<kTile, kD>(v_s, ld, p.v, b, h, key_begin + kTile, p.source, p.head_dim, vectors);
        cp_async_commit();
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int r = row_begin + warp * 16 + g + 8 * half;
        if (r >= p.target) continue;
        // A fully masked row has sum 0: NaN output and -inf log-sum-exp, as softmax of all -inf gives.
        store_fragment_row(p.out.row(b, h, r), out, half, t, p.head_dim, 1.0f / running_sum[half]);
        // The log-sum-exp in natural units, as the CUDA-core kernels keep it.
        if (t == 0)
            p.lse[static_cast<int64_t>(blockIdx.y) * p.target + r] = running_max[half] / kLog2e + logf(running_sum[half]);
    }
}

template <int kD>
constexpr int tensor_query_gradient_shared_floats() {
    return (2 * kTensorRows + 2 * kTile) * (kD + kPad);
}

// dQ for 64 query rows, over every key tile: S = Q K^T and dP = dO V^T,
// dS = P (dP - delta), dQ += dS K.
template <int kD, bool kPlain>
__global__ void __launch_bounds__(kTensorThreads) attention_query_gradient_tensor_kernel(AttentionParams<float> p) {
    constexpr int ld = kD + kPad, kSteps = kD / 8, kKeySteps = kTile / 8;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    float* q_s = reinterpret_cast<float*>(shared_bytes);  // [kTensorRows][ld]
    float* go_s = q_s + kTensorRows * ld;                  // [kTensorRows][ld]
    float* k_s = go_s + kTensorRows * ld;                  // [kTile][ld]
    float* v_s = k_s + kTile * ld;                         // [kTile][ld]
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, row_begin = blockIdx.x * kTensorRows;
    const bool vectors = kPlain || p.vectors;  // a constant in the plain build

    stage_tile<kTensorRows, kD>(q_s, ld, p.q, b, h, row_begin, p.target, p.head_dim, vectors);
    stage_tile<kTensorRows, kD>(go_s, ld, p.grad_out, b, h, row_begin, p.target, p.head_dim, vectors);
    cp_async_commit();
    float grad_q[kSteps][4] = {};
    const float log2_scale = p.scale * kLog2e;
    float log2_lse[2], delta[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) backward_row_terms(p, row_begin + warp * 16 + g + 8 * half, log2_lse[half], delta[half]);
    const int key_end = p.causal ? min(p.source, row_begin + kTensorRows) : p.source;
    for (int key_begin = 0; key_begin < key_end; key_begin += kTile) {
        __syncthreads();  // every warp is done with the previous K and V
        stage_tile<kTile, kD>(k_s, ld, p.k, b, h, key_begin, p.source, p.head_dim, vectors);
        cp_async_commit();
        stage_tile<kTile, kD>(v_s, ld, p.v, b, h, key_begin, p.source, p.head_dim, vectors);
        cp_async_commit();
        cp_async_wait<1>();  // [Q, dO,] K have landed; V may still be in flight
        __syncthreads();
        float score[kKeySteps][4] = {}, grad_score[kKeySteps][4] = {};
        warp_product_with_rows<kSteps>(score, q_s, warp * 16, k_s, ld, g, t);
        cp_async_wait<0>();
        __syncthreads();
        warp_product_with_rows<kSteps>(grad_score, go_s, warp * 16, v_s, ld, g, t);
        const bool plain = kPlain || plain_tile(p, row_begin, kTensorRows, key_begin, kTile);
        for_each_score<kKeySteps>(plain, [&](int j, int i, auto plain_constant) {
            const int half = i / 2, r = row_begin + warp * 16 + g + 8 * half, c = key_begin + 8 * j + 2 * t + i % 2;
            const float probability =
                log2_probability(p, plain_constant, log2_scale, b, h, r, c, score[j][i], log2_lse[half]);
            grad_score[j][i] = probability * (grad_score[j][i] - delta[half]);
        });
        warp_product_of_accumulators(grad_q, grad_score, k_s, ld, g, t);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int r = row_begin + warp * 16 + g + 8 * half;
        if (r < p.target) store_fragment_row(p.grad_q.row(b, h, r), grad_q, half, t, p.head_dim, p.scale);
    }
}

template <int kD>
constexpr int tensor_key_gradient_shared_floats() {
    return (2 * kTile + 2 * kTensorQueryTile) * (kD + kPad) + 2 * kTensorQueryTile;
}

// dK, dV for 64 keys, over every query tile of 32: the transposed products S^T = K Q^T and
// dP^T = V dO^T, then dV += P^T dO and dK += dS^T Q.
template <int kD, bool kPlain>
__global__ void __launch_bounds__(kTensorThreads) attention_key_gradient_tensor_kernel(AttentionParams<float> p) {
    constexpr int ld = kD + kPad, kSteps = kD / 8, kQuerySteps = kTensorQueryTile / 8;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    float* k_s = reinterpret_cast<float*>(shared_bytes);  // [kTile][ld]
    float* v_s = k_s + kTile * ld;                         // [kTile][ld]
    float* q_s = v_s + kTile * ld;                         // [kTensorQueryTile][ld]
    float* go_s = q_s + kTensorQueryTile * ld;             // [kTensorQueryTile][ld]
    float* lse_s = go_s + kTensorQueryTile * ld;           // [kTensorQueryTile], in log2 units
    float* delta_s = lse_s + kTensorQueryTile;             // [kTensorQueryTile]
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads, key_begin = blockIdx.x * kTile;
    const bool vectors = kPlain || p.vectors;  // a constant in the plain build

    stage_tile<kTile, kD>(k_s, ld, p.k, b, h, key_begin, p.source, p.head_dim, vectors);
    stage_tile<kTile, kD>(v_s, ld, p.v, b, h, key_begin, p.source, p.head_dim, vectors);
    cp_async_commit();
    float grad_k[kSteps][4] = {}, grad_v[kSteps][4] = {};
    const float log2_scale = p.scale * kLog2e;
    // Causal: query rows before key_begin see none of these keys.
    const int query_start = p.causal ? key_begin / kTensorQueryTile * kTensorQueryTile : 0;
    for (int query_begin = query_start; query_begin < p.target; query_begin += kTensorQueryTile) {
        __syncthreads();  // every warp is done with the previous Q and dO
        stage_tile<kTensorQueryTile, kD>(q_s, ld, p.q, b, h, query_begin, p.target, p.head_dim, vectors);
        cp_async_commit();
        stage_tile<kTensorQueryTile, kD>(go_s, ld, p.grad_out, b, h, query_begin, p.target, p.head_dim, vectors);
        cp_async_commit();
        if (threadIdx.x < kTensorQueryTile)
            backward_row_terms(p, query_begin + threadIdx.x, lse_s[threadIdx.x], delta_s[threadIdx.x]);
        cp_async_wait<1>();  // [K, V,] Q have landed; dO may still be in flight
        __syncthreads();
        float score[kQuerySteps][4] = {}, grad_score[kQuerySteps][4] = {};
        warp_product_with_rows<kSteps>(score, k_s, warp * 16, q_s, ld, g, t);
        cp_async_wait<0>();
        __syncthreads();
        warp_product_with_rows<kSteps>(grad_score, v_s, warp * 16, go_s, ld, g, t);
        const bool plain = kPlain || plain_tile(p, query_begin, kTensorQueryTile, key_begin, kTile);
        for_each_score<kQuerySteps>(plain, [&](int j, int i, auto plain_constant) {
            const int query = 8 * j + 2 * t + i % 2, r = query_begin + query;
            const int c = key_begin + warp * 16 + g + 8 * (i / 2);
            score[j][i] = log2_probability(p, plain_constant, log2_scale, b, h, r, c, score[j][i], lse_s[query]);
            grad_score[j][i] = score[j][i] * (grad_score[j][i] - delta_s[query]);
        });
        warp_product_of_accumulators(grad_v, score, go_s, ld, g, t);
        warp_product_of_accumulators(grad_k, grad_score, q_s, ld, g, t);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int c = key_begin + warp * 16 + g + 8 * half;
        if (c >= p.source) continue;
        store_fragment_row(p.grad_k.row(b, h, c), grad_k, half, t, p.head_dim, p.scale);
        store_fragment_row(p.grad_v.row(b, h, c), grad_v, half, t, p.head_dim, 1.0f);
    }
}

template <typename T, typename Pointer>
HeadView<Pointer> head_view(const Tensor& t) {
    return {static_cast<Pointer*>(t.raw_data()), t.stride(0), t.stride(1), t.stride(2)};
}

// True when `t`'s rows can be read in 16-byte vectors.
bool vector_rows(const Tensor& t) {
    const int64_t width = 16 / static_cast<int64_t>(dtype_size(t.dtype()));
    return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0 && t.size(3) % width == 0 && t.stride(0) % width == 0 &&
           t.stride(1) % width == 0 && t.stride(2) % width == 0;
}

template <typename T>
AttentionParams<T> make_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                               double scale) {
    AttentionParams<T> p{};
    p.heads = static_cast<int>(q.size(1));
    p.target = static_cast<int>(q.size(2));
    p.source = static_cast<int>(k.size(2));
    p.head_dim = static_cast<int>(q.size(3));
    p.scale = static_cast<T>(scale);
    p.causal = causal;
    p.q = head_view<T, const T>(q);
    p.k = head_view<T, const T>(k);
    p.v = head_view<T, const T>(v);
    p.vectors = vector_rows(q) && vector_rows(k) && vector_rows(v);
    if (mask.defined())
        p.mask = {static_cast<const T*>(mask.raw_data()), mask.stride(0), mask.stride(1), mask.stride(2), mask.stride(3)};
    return p;
}

// Runs launch<kD> for the smallest supported kD >= head_dim: 32, 64 or (float32 only) 128.
template <typename T, typename Launch>
void with_head_tile(int64_t head_dim, const Launch& launch) {
    if (head_dim <= 32) launch.template operator()<32>();
    else if (head_dim <= 64 || sizeof(T) != 4) launch.template operator()<64>();
    else if constexpr (sizeof(T) == 4) launch.template operator()<128>();
}

template <typename Kernel, typename Params>
void launch_attention(Kernel kernel, int shared_elements, size_t element_size, dim3 grid, const char* op,
                      const Params& params, int threads = kAttentionThreads) {
    const size_t bytes = static_cast<size_t>(shared_elements) * element_size;
    allow_shared_memory(kernel, bytes);
    kernel<<<grid, threads, bytes, launch_stream()>>>(params);
    check_launch(op);
}

// One block per kTile (64) rows of one (batch, head).
dim3 attention_grid(const Tensor& q, int64_t rows) {
    return dim3(static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>(q.size(0) * q.size(1)));
}

// True when the tensor-core kernels take these operands: float32, head dim <= 64, asked for, sm_80+.
bool on_tensor_cores(const Tensor& q, bool tensor_cores) {
    return tensor_cores && q.dtype() == DType::f32 && q.size(3) <= 64 && tensor_cores_available();
}

// Runs launch<kD, kPlain> for the tensor-core kernels: kD = 32 or 64, the smaller that holds head_dim;
// kPlain when every tile is plain (no mask, not causal, whole tiles of 64 queries and 64 keys) and every
// operand row takes 16-byte copies. That build has neither the per-element checks nor the fallback
// copies in its loop, which then fits the instruction caches better: ncu showed the general build's
// warps waiting for instructions in 27% of their stalls.
template <typename Launch>
void with_tensor_kernel(const AttentionParams<float>& p, const Launch& launch) {
    const bool plain = !p.mask.data && !p.causal && p.vectors && p.target % kTensorRows == 0 && p.source % kTile == 0;
    const auto with_head_dim = [&]<bool kPlain>() {
        if (p.head_dim <= 32) launch.template operator()<32, kPlain>();
        else launch.template operator()<64, kPlain>();
    };
    if (plain) with_head_dim.template operator()<true>();
    else with_head_dim.template operator()<false>();
}

}  // namespace

int64_t max_fused_attention_head_dim(DType dtype) { return dtype == DType::f64 ? 64 : 128; }

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal, double scale,
                       const Tensor& out, const Tensor& lse, bool tensor_cores) {
    if (q.numel() == 0) return;
    dispatch_floating(q.dtype(), "scaled_dot_product_attention", [&]<typename T>() {
        AttentionParams<T> p = make_params<T>(q, k, v, mask, causal, scale);
        p.out = head_view<T, T>(out);
        p.lse = static_cast<T*>(lse.raw_data());
        if constexpr (std::is_same_v<T, float>) {
            if (on_tensor_cores(q, tensor_cores)) {
                with_tensor_kernel(p, [&]<int kD, bool kPlain>() {
                    launch_attention(attention_forward_tensor_kernel<kD, kPlain>, tensor_forward_shared_floats<kD>(), sizeof(float),
                                     attention_grid(q, p.target), "scaled_dot_product_attention", p, kTensorThreads);
                });
                return;
            }
        }
        with_head_tile<T>(p.head_dim, [&]<int kD>() {
            launch_attention(attention_forward_kernel<T, kD>, forward_shared_elements<kD>(), sizeof(T),
                             attention_grid(q, p.target), "scaled_dot_product_attention", p);
        });
    });
}

// The backward by chunks of heads whose scores fit `workspace_bytes`: per chunk, the scores are
// recomputed with cuBLAS, turned into probabilities and score gradients by two elementwise passes
// (L2-resident at the default budget), and the three gradients come from three more GEMMs.
template <typename T>
void chunked_backward(const AttentionParams<T>& p, const Tensor& grad_out, const Tensor& q, const Tensor& k,
                      const Tensor& v, const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v,
                      int64_t heads_per_chunk) {
    const int64_t heads = q.size(0) * q.size(1), target = p.target, source = p.source, head_dim = p.head_dim;
    auto flat = [&](const Tensor& t, int64_t rows) { return t.contiguous().reshape({heads, rows, head_dim}); };
    const Tensor q_flat = flat(q, target), k_flat = flat(k, source), v_flat = flat(v, source);
    const Tensor grad_out_flat = flat(grad_out, target);
    // The batched products write dense [heads, rows, head_dim] gradients: into the outputs when they
    // are dense, else into scratch copied out at the end.
    auto dense = [](const Tensor& t) { return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.options()); };
    const Tensor grad_q_dense = dense(grad_q), grad_k_dense = dense(grad_k), grad_v_dense = dense(grad_v);
    const Tensor grad_q_flat = grad_q_dense.reshape({heads, target, head_dim});
    const Tensor grad_k_flat = grad_k_dense.reshape({heads, source, head_dim});
    const Tensor grad_v_flat = grad_v_dense.reshape({heads, source, head_dim});
    const Tensor scores = Tensor::empty({heads_per_chunk, target, source}, q.options());
    const Tensor score_grads = Tensor::empty({heads_per_chunk, target, source}, q.options());
    for (int64_t first = 0; first < heads; first += heads_per_chunk) {
        const int64_t count = std::min(heads_per_chunk, heads - first);
        const Tensor qc = q_flat.narrow(0, first, count), kc = k_flat.narrow(0, first, count);
        const Tensor vc = v_flat.narrow(0, first, count), gc = grad_out_flat.narrow(0, first, count);
        const Tensor probabilities = scores.narrow(0, 0, count), grad_scores = score_grads.narrow(0, 0, count);
        const int64_t rows = count * target;
        const dim3 grid = score_rows_grid(rows, source);
        batched_matmul(qc, kc.transpose(1, 2), probabilities);
        chunk_probabilities_kernel<T><<<grid, kThreads, 0, launch_stream()>>>(static_cast<T*>(probabilities.raw_data()), p,
                                                                              first, rows);
        check_launch("scaled_dot_product_attention_backward");
        batched_matmul(probabilities.transpose(1, 2), gc, grad_v_flat.narrow(0, first, count));
        batched_matmul(gc, vc.transpose(1, 2), grad_scores);
        chunk_score_gradient_kernel<T><<<grid, kThreads, 0, launch_stream()>>>(
            static_cast<const T*>(probabilities.raw_data()), static_cast<T*>(grad_scores.raw_data()), p, first, rows);
        check_launch("scaled_dot_product_attention_backward");
        batched_matmul(grad_scores, kc, grad_q_flat.narrow(0, first, count));
        batched_matmul(grad_scores.transpose(1, 2), qc, grad_k_flat.narrow(0, first, count));
    }
    for (const auto& [result, computed] : {std::pair{grad_q, grad_q_dense}, {grad_k, grad_k_dense}, {grad_v, grad_v_dense}})
        if (result.impl() != computed.impl()) Tensor(result).copy_(computed);
}

void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                        bool causal, double scale, const Tensor& out, const Tensor& lse, const Tensor& delta,
                        const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, size_t workspace_bytes,
                        bool tensor_cores) {
    if (q.numel() == 0 && k.numel() == 0) return;
    dispatch_floating(q.dtype(), "scaled_dot_product_attention_backward", [&]<typename T>() {
        AttentionParams<T> p = make_params<T>(q, k, v, mask, causal, scale);
        p.out = head_view<T, T>(out);
        p.grad_out = head_view<T, const T>(grad_out);
        p.vectors = p.vectors && vector_rows(grad_out);
        p.grad_q = head_view<T, T>(grad_q);
        p.grad_k = head_view<T, T>(grad_k);
        p.grad_v = head_view<T, T>(grad_v);
        p.lse = static_cast<T*>(lse.raw_data());
        p.delta = static_cast<const T*>(delta.raw_data());
        const int64_t rows = q.size(0) * q.size(1) * q.size(2);
        if (rows > 0) {
            attention_delta_kernel<T><<<grid_for(rows * 32), kThreads, 0, launch_stream()>>>(p, static_cast<T*>(delta.raw_data()), rows);
            check_launch("scaled_dot_product_attention_backward");
        }
        if constexpr (std::is_same_v<T, float>) {
            if (on_tensor_cores(q, tensor_cores)) {
                with_tensor_kernel(p, [&]<int kD, bool kPlain>() {
                    if (p.source > 0)
                        launch_attention(attention_key_gradient_tensor_kernel<kD, kPlain>, tensor_key_gradient_shared_floats<kD>(),
                                         sizeof(float), attention_grid(q, p.source), "scaled_dot_product_attention_backward",
                                         p, kTensorThreads);
                    if (p.target > 0)
                        launch_attention(attention_query_gradient_tensor_kernel<kD, kPlain>,
                                         tensor_query_gradient_shared_floats<kD>(), sizeof(float),
                                         attention_grid(q, p.target), "scaled_dot_product_attention_backward", p,
                                         kTensorThreads);
                });
                return;
            }
        }
        // Two score buffers per chunk; a head whose scores exceed the budget takes the tiled kernels.
        const int64_t head_bytes = 2 * static_cast<int64_t>(p.target) * p.source * static_cast<int64_t>(sizeof(T));
        const int64_t heads = q.size(0) * q.size(1);
        if (head_bytes > 0 && head_bytes <= static_cast<int64_t>(workspace_bytes)) {
            chunked_backward<T>(p, grad_out, q, k, v, grad_q, grad_k, grad_v,
                                std::min<int64_t>(heads, static_cast<int64_t>(workspace_bytes) / head_bytes));
            return;
        }
        with_head_tile<T>(p.head_dim, [&]<int kD>() {
            if (p.source > 0)
                launch_attention(attention_key_gradient_kernel<T, kD>, key_gradient_shared_elements<T, kD>(), sizeof(T),
                                 attention_grid(q, p.source), "scaled_dot_product_attention_backward", p);
            if (p.target > 0)
                launch_attention(attention_query_gradient_kernel<T, kD>, query_gradient_shared_elements<kD>(), sizeof(T),
                                 attention_grid(q, p.target), "scaled_dot_product_attention_backward", p);
        });
    });
}

}  // namespace kasmina::kernels::cuda
