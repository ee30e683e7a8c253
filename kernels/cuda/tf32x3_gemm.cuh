// The 3xTF32 GEMM main loop, shared by the dense products (matmul_tf32x3.cu) and the implicit-GEMM
// convolutions (convolution_tf32x3.cu). A block computes a kBlockM x 128 tile of C from 32-deep
// slices of A and B that stream through shared memory in stages (cp.async: all but one in flight
// while that one is multiplied; four unless the block shape says otherwise). Each warp owns 64 x 32
// of the tile: per step of 8 along k it loads and splits 4 A fragments and 4 B fragments once and
// runs 3 x 16 MMAs with them. Where the operands come from is the tiles' business: a tile type names
// its shared-memory layout and a Loader that copies one slice of its source into a stage, so a dense
// matrix and an image read as its im2col matrix (never built) feed the same loop. The TF32 parts'
// products and the two cross terms go to separate accumulators (the tensor cores truncate each MMA's
// sum, so one accumulator would take three truncations a step).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3.cuh"

namespace kasmina::kernels::cuda::tf32x3 {

constexpr int kBlockN = 128, kBlockK = 32, kWarpM = 64, kWarpN = 32;

// A block of kBlockM x kBlockN outputs, warps of 64 x 32 (4 x 4 MMA tiles each), the operands
// streamed through kStages slices in shared memory (kStages - 1 in flight while one is multiplied).
// Fewer stages leave more of each multiprocessor's unified L1 / shared memory to the L1 cache, which
// operands gathered 4 bytes at a time (an image read as im2col) hit again and again.
template <int kBlockM_, int kStages_ = 4>
struct BlockShape {
    static constexpr int kBlockM = kBlockM_, kStages = kStages_;
    static_assert(kStages >= 2, "one stage multiplied while the next one lands");
    static constexpr int kWarpsM = kBlockM / kWarpM, kWarpsN = kBlockN / kWarpN;
    static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
    static constexpr int kFragmentsM = kWarpM / 16, kFragmentsN = kWarpN / 8;
};

// One stage of an operand in shared memory: kFree entries of its free dimension (m for A, n for B)
// by kBlockK of k, with k contiguous or the free dimension contiguous. The row padding makes the
// fragment loads conflict-free: lanes read (free g, k t) for g < 8, t < 4, which land in banks
// 4g + t (k contiguous, rows of 36) or 8t + g (free dimension contiguous, rows of kFree + 8).
template <bool kKContiguous, int kFree>
struct TileLayout {
    static constexpr int kOuter = kKContiguous ? kFree : kBlockK;
    static constexpr int kInner = kKContiguous ? kBlockK : kFree;
    static constexpr int kLd = kInner + (kKContiguous ? 4 : 8);
    static constexpr int kFloats = kOuter * kLd;

    __device__ static float at(const float* tile, int free, int k) {
        return kKContiguous ? tile[free * kLd + k] : tile[k * kLd + free];
    }
};

// A dense operand: entry (free, k) of matrix `batch` at data[batch * batch_stride + free * outer_stride
// + k] (k contiguous) or data[batch * batch_stride + k * outer_stride + free], staged 16 bytes at a
// time (the unit-stride extent is a multiple of 4, so a chunk is wholly in or out).
template <bool kKContiguous, int kFree, int kThreads>
struct DenseTile : TileLayout<kKContiguous, kFree> {
    using Layout = TileLayout<kKContiguous, kFree>;
    static constexpr int kChunks = Layout::kOuter * Layout::kInner / 4;
    static_assert(kChunks % kThreads == 0, "every thread copies the same number of chunks");

    struct Source {
        const float* data;
        int64_t outer_stride, batch_stride;
    };

    struct Loader {
        const float* matrix;
        int64_t outer_stride;
        int free0, free_count;

        __device__ Loader(const Source& source, int batch, int first_free, int free_extent)
            : matrix(source.data + batch * source.batch_stride), outer_stride(source.outer_stride),
              free0(first_free), free_count(free_extent) {}

        // Entries [free0, free0 + kFree) x [k0, k0 + kBlockK), zero past free_count and k_end.
        __device__ void stage(float* tile, int k0, int k_end) const {
            const int outer0 = kKContiguous ? free0 : k0, outer_end = kKContiguous ? free_count : k_end;
            const int inner0 = kKContiguous ? k0 : free0, inner_end = kKContiguous ? k_end : free_count;
#pragma unroll
            for (int i = 0; i < kChunks / kThreads; ++i) {
                const int index = threadIdx.x + i * kThreads;
                const int outer = index / (Layout::kInner / 4), inner = index % (Layout::kInner / 4) * 4;
                const bool inside = outer0 + outer < outer_end && inner0 + inner < inner_end;
                const float* source = inside ? matrix + (outer0 + outer) * outer_stride + inner0 + inner : matrix;
                cp_async_16(tile + outer * Layout::kLd + inner, source, inside);
            }
        }
    };
};

// A tile type T provides: T::kFloats and T::at (its layout, e.g. TileLayout), T::Source (the kernel
// argument it reads) and T::Loader, built once per block as Loader(source, batch, first free index,
// free extent) and asked for each slice by stage(tile, k0, k_end): copy entries [first, first + free
// tile) x [k0, k0 + kBlockK) with cp.async, zero past the free extent and k_end.

// Where C goes. Column j of C belongs to group j / column_group (an image, for a convolution whose
// columns run over images and pixels): entry (i, j) of the output of blockIdx.z is at
// c[blockIdx.z * c_stride + (j / column_group) * group_stride + i * ldc + j % column_group].
// A dense product has one group (column_group = n).
struct GemmArgs {
    const float* bias;  // null, [n] (bias[j] on column j) or [m] (bias[i] on row i: bias_per_row); never with split k
    bool bias_per_row;
    float* c;
    int64_t ldc, c_stride, group_stride;
    int column_group;
    int m, n, k;
    int splits, k_per_split;  // blockIdx.z = batch * splits + split; split s takes k in [s, s + 1) * k_per_split
    bool pairs;               // output pairs may be stored as float2 (ldc, strides, column_group and c even-aligned)
};

// Where entry (row, col) of this block's output goes.
__device__ __forceinline__ float* output_at(const GemmArgs& p, float* c_block, int row, int col) {
    const int group = col / p.column_group;
    return c_block + group * p.group_stride + row * p.ldc + (col - group * p.column_group);
}

// Stores entries (row, col) and (row, col + 1); `column` is output_at(p, c_block, row, col) less
// row * ldc (col's group is worked out once per column by the caller).
__device__ __forceinline__ void store_pair(const GemmArgs& p, float* c_block, float* column, int row, int col, float x,
                                           float y) {
    if (row >= p.m || col >= p.n) return;
    float* const out = column + row * p.ldc;
    if (p.pairs && col + 1 < p.n) {
        *reinterpret_cast<float2*>(out) = make_float2(x, y);
        return;
    }
    out[0] = x;
    if (col + 1 < p.n) *output_at(p, c_block, row, col + 1) = y;  // possibly the next group's first column
}

// An output from its two accumulators. An infinite operand's remainder is a NaN (infinity minus
// infinity), so the cross terms are NaN wherever the TF32 parts' products already hold the infinity
// float32 gives; that infinity is the result (and a NaN there stays a NaN).
__device__ __forceinline__ float total(float big, float cross) { return isinf(big) ? big : big + cross; }

// C (m x n) = A (m x k) B (k x n) (+ bias) for one kBlockM x kBlockN tile per block.
template <class Shape, class ATile, class BTile>
__global__ void __launch_bounds__(Shape::kThreads, 256 / Shape::kThreads)
    gemm_kernel(GemmArgs p, typename ATile::Source a_source, typename BTile::Source b_source) {
    static_assert(Shape::kThreads <= 256, "at most one 256-thread block a multiprocessor is planned for");
    extern __shared__ float4 shared_memory[];
    float* const a_tiles = reinterpret_cast<float*>(shared_memory);
    float* const b_tiles = a_tiles + Shape::kStages * ATile::kFloats;

    const int m0 = blockIdx.y * Shape::kBlockM, n0 = blockIdx.x * kBlockN;
    const int batch = blockIdx.z / p.splits, split = blockIdx.z % p.splits;
    const int k_begin = split * p.k_per_split, k_end = min(p.k, k_begin + p.k_per_split);
    const typename ATile::Loader a_loader(a_source, batch, m0, p.m);
    const typename BTile::Loader b_loader(b_source, batch, n0, p.n);

    const int slices = (k_end - k_begin + kBlockK - 1) / kBlockK;
    auto stage = [&](int slice) {
        const int slot = slice % Shape::kStages, k0 = k_begin + slice * kBlockK;
        a_loader.stage(a_tiles + slot * ATile::kFloats, k0, k_end);
        b_loader.stage(b_tiles + slot * BTile::kFloats, k0, k_end);
    };
#pragma unroll
    for (int s = 0; s < Shape::kStages - 1; ++s) {
        if (s < slices) stage(s);
        cp_async_commit();  // empty groups keep the count the wait below relies on
    }

    constexpr int kFragmentsM = Shape::kFragmentsM, kFragmentsN = Shape::kFragmentsN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int warp_m = warp / Shape::kWarpsN * kWarpM, warp_n = warp % Shape::kWarpsN * kWarpN;
    // The big x big products go to acc, the two cross terms to a second accumulator added at the end:
    // the tensor cores truncate each MMA's sum to the accumulator's precision, so acc sees one
    // truncation per step of 8 instead of three (measured: a third of the error against float64).
    float acc[kFragmentsM][kFragmentsN][4] = {}, cross[kFragmentsM][kFragmentsN][4] = {};

    for (int slice = 0; slice < slices; ++slice) {
        cp_async_wait<Shape::kStages - 2>();  // this slice has landed
        __syncthreads();               // ... for every thread, and every thread is done with slice - 1
        if (slice + Shape::kStages - 1 < slices) stage(slice + Shape::kStages - 1);  // into slice - 1's slot
        cp_async_commit();
        const float* a_tile = a_tiles + slice % Shape::kStages * ATile::kFloats;
        const float* b_tile = b_tiles + slice % Shape::kStages * BTile::kFloats;
#pragma unroll
        for (int step = 0; step < kBlockK / 8; ++step) {
            const int k = 8 * step + t;
            SplitB fb[kFragmentsN];
#pragma unroll
            for (int j = 0; j < kFragmentsN; ++j) {
                const int col = warp_n + 8 * j + g;
                fb[j] = split_b(BTile::at(b_tile, col, k), BTile::at(b_tile, col, k + 4));
            }
#pragma unroll
            for (int i = 0; i < kFragmentsM; ++i) {
                const int row = warp_m + 16 * i + g;
                const SplitA fa = split_a(ATile::at(a_tile, row, k), ATile::at(a_tile, row + 8, k),
                                          ATile::at(a_tile, row, k + 4), ATile::at(a_tile, row + 8, k + 4));
#pragma unroll
                for (int j = 0; j < kFragmentsN; ++j) mma_tf32(cross[i][j], fa.small, fb[j].big);
#pragma unroll
                for (int j = 0; j < kFragmentsN; ++j) mma_tf32(cross[i][j], fa.big, fb[j].small);
#pragma unroll
                for (int j = 0; j < kFragmentsN; ++j) mma_tf32(acc[i][j], fa.big, fb[j].big);
            }
        }
    }
    cp_async_wait<0>();

    float* const c_block = p.c + blockIdx.z * p.c_stride;
    const bool row_bias = p.bias && p.bias_per_row, column_bias = p.bias && !p.bias_per_row;
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j) {
        const int col = n0 + warp_n + 8 * j + 2 * t;
        float* const column = output_at(p, c_block, 0, col);
        const float bias0 = column_bias && col < p.n ? p.bias[col] : 0.0f;
        const float bias1 = column_bias && col + 1 < p.n ? p.bias[col + 1] : 0.0f;
#pragma unroll
        for (int i = 0; i < kFragmentsM; ++i) {
            const int row = m0 + warp_m + 16 * i + g;
            const float top = row_bias && row < p.m ? p.bias[row] : 0.0f;
            const float bottom = row_bias && row + 8 < p.m ? p.bias[row + 8] : 0.0f;
            const float (&big)[4] = acc[i][j];
            const float (&rest)[4] = cross[i][j];
            store_pair(p, c_block, column, row, col, total(big[0], rest[0]) + bias0 + top,
                       total(big[1], rest[1]) + bias1 + top);
            store_pair(p, c_block, column, row + 8, col, total(big[2], rest[2]) + bias0 + bottom,
                       total(big[3], rest[3]) + bias1 + bottom);
        }
    }
}

// c[batch][r][col] = sum over s of partial[batch][s][r][col] (+ bias), s in order. Blocks walk rows
// (batch * m of them, blockIdx.y) and packs of kPack columns (blockIdx.x): one row division per pack.
// kPack 4 needs n, ldc and c_batch_stride multiples of 4 and c 16-byte aligned.
template <int kPack>
__global__ void sum_splits_kernel(const float* partial, int splits, int64_t m, int64_t n, int64_t batch,
                                  const float* bias, bool bias_per_row, float* c, int64_t ldc, int64_t c_batch_stride) {
    const int64_t plane = m * n, packs = n / kPack;
    for (int64_t row = blockIdx.y; row < batch * m; row += gridDim.y) {
        const int64_t b = row / m, r = row - b * m;
        const float* first = partial + b * splits * plane + r * n;
        float* out = c + b * c_batch_stride + r * ldc;
        const float row_bias = bias && bias_per_row ? bias[r] : 0.0f;
        for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
             p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
            const int64_t col = p * kPack;
            Pack<float, kPack> sum;
#pragma unroll
            for (int e = 0; e < kPack; ++e) sum.v[e] = bias && !bias_per_row ? bias[col + e] : row_bias;
            for (int s = 0; s < splits; ++s) {
                const Pack<float, kPack> part = load_pack<float, kPack>(first + s * plane, col);
#pragma unroll
                for (int e = 0; e < kPack; ++e) sum.v[e] += part.v[e];
            }
            if constexpr (kPack == 4)
                __stcg(reinterpret_cast<float4*>(out + col), make_float4(sum.v[0], sum.v[1], sum.v[2], sum.v[3]));
            else
                out[col] = sum.v[0];
        }
    }
}

// Where a product goes: entry (i, j) of matrix b at c[b * batch_stride + (j / column_group) *
// group_stride + i * ldc + j % column_group] (a dense matrix: column_group = n, group_stride = 0),
// plus bias[j], or bias[i] when bias_per_row (when bias is not null).
struct GemmOutput {
    float* c;
    int64_t ldc, batch_stride, group_stride;
    int64_t column_group;
    const float* bias;
    bool bias_per_row;
};

constexpr int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// The least k a split of k among blocks gets: below this the partial sums cost more than they gain.
constexpr int64_t kMinSplitDepth = 512;

// How many parts k is split into when `tiles` output tiles alone leave multiprocessors idle (one
// block of 256 threads fits on each at a time): the count whose blocks fill the last wave best (the
// fewest on a tie), each part at least min_depth deep. Splits only outputs of one group.
int64_t k_splits(int64_t tiles, int64_t k, int64_t blocks_per_processor, int64_t min_depth = kMinSplitDepth);

// The largest grid.y (m tiles) and grid.z (batches x splits) a launch takes.
constexpr int64_t kMaxGridYZ = 65535;

// Queues c = a b (+ bias) for `batch` products of m x n from depth k on the current stream:
// gemm_kernel<Shape, ATile, BTile> over the output tiles, k split among blocks (summed by a second
// kernel in a fixed order) when the tiles leave the device idle. The caller checks that the sizes
// fit (m, n, k below INT_MAX / 2, the grid within kMaxGridYZ).
template <class Shape, class ATile, class BTile>
void gemm(const typename ATile::Source& a, const typename BTile::Source& b, const GemmOutput& out, int64_t m, int64_t n,
          int64_t k, int64_t batch, int64_t min_split_depth = kMinSplitDepth) {
    const int64_t tiles = ceil_div(m, Shape::kBlockM) * ceil_div(n, kBlockN) * batch;
    const int64_t splits = out.column_group == n ? k_splits(tiles, k, 256 / Shape::kThreads, min_split_depth) : 1;
    const int64_t k_per_split = ceil_div(ceil_div(k, splits), kBlockK) * kBlockK;
    const int64_t used_splits = ceil_div(k, k_per_split);  // rounding up may leave the last part empty
    Tensor partial;
    GemmArgs args{out.bias, out.bias_per_row, out.c, out.ldc, out.batch_stride, out.group_stride,
                  static_cast<int>(out.column_group), static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                  static_cast<int>(used_splits), static_cast<int>(k_per_split), false};
    if (used_splits > 1) {
        int device = 0;
        KASMINA_CUDA_CHECK(cudaGetDevice(&device));
        partial = Tensor::empty({batch * used_splits, m, n}, {.dtype = DType::f32, .device = Device::cuda(device)});
        args.bias = nullptr;
        args.c = static_cast<float*>(partial.raw_data());
        args.ldc = n;
        args.c_stride = m * n;
        args.column_group = static_cast<int>(n);
        args.group_stride = 0;
    }
    args.pairs = args.ldc % 2 == 0 && (args.column_group == n || (args.column_group % 2 == 0 && args.group_stride % 2 == 0)) &&
                 (batch * used_splits == 1 || args.c_stride % 2 == 0) && aligned_to(args.c, 8);

    constexpr size_t bytes = Shape::kStages * (ATile::kFloats + BTile::kFloats) * sizeof(float);
    const auto kernel = gemm_kernel<Shape, ATile, BTile>;
    allow_shared_memory(kernel, bytes);
    const dim3 grid(static_cast<unsigned>(ceil_div(n, kBlockN)), static_cast<unsigned>(ceil_div(m, Shape::kBlockM)),
                    static_cast<unsigned>(batch * used_splits));
    kernel<<<grid, Shape::kThreads, bytes, launch_stream()>>>(args, a, b);
    check_launch("matmul");
    if (used_splits > 1) {
        // Packs of four columns where the output takes them: a thread per column spent more on its
        // row's index arithmetic than on its two loads (ncu, H100: 18 us for the linear workload's
        // dW, 8 MB read, 14% of DRAM's rate).
        const bool packed = n % 4 == 0 && out.ldc % 4 == 0 && (batch == 1 || out.batch_stride % 4 == 0) &&
                            aligned_to(out.c, 16);
        const int64_t packs = packed ? n / 4 : n;
        const int threads = packs <= 128 ? 128 : kThreads;
        const dim3 sum_grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(packs, threads), 65535)),
                            static_cast<unsigned>(std::min<int64_t>(batch * m, 65535)));
        const auto sum_kernel = packed ? sum_splits_kernel<4> : sum_splits_kernel<1>;
        sum_kernel<<<sum_grid, threads, 0, launch_stream()>>>(static_cast<const float*>(partial.raw_data()),
                                                              static_cast<int>(used_splits), m, n, batch, out.bias,
                                                              out.bias_per_row, out.c, out.ldc, out.batch_stride);
        check_launch("matmul");
    }
}

}  // namespace kasmina::kernels::cuda::tf32x3
