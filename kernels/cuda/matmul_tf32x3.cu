// The 3xTF32 GEMM (contract in matmul_tf32x3.h) on dense operands: the main loop of tf32x3_gemm.cuh
// with 128 x 128 tiles (eight warps, 2 x 4). Either operand may be stored with k or its other
// dimension contiguous, so x W^T, dY W and dY^T X all read their operands in place. When the output
// tiles cannot fill the device, k is split among blocks that write partial products to a workspace,
// summed (with the bias) by a second kernel in a fixed order: the results do not depend on timing.
#include "kernels/cuda/matmul_tf32x3.h"

#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3_gemm.cuh"

namespace kasmina::kernels::cuda {
namespace {

using tf32x3::kBlockK;
using tf32x3::kBlockN;
using Block = tf32x3::BlockShape<128>;
constexpr int kBlockM = Block::kBlockM;
template <bool kKContiguous>
using DenseTile = tf32x3::DenseTile<kKContiguous, 128, Block::kThreads>;

using tf32x3::ceil_div;

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
    const int64_t tiles = ceil_div(m, kBlockM) * ceil_div(n, kBlockN) * batch;
    if (batch * tf32x3::k_splits(tiles, k, 1) > tf32x3::kMaxGridYZ) return false;
    return tensor_cores_available();
}

void tf32x3_gemm(const GemmOperand& a, const GemmOperand& b, const float* bias, float* c, int64_t ldc,
                 int64_t c_batch_stride, int64_t m, int64_t n, int64_t k, int64_t batch) {
    const tf32x3::GemmOutput out{c, ldc, c_batch_stride, 0, n, bias, false};
    // A (m, k): rows of m apart by row_stride when k is contiguous, else rows of k by col_stride.
    // B (k, n): rows of n apart by col_stride when k is contiguous, else rows of k by row_stride.
    auto run = [&]<bool kAK, bool kBK>() {
        const typename DenseTile<kAK>::Source a_source{a.data, kAK ? a.row_stride : a.col_stride, a.batch_stride};
        const typename DenseTile<kBK>::Source b_source{b.data, kBK ? b.col_stride : b.row_stride, b.batch_stride};
        tf32x3::gemm<Block, DenseTile<kAK>, DenseTile<kBK>>(a_source, b_source, out, m, n, k, batch);
    };
    const bool a_k = k_contiguous_a(a), b_k = k_contiguous_b(b);
    if (a_k && b_k) run.operator()<true, true>();
    else if (a_k) run.operator()<true, false>();
    else if (b_k) run.operator()<false, true>();
    else run.operator()<false, false>();
}

}  // namespace kasmina::kernels::cuda
