// The 3xTF32 GEMM (contract in matmul_tf32x3.h). Each block computes a 128 x 128 tile of C from
// 32-deep slices of A and B that stream through shared memory in four stages (cp.async, so three
// slices are in flight while the fourth is multiplied). Eight warps, 2 x 4, own 64 x 32 each: per
// step of 8 along k a warp loads and splits 4 A fragments and 4 B fragments once and runs 3 x 16
// MMAs with them. Either operand may be stored with k or its other dimension contiguous, so
// x W^T, dY W and dY^T X all read their operands in place. When the output tiles cannot fill the
// device, k is split among blocks that write partial products to a workspace, summed (with the
// bias) by a second kernel in a fixed order: the results do not depend on timing. The TF32 parts'
// products and the two cross terms go to separate accumulators (the tensor cores truncate each MMA's
// sum, so one accumulator would take three truncations a step).
#include "kernels/cuda/matmul_tf32x3.h"

#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3.cuh"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kBlockM = 128, kBlockN = 128, kBlockK = 32, kStages = 4;
constexpr int kWarpsM = 2, kWarpsN = 4, kGemmThreads = 32 * kWarpsM * kWarpsN;
constexpr int kWarpM = kBlockM / kWarpsM, kWarpN = kBlockN / kWarpsN;  // 64 x 32
constexpr int kFragmentsM = kWarpM / 16, kFragmentsN = kWarpN / 8;     // 4 x 4 MMA tiles a warp
static_assert(kBlockM == kBlockN, "the operand tiles share one shape");

// One stage of an operand in shared memory: kBlockM (or kBlockN) entries of its free dimension
// (m for A, n for B) by kBlockK of k, stored with the dimension that is contiguous in global memory
// contiguous here too (16-byte copies). The row padding makes the fragment loads conflict-free:
// lanes read (free g, k t) for g < 8, t < 4, which land in banks 4g + t (k contiguous, rows of 36)
// or 8t + g (free dimension contiguous, rows of 136).
template <bool kKContiguous>
struct OperandTile {
    static constexpr int kOuter = kKContiguous ? kBlockM : kBlockK;
    static constexpr int kInner = kKContiguous ? kBlockK : kBlockM;
    static constexpr int kLd = kInner + (kKContiguous ? 4 : 8);
    static constexpr int kFloats = kOuter * kLd;
    static constexpr int kChunks = kOuter * kInner / 4;
    static_assert(kChunks % kGemmThreads == 0, "every thread copies the same number of chunks");

    __device__ static float at(const float* tile, int free, int k) {
        return kKContiguous ? tile[free * kLd + k] : tile[k * kLd + free];
    }

    // Copies entries [free0, free0 + 128) x [k0, k0 + 32) of an operand whose entry (free, k) is at
    // matrix[free * free_stride + k] (k contiguous) or matrix[k * k_stride + free]; zero past
    // free_count and k_end. The unit-stride extent is a multiple of 4, so a chunk is wholly in or out.
    __device__ static void stage(float* tile, const float* matrix, int64_t outer_stride, int free0, int free_count,
                                 int k0, int k_end) {
        const int outer0 = kKContiguous ? free0 : k0, outer_end = kKContiguous ? free_count : k_end;
        const int inner0 = kKContiguous ? k0 : free0, inner_end = kKContiguous ? k_end : free_count;
#pragma unroll
        for (int i = 0; i < kChunks / kGemmThreads; ++i) {
            const int index = threadIdx.x + i * kGemmThreads;
            const int outer = index / (kInner / 4), inner = index % (kInner / 4) * 4;
            const bool inside = outer0 + outer < outer_end && inner0 + inner < inner_end;
            const float* source = inside ? matrix + (outer0 + outer) * outer_stride + inner0 + inner : matrix;
            cp_async_16(tile + outer * kLd + inner, source, inside);
        }
    }
};

struct GemmArgs {
    GemmOperand a, b;
    const float* bias;  // null, or [n] added to every row (never with split k)
    float* c;
    int64_t ldc, c_stride;  // c_stride: between the outputs of consecutive blockIdx.z
    int m, n, k;
    int splits, k_per_split;  // blockIdx.z = batch * splits + split; split s takes k in [s, s + 1) * k_per_split
    bool pairs;               // output pairs may be stored as float2 (ldc, c_stride and c even-aligned)
};

__device__ __forceinline__ void store_pair(const GemmArgs& p, float* c, int row, int col, float x, float y) {
    if (row >= p.m) return;
    float* out = c + row * p.ldc + col;
    if (p.pairs && col + 1 < p.n) {
        *reinterpret_cast<float2*>(out) = make_float2(x, y);
        return;
    }
    if (col < p.n) out[0] = x;
    if (col + 1 < p.n) out[1] = y;
}

// An output from its two accumulators. An infinite operand's remainder is a NaN (infinity minus
// infinity), so the cross terms are NaN wherever the TF32 parts' products already hold the infinity
// float32 gives; that infinity is the result (and a NaN there stays a NaN).
__device__ __forceinline__ float total(float big, float cross) { return isinf(big) ? big : big + cross; }

template <bool kAKContiguous, bool kBKContiguous>
__global__ void __launch_bounds__(kGemmThreads, 1) tf32x3_gemm_kernel(GemmArgs p) {
    using ATile = OperandTile<kAKContiguous>;
    using BTile = OperandTile<kBKContiguous>;
    extern __shared__ float4 shared_memory[];
    float* const a_tiles = reinterpret_cast<float*>(shared_memory);
    float* const b_tiles = a_tiles + kStages * ATile::kFloats;

    const int m0 = blockIdx.y * kBlockM, n0 = blockIdx.x * kBlockN;
    const int batch = blockIdx.z / p.splits, split = blockIdx.z % p.splits;
    const int k_begin = split * p.k_per_split, k_end = min(p.k, k_begin + p.k_per_split);
    const float* a = p.a.data + batch * p.a.batch_stride;
    const float* b = p.b.data + batch * p.b.batch_stride;
    // A (m, k): rows of m apart by row_stride when k is contiguous, else rows of k by col_stride.
    const int64_t a_outer_stride = kAKContiguous ? p.a.row_stride : p.a.col_stride;
    // B (k, n): rows of n apart by col_stride when k is contiguous, else rows of k by row_stride.
    const int64_t b_outer_stride = kBKContiguous ? p.b.col_stride : p.b.row_stride;

    const int slices = (k_end - k_begin + kBlockK - 1) / kBlockK;
    auto stage = [&](int slice) {
        const int slot = slice % kStages, k0 = k_begin + slice * kBlockK;
        ATile::stage(a_tiles + slot * ATile::kFloats, a, a_outer_stride, m0, p.m, k0, k_end);
        BTile::stage(b_tiles + slot * BTile::kFloats, b, b_outer_stride, n0, p.n, k0, k_end);
    };
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < slices) stage(s);
        cp_async_commit();  // empty groups keep the count the wait below relies on
    }

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int warp_m = warp / kWarpsN * kWarpM, warp_n = warp % kWarpsN * kWarpN;
    // The big x big products go to acc, the two cross terms to a second accumulator added at the end:
    // the tensor cores truncate each MMA's sum to the accumulator's precision, so acc sees one
    // truncation per step of 8 instead of three (measured: a third of the error against float64).
    float acc[kFragmentsM][kFragmentsN][4] = {}, cross[kFragmentsM][kFragmentsN][4] = {};

    for (int slice = 0; slice < slices; ++slice) {
        cp_async_wait<kStages - 2>();  // this slice has landed
        __syncthreads();               // ... for every thread, and every thread is done with slice - 1
        if (slice + kStages - 1 < slices) stage(slice + kStages - 1);  // into slice - 1's slot
        cp_async_commit();
        const float* a_tile = a_tiles + slice % kStages * ATile::kFloats;
        const float* b_tile = b_tiles + slice % kStages * BTile::kFloats;
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

    float* c = p.c + blockIdx.z * p.c_stride;
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j) {
        const int col = n0 + warp_n + 8 * j + 2 * t;
        const float bias0 = p.bias && col < p.n ? p.bias[col] : 0.0f;
        const float bias1 = p.bias && col + 1 < p.n ? p.bias[col + 1] : 0.0f;
#pragma unroll
        for (int i = 0; i < kFragmentsM; ++i) {
            const int row = m0 + warp_m + 16 * i + g;
            const float (&big)[4] = acc[i][j];
            const float (&rest)[4] = cross[i][j];
            store_pair(p, c, row, col, total(big[0], rest[0]) + bias0, total(big[1], rest[1]) + bias1);
            store_pair(p, c, row + 8, col, total(big[2], rest[2]) + bias0, total(big[3], rest[3]) + bias1);
        }
    }
}

// c[batch][r][col] = sum over s of partial[batch][s][r][col] (+ bias[col]), s in order. Blocks walk
// rows (batch * m of them, blockIdx.y) and columns (blockIdx.x): no division per element.
__global__ void sum_splits_kernel(const float* partial, int splits, int64_t m, int64_t n, int64_t batch,
                                  const float* bias, float* c, int64_t ldc, int64_t c_batch_stride) {
    const int64_t plane = m * n;
    for (int64_t row = blockIdx.y; row < batch * m; row += gridDim.y) {
        const int64_t b = row / m, r = row - b * m;
        const float* first = partial + b * splits * plane + r * n;
        float* out = c + b * c_batch_stride + r * ldc;
        for (int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; col < n;
             col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
            float sum = bias ? bias[col] : 0.0f;
            for (int s = 0; s < splits; ++s) sum += first[s * plane + col];
            out[col] = sum;
        }
    }
}

constexpr int64_t kMinSplitDepth = 512;  // k per split: below this the partial sums cost more than they gain

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How many parts k is split into when the output tiles alone leave multiprocessors idle (one block
// fits on each at a time): the count whose blocks fill the last wave best (the fewest on a tie),
// each part at least kMinSplitDepth deep.
int64_t k_splits(int64_t m, int64_t n, int64_t k, int64_t batch) {
    const int64_t tiles = ceil_div(m, kBlockM) * ceil_div(n, kBlockN) * batch;
    const int64_t processors = current_device_attribute<cudaDevAttrMultiProcessorCount>();
    if (tiles >= processors) return 1;
    const int64_t most = std::clamp<int64_t>(k / kMinSplitDepth, 1, 4 * ceil_div(processors, tiles));
    int64_t best = 1;
    double best_fill = 0;
    for (int64_t splits = 1; splits <= most; ++splits) {
        const int64_t blocks = tiles * splits;
        const double fill = static_cast<double>(blocks) / static_cast<double>(ceil_div(blocks, processors) * processors);
        if (fill > best_fill + 0.02) best = splits, best_fill = fill;
    }
    return best;
}

bool k_contiguous_a(const GemmOperand& a) { return a.col_stride == 1; }
bool k_contiguous_b(const GemmOperand& b) { return b.row_stride == 1; }

// The operand's layout can be staged 16 bytes at a time: unit stride along one dimension whose extent
// is a multiple of 4, the other strides multiples of 4, the data 16-byte aligned.
bool stageable(const GemmOperand& x, int64_t rows, int64_t cols, int64_t batch) {
    const bool row_major = x.col_stride == 1, column_major = !row_major && x.row_stride == 1;
    if (!row_major && !column_major) return false;
    const int64_t unit_extent = row_major ? cols : rows, other_stride = row_major ? x.row_stride : x.col_stride;
    return unit_extent % 4 == 0 && other_stride % 4 == 0 && (batch == 1 || x.batch_stride % 4 == 0) &&
           aligned_to(x.data, 16);
}

// Below this many multiply-adds a product is launch-bound and cuBLAS is as fast.
constexpr int64_t kMinMultiplyAdds = int64_t{1} << 27;

}  // namespace

bool tf32x3_gemm_applies(const GemmOperand& a, const GemmOperand& b, int64_t m, int64_t n, int64_t k, int64_t batch) {
    if (m <= 0 || n <= 0 || k <= 0 || batch <= 0) return false;
    if (m >= INT_MAX / 2 || n >= INT_MAX / 2 || k >= INT_MAX / 2) return false;
    if (ceil_div(m, kBlockM) > 65535 || batch > 65535) return false;
    if (static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(batch) <
        static_cast<double>(kMinMultiplyAdds))
        return false;  // in double: the int64 product could overflow
    if (!stageable(a, m, k, batch) || !stageable(b, k, n, batch)) return false;
    // Split k only when the split fits the grid (blockIdx.z up to 65535) and covers the whole k.
    if (batch * k_splits(m, n, k, batch) > 65535) return false;
    return tensor_cores_available();
}

void tf32x3_gemm(const GemmOperand& a, const GemmOperand& b, const float* bias, float* c, int64_t ldc,
                 int64_t c_batch_stride, int64_t m, int64_t n, int64_t k, int64_t batch) {
    const int64_t splits = k_splits(m, n, k, batch);
    const int64_t k_per_split = ceil_div(ceil_div(k, splits), kBlockK) * kBlockK;
    const int64_t used_splits = ceil_div(k, k_per_split);  // rounding up may leave the last part empty
    Tensor partial;
    GemmArgs args{a, b, bias, c, ldc, c_batch_stride, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                  static_cast<int>(used_splits), static_cast<int>(k_per_split), false};
    if (used_splits > 1) {
        int device = 0;
        KASMINA_CUDA_CHECK(cudaGetDevice(&device));
        partial = Tensor::empty({batch * used_splits, m, n}, {.dtype = DType::f32, .device = Device::cuda(device)});
        args.bias = nullptr;
        args.c = static_cast<float*>(partial.raw_data());
        args.ldc = n;
        args.c_stride = m * n;
    }
    args.pairs = args.ldc % 2 == 0 && (used_splits > 1 || batch == 1 || args.c_stride % 2 == 0) && aligned_to(args.c, 8);

    const dim3 grid(static_cast<unsigned>(ceil_div(n, kBlockN)), static_cast<unsigned>(ceil_div(m, kBlockM)),
                    static_cast<unsigned>(batch * used_splits));
    auto launch = [&]<bool kAK, bool kBK>() {
        constexpr size_t bytes = kStages * (OperandTile<kAK>::kFloats + OperandTile<kBK>::kFloats) * sizeof(float);
        const auto kernel = tf32x3_gemm_kernel<kAK, kBK>;
        allow_shared_memory(kernel, bytes);
        kernel<<<grid, kGemmThreads, bytes, launch_stream()>>>(args);
    };
    const bool a_k = k_contiguous_a(a), b_k = k_contiguous_b(b);
    if (a_k && b_k) launch.operator()<true, true>();
    else if (a_k) launch.operator()<true, false>();
    else if (b_k) launch.operator()<false, true>();
    else launch.operator()<false, false>();
    check_launch("matmul");
    if (used_splits > 1) {
        const int threads = n <= 128 ? 128 : kThreads;
        const dim3 sum_grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(n, threads), 65535)),
                            static_cast<unsigned>(std::min<int64_t>(batch * m, 65535)));
        sum_splits_kernel<<<sum_grid, threads, 0, launch_stream()>>>(
            static_cast<const float*>(partial.raw_data()), static_cast<int>(used_splits), m, n, batch, bias, c, ldc,
            c_batch_stride);
        check_launch("matmul");
    }
}

}  // namespace kasmina::kernels::cuda
