// The host side and split-k sums of the shared 3xTF32 GEMM (tf32x3_gemm.cuh).
#include "kernels/cuda/tf32x3_gemm.cuh"

#include <algorithm>

namespace kasmina::kernels::cuda::tf32x3 {

__global__ void sum_splits_kernel(const float* partial, int splits, int64_t m, int64_t n, int64_t batch,
                                  const float* bias, bool bias_per_row, float* c, int64_t ldc, int64_t c_batch_stride) {
    const int64_t plane = m * n;
    for (int64_t row = blockIdx.y; row < batch * m; row += gridDim.y) {
        const int64_t b = row / m, r = row - b * m;
        const float* first = partial + b * splits * plane + r * n;
        float* out = c + b * c_batch_stride + r * ldc;
        const float row_bias = bias && bias_per_row ? bias[r] : 0.0f;
        for (int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; col < n;
             col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
            float sum = bias && !bias_per_row ? bias[col] : row_bias;
            for (int s = 0; s < splits; ++s) sum += first[s * plane + col];
            out[col] = sum;
        }
    }
}

int64_t k_splits(int64_t tiles, int64_t k, int64_t blocks_per_processor, int64_t min_depth) {
    const int64_t slots = current_device_attribute<cudaDevAttrMultiProcessorCount>() * blocks_per_processor;
    if (tiles >= slots) return 1;
    const int64_t most = std::clamp<int64_t>(k / min_depth, 1, 4 * ceil_div(slots, tiles));
    int64_t best = 1;
    double best_fill = 0;
    for (int64_t splits = 1; splits <= most; ++splits) {
        const int64_t blocks = tiles * splits;
        const double fill = static_cast<double>(blocks) / static_cast<double>(ceil_div(blocks, slots) * slots);
        if (fill > best_fill + 0.02) best = splits, best_fill = fill;
    }
    return best;
}

}  // namespace kasmina::kernels::cuda::tf32x3
