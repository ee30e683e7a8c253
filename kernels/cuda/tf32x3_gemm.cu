// The host side of the shared 3xTF32 GEMM (tf32x3_gemm.cuh): how many parts k is split into.
#include "kernels/cuda/tf32x3_gemm.cuh"

#include <algorithm>

namespace kasmina::kernels::cuda::tf32x3 {

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
