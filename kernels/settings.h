// Process-wide numerical settings of the kernels (the counterparts of PyTorch's backend flags).
#pragma once

#include <cstddef>

namespace kasmina {

// TF32 tensor-core math for float32 GEMMs and convolutions on the GPU: off by default (full float32,
// like torch.backends.cuda.matmul.allow_tf32 = False); an explicit opt-in for ~7x GEMM throughput.
void set_allow_tf32(bool allow);
bool allow_tf32();

// The fused attention kernels on the GPU (no [L, S] score matrix): on by default; off makes
// scaled_dot_product_attention compose matmul and softmax everywhere (like disabling PyTorch's
// fused SDPA backends), for comparisons and debugging.
void set_fused_attention(bool enable);
bool fused_attention();

// The fused attention kernels on tensor cores for float32 with head_dim <= 64: on by default. Each
// product runs as three TF32 products of the operands split into a TF32 part and its remainder
// ("3xTF32"), as accurate as float32 FMAs (the split drops only terms below float32's rounding) and
// about twice as fast; PyTorch's float32 memory-efficient attention does the same. Off: CUDA cores
// (the forward kernel and the backward by workspace below). The environment's
// KASMINA_ATTENTION_TENSOR_CORES=0 sets the starting value to off.
void set_attention_tensor_cores(bool enable);
bool attention_tensor_cores();

// Float32 matrix products (matmul, linear and their gradients) on tensor cores at float32 accuracy
// (3xTF32, as above) instead of cuBLAS SGEMM on CUDA cores: on by default where the device has TF32
// tensor cores and the product is large enough to gain (kernels/cuda/matmul_tf32x3.h). Off, or with
// set_allow_tf32(true), cuBLAS runs them. KASMINA_MATMUL_TENSOR_CORES=0 sets the starting value to off.
void set_matmul_tensor_cores(bool enable);
bool matmul_tensor_cores();

// Float32 convolutions on our tensor-core kernels at float32 accuracy (3xTF32) instead of cuDNN: implicit
// GEMMs (the GEMM's main loop reading the image in place; kernels/cuda/convolution_tf32x3.h) for the
// geometries they take (groups 1; the input gradient needs stride 1), and the Winograd kernels where
// set_convolution_winograd below lets them run. measured (the default): the first call of each
// geometry and pass times each of ours that applies against cuDNN's fastest deterministic algorithm
// and keeps the fastest, as cuDNN's own search does; always: Winograd where it applies, else the
// implicit GEMM where it applies (tests, timings); off: cuDNN only. Not with set_allow_tf32(true)
// (cuDNN's TF32 is faster). The environment's KASMINA_CONVOLUTION_TENSOR_CORES=0 or =always sets the
// starting value.
enum class ConvolutionTensorCores { off, measured, always };
void set_convolution_tensor_cores(ConvolutionTensorCores mode);
ConvolutionTensorCores convolution_tensor_cores();

// Float32 3x3 stride-1 convolutions by Winograd's algorithm (no dilation, groups 1, at least 16 input
// and output channels), on both devices:
// - CPU: oneDNN's F(4x4, 3x3) kernels where the machine has them (AVX-512), for all three passes, when
//   the batch has at least 4096 output pixels: about 2x faster than the direct kernel (oneDNN 2.6
//   takes paddings 0 and 1). The forward and the input gradient err by up to ~12-26 float32
//   roundings (2^-24) of the sum of |terms| against the direct kernel's ~5.
// - GPU: our fused kernels on tensor cores (3xTF32, kernels/cuda/convolution_winograd.h), F(2x2, 3x3)
//   for the forward and the input gradient (padding at most 2) and F(3x3, 2x2) for the weight
//   gradient, as candidates next to the implicit GEMMs (set_convolution_tensor_cores above decides
//   which runs); their errors measure 0.5-6 roundings, no more than the implicit GEMMs'.
// (tests/kernels/convolution_test.cpp, tests/kernels/cuda_backend_test.cpp.) cuDNN and oneDNN pick
// Winograd the same way when asked for their fastest algorithm. On by default; off keeps every
// convolution on the direct kernels. KASMINA_CONVOLUTION_WINOGRAD=0 starts with it off.
void set_convolution_winograd(bool enable);
bool convolution_winograd();

// Training-mode batch norm of a float32 [N, C] on the GPU with the whole batch held on chip: where it
// fits in the registers and shared memory of one block per multiprocessor (x up to ~33 MB on an H100;
// C a power of two from 128 to 4096, at least 2^20 elements), one cooperative kernel reads x once, sums
// the statistics, finishes them after a grid-wide barrier and writes the output from what it holds:
// two passes over memory instead of three (the statistics' read, then the normalizing read and write).
// The result is deterministic, its sums taken in another order than the two-pass kernels' (the same
// shifted moments, tests/kernels/cuda_backend_test.cpp). On by default; KASMINA_BATCH_NORM_ON_CHIP=0
// starts with it off.
void set_batch_norm_on_chip(bool enable);
bool batch_norm_on_chip();

// The most bytes of attention scores the fused backward may hold at once (default 64 MiB, L2-sized
// chunks of heads computed with cuBLAS); a head whose scores exceed it — or a budget of 0 — takes the
// tiled kernels that hold none. Not used on tensor cores (which hold no scores).
void set_attention_workspace_bytes(size_t bytes);
size_t attention_workspace_bytes();

}  // namespace kasmina
