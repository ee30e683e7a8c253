// Blueprints: the kernel artifacts Kasmina can generate with fresh initialization (PyTorch's
// default init, drawn from the counter-based generator), one per layer family:
//   linear     bottleneck MLP       linear(in -> hidden), gelu, linear(hidden -> out)
//   conv2d     1x1-kxk bottleneck   conv 1x1 (in -> hidden), relu, conv kxk (hidden -> out) with the
//                                   host conv's kernel size, stride, padding and dilation
//   attention  per-head context MLP context + linear(head_dim -> hidden), gelu, linear(hidden -> head_dim)
//   norm       affine adaptation    x * scale + shift over the normalized features (identity at start)
#pragma once

#include <array>
#include <string>
#include <vector>

#include "layers/kasmina/artifact.h"
#include "runtime/random.h"

namespace kasmina::morph {

KernelArtifact make_linear_bottleneck(int64_t in_features, int64_t out_features, int64_t hidden, double alpha = 0.3,
                                      std::string name = "linear-bottleneck", Generator* generator = nullptr);

KernelArtifact make_conv_bottleneck(int64_t in_channels, int64_t out_channels, int64_t hidden,
                                    std::array<int64_t, 2> kernel_size, std::array<int64_t, 2> stride,
                                    std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation, double alpha = 0.3,
                                    std::string name = "conv-bottleneck", Generator* generator = nullptr);

KernelArtifact make_attention_head_mlp(int64_t num_heads, int64_t head_dim, int64_t hidden,
                                       std::vector<int64_t> target_heads, double alpha = 0.3,
                                       std::string name = "head-context-mlp", Generator* generator = nullptr);

// channel_dim 1: BatchNorm ([C] features); -1: LayerNorm (feature_shape = normalized_shape).
KernelArtifact make_norm_affine(Shape feature_shape, int64_t channel_dim, double alpha = 0.3,
                                std::string name = "norm-affine", Generator* generator = nullptr);

}  // namespace kasmina::morph
