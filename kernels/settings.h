// Process-wide numerical settings of the kernels (the counterparts of PyTorch's backend flags).
#pragma once

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

}  // namespace kasmina
