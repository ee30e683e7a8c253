// Float32 products on tensor cores at float32 accuracy ("3xTF32"): each operand x is split into
// big = x rounded to TF32 (11 significant bits) and small = x - big (taken as TF32), and
// a*b = a_big*b_big + a_big*b_small + a_small*b_big (+ a_small*b_small, below float32 rounding):
// three m16n8k8 TF32 tensor-core MMAs with float32 accumulation per 16x8x8 tile (sm_80 and later).
// The attention kernels that use it run 1.9x (forward) to 1.8x (with the backward) faster than their
// CUDA-core versions on an H200, the GEMM (matmul_tf32x3.cu) 1.25x faster than cuBLAS SGEMM
// (bench/NOTES.md). Warp-level fragments follow the PTX layout
// of mma.m16n8k8 (.tf32): with g = lane / 4 and t = lane % 4,
//   A (16x8, row-major): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4);
//   B (8x8, k x n):      b0 (k = t, n = g), b1 (k = t + 4, n = g);
//   C (16x8):            c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1).
#pragma once

#include <cstdint>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_launch.cuh"

namespace kasmina::kernels::cuda {

// True when the current device has the sm_80 instructions used here.
inline bool tensor_cores_available() { return current_device_attribute<cudaDevAttrComputeCapabilityMajor>() >= 8; }

// An A operand of one m16n8k8 step, split into its TF32 part and the rest.
struct SplitA {
    uint32_t big[4], small[4];
};
// A B operand of one m16n8k8 step, split the same way.
struct SplitB {
    uint32_t big[2], small[2];
};

// x rounded to TF32's 10 explicit mantissa bits, to nearest with ties away from zero (cvt.rna's
// rounding), in two integer instructions: cvt.rna.tf32.f32 compiles to four on sm_90 (it checks for
// infinities and NaNs first), and dropping that check made the GEMM 8% faster. An infinity stays
// one; a NaN whose payload is all ones may round to a zero, but its remainder below is then the NaN
// itself, so a NaN still reaches the products. (An infinity's remainder is a NaN: callers that must
// keep infinities, like the GEMM's epilogue, account for it.)
__device__ __forceinline__ uint32_t round_to_tf32(float x) {
    return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

// The remainder is exact in float32 and goes to the tensor cores as it is: they read a TF32 operand's
// top 19 bits, so it is truncated there to 11 significant bits (a relative error of 2^-11 on a term
// already below 2^-11 of x), which saves a rounding instruction per value.
__device__ __forceinline__ void split_tf32(float x, uint32_t& big, uint32_t& small) {
    big = round_to_tf32(x);
    small = __float_as_uint(x - __uint_as_float(big));
}

__device__ __forceinline__ SplitA split_a(float a0, float a1, float a2, float a3) {
    SplitA a;
    split_tf32(a0, a.big[0], a.small[0]);
    split_tf32(a1, a.big[1], a.small[1]);
    split_tf32(a2, a.big[2], a.small[2]);
    split_tf32(a3, a.big[3], a.small[3]);
    return a;
}

__device__ __forceinline__ SplitB split_b(float b0, float b1) {
    SplitB b;
    split_tf32(b0, b.big[0], b.small[0]);
    split_tf32(b1, b.big[1], b.small[1]);
    return b;
}

// d += a b for one m16n8k8 TF32 tile, float32 accumulation.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    KASMINA_SM80_ASM("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d[j] += a b[j] for j < kN at float32 accuracy: the two cross terms first, so the small ones meet
// the accumulator before the large one does. Each pass runs over every j before the next begins, so
// consecutive MMAs into one accumulator are kN apart and the tensor-core latency overlaps.
template <int kN>
__device__ __forceinline__ void mma_3xtf32(float (&d)[kN][4], const SplitA& a, const SplitB (&b)[kN]) {
#pragma unroll
    for (int j = 0; j < kN; ++j) mma_tf32(d[j], a.small, b[j].big);
#pragma unroll
    for (int j = 0; j < kN; ++j) mma_tf32(d[j], a.big, b[j].small);
#pragma unroll
    for (int j = 0; j < kN; ++j) mma_tf32(d[j], a.big, b[j].big);
}

// Warp products over shared-memory tiles of row stride ld (floats), for a warp that owns 16 rows of
// the A operand:
// acc[j] (16 x 8, j < kN) += rows row0..row0+15 of tile `a` (columns 0..8*kSteps-1) times the
// transpose of rows 8j..8j+7 of tile `b`: S = Q K^T with Q's and K's rows in shared memory.
template <int kSteps, int kN>
__device__ __forceinline__ void warp_product_with_rows(float (&acc)[kN][4], const float* a, int row0, const float* b,
                                                       int ld, int g, int t) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
        const float* top = a + (row0 + g) * ld + 8 * s + t;
        const float* bottom = top + 8 * ld;
        const SplitA split = split_a(top[0], bottom[0], top[4], bottom[4]);
        SplitB columns[kN];
#pragma unroll
        for (int j = 0; j < kN; ++j) {
            const float* row = b + (8 * j + g) * ld + 8 * s + t;
            columns[j] = split_b(row[0], row[4]);
        }
        mma_3xtf32(acc, split, columns);
    }
}

// acc[n] (16 x 8, n < kN) += P (16 x 8*kK, held as C fragments of an earlier product) times the
// tile's rows 0..8*kK-1, columns 8n..8n+7: O = P V with V's rows in shared memory. The reduction
// index is permuted inside each step of 8 (A's column t is C's column 2t, A's t + 4 is C's 2t + 1,
// and B's rows the same), so the C fragments serve as A fragments without moving between lanes.
template <int kK, int kN>
__device__ __forceinline__ void warp_product_of_accumulators(float (&acc)[kN][4], const float (&p)[kK][4],
                                                             const float* tile, int ld, int g, int t) {
#pragma unroll
    for (int j = 0; j < kK; ++j) {
        const SplitA split = split_a(p[j][0], p[j][2], p[j][1], p[j][3]);
        const float* rows = tile + (8 * j + 2 * t) * ld + g;
        SplitB columns[kN];
#pragma unroll
        for (int n = 0; n < kN; ++n) columns[n] = split_b(rows[8 * n], rows[ld + 8 * n]);
        mma_3xtf32(acc, split, columns);
    }
}

}  // namespace kasmina::kernels::cuda
