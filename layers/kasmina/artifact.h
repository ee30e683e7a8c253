// Kernel artifacts: a small network (an op list plus its weights) that a seed slot runs, stored as
// one safetensors file whose "__metadata__" holds the JSON description (SPEC.md, "Kernel artifacts").
// Parsing validates everything before use (file structure, op list, tensor dtypes/shapes against the
// ops, finite weights) and refuses a bad artifact with ArtifactError. The kernel id is a 64-bit hash
// of the file's bytes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/convolution.h"
#include "runtime/safetensors.h"

namespace kasmina::morph {

inline constexpr int kArtifactFormatVersion = 1;
inline constexpr const char* kArtifactMetadataKey = "kasmina_kernel";

// Which layer family a kernel serves.
enum class KernelKind { linear, conv2d, attention, norm };
const char* kernel_kind_name(KernelKind kind);  // "linear", "conv2d", "attention", "norm"
KernelKind parse_kernel_kind(const std::string& name);  // raises ArtifactError for unknown names

// What a layer offers a kernel, and what an artifact declares it was made for.
//   linear:    [*, in_features] -> [*, out_features]
//   conv2d:    [N, in_channels, H, W] -> [N, out_channels, OH, OW] with OH/OW those of the host conv
//              (kernel_size, stride, padding, dilation)
//   attention: per-head context [B, targets, L, head_dim] -> same; target_heads in [0, num_heads)
//   norm:      the layer's normalized output -> same; feature_shape is LayerNorm's normalized_shape
//              (channel_dim -1: trailing dims) or BatchNorm's [C] (channel_dim 1)
struct KernelSignature {
    KernelKind kind = KernelKind::linear;
    int64_t in_features = 0, out_features = 0;
    int64_t in_channels = 0, out_channels = 0;
    std::array<int64_t, 2> kernel_size{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
    int64_t num_heads = 0, head_dim = 0;
    std::vector<int64_t> target_heads;
    Shape feature_shape;
    int64_t channel_dim = -1;
};

// The op vocabulary. Each op reads the previous op's output (the kernel input for the first op).
//   linear        weight [out, features], bias [out] (optional)            on the last dim
//   conv2d        weight [out, features / groups, kh, kw], bias [out]      on dim 1 (NCHW)
//   relu, gelu    elementwise (gelu exact, erf)
//   layernorm     over the last dim; weight, bias [features] (optional); eps
//   affine        x * weight + bias along the kernel's feature axis (weight/bias of the feature shape)
//   residual_add  adds value `from` (0: the kernel input; i: the output of op i - 1)
enum class KernelOpType { linear, conv2d, relu, gelu, layernorm, affine, residual_add };
const char* kernel_op_name(KernelOpType type);

struct KernelOp {
    KernelOpType type = KernelOpType::relu;
    std::string weight, bias;  // tensor names; empty when absent
    Conv2dParams conv;         // conv2d
    double eps = 1e-5;         // layernorm
    int64_t from = 0;          // residual_add
};

struct KernelArtifact {
    std::string name;  // human-readable blueprint name, e.g. "linear-bottleneck"
    KernelSignature signature;
    std::vector<KernelOp> ops;
    TensorMap tensors;  // float32 weights by name
    double suggested_alpha = 0.3;
    int64_t parameter_count = 0;  // filled in by validation (sum of tensor sizes)
};

// Checks the op list and tensors against the signature: every op known and well-formed, every
// referenced tensor present, float32, of the shape the op needs, finite; no unreferenced tensors;
// the output matches the signature. Raises ArtifactError naming the problem; sets parameter_count.
void validate_artifact(KernelArtifact& artifact);

// Validates, then writes the safetensors bytes (deterministic: same artifact, same bytes, same id).
std::vector<uint8_t> serialize_artifact(const KernelArtifact& artifact);
// Bounds an artifact must keep, checked before anything of the declared size is allocated.
struct ArtifactLimits {
    uint64_t max_file_bytes = 64ull << 20;        // the whole file
    uint64_t max_description_bytes = 1ull << 20;  // the JSON description in __metadata__
};

// Parses and validates a file's bytes; `source` names it in error messages.
KernelArtifact parse_artifact(const uint8_t* bytes, size_t size, const std::string& source,
                              const ArtifactLimits& limits = {});
KernelArtifact load_artifact(const std::string& path, const ArtifactLimits& limits = {});

// Raises ArtifactError unless `artifact` fits a layer offering `layer` ("kind mismatch: ..." for the
// wrong family; otherwise names the field that differs).
void check_compatible(const KernelArtifact& artifact, const KernelSignature& layer);

// The kernel id: a 64-bit hash of a file's bytes, printed as 16 hex digits.
uint64_t content_hash(const uint8_t* bytes, size_t size);
std::string format_kernel_id(uint64_t id);
uint64_t parse_kernel_id(const std::string& text);  // raises Error unless 1-16 hex digits

// A multi-line human-readable description (kasmina-kernel inspect).
std::string describe_artifact(const KernelArtifact& artifact);

}  // namespace kasmina::morph
