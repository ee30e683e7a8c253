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

// The most bytes of attention scores the fused backward may hold at once (default 64 MiB, L2-sized
// chunks of heads computed with cuBLAS); a head whose scores exceed it — or a budget of 0 — takes the
// tiled kernels that hold none.
void set_attention_workspace_bytes(size_t bytes);
size_t attention_workspace_bytes();

}  // namespace kasmina
