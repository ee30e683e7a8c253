// Float32 matrix products on tensor cores at float32 accuracy (3xTF32, kernels/cuda/tf32x3.cuh):
// the GPU backend's float32 GEMM where the device has TF32 tensor cores (sm_80+), in place of cuBLAS
// SGEMM, which runs on CUDA cores. Used by kernels/cuda/matmul.cu; set_matmul_tensor_cores(false)
// (kernels/settings.h) keeps cuBLAS.
#pragma once

#include <cstdint>

namespace kasmina::kernels::cuda {

// One operand of a batch of matrices [rows, cols] as the GEMM reads it: element (r, c) of matrix b is
// data[b * batch_stride + r * row_stride + c * col_stride] with row_stride == 1 or col_stride == 1.
struct GemmOperand {
    const float* data = nullptr;
    int64_t row_stride = 0, col_stride = 0, batch_stride = 0;
};

// True when the tensor-core GEMM takes c [batch, m, n] = a [batch, m, k] b [batch, k, n]: the device
// has TF32 tensor cores, the sizes fit in int, each operand's unit-stride dimension is a multiple of
// 4 long, its other strides are multiples of 4 and its data 16-byte aligned (the tiles are copied
// 16 bytes at a time), and the product fills the device at least once with 128 x 128 output tiles
// (smaller products stay with cuBLAS, which splits them further).
bool tf32x3_gemm_applies(const GemmOperand& a, const GemmOperand& b, int64_t m, int64_t n, int64_t k, int64_t batch);

// Queues c [batch, m, n] (row-major, rows ldc apart, matrices c_batch_stride apart) = a b (+ bias [n]
// broadcast over rows when bias is not null) on the current stream. tf32x3_gemm_applies must hold.
void tf32x3_gemm(const GemmOperand& a, const GemmOperand& b, const float* bias, float* c, int64_t ldc,
                 int64_t c_batch_stride, int64_t m, int64_t n, int64_t k, int64_t batch);

}  // namespace kasmina::kernels::cuda
