// Fuzz target: the kernel-artifact loader (safetensors structure, the JSON description, the op list
// validated against the signature and the tensors). Any input must give a valid artifact or raise
// ArtifactError; an accepted artifact must serialize to a file that parses to the same description,
// and it must run on an input of its signature's shape.
#include <cstdlib>

#include "fuzz/fuzz_target.h"
#include "layers/kasmina/artifact.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_network.h"
#include "runtime/error.h"
#include "runtime/grad_mode.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

// A small input of the shape the artifact's signature promises to accept, or an undefined tensor
// when that shape would be large (the fuzzer may declare sizes up to the validator's bound).
Tensor example_input(const KernelSignature& s) {
    constexpr int64_t kMaxElements = 1 << 16;
    Shape shape;
    switch (s.kind) {
        case KernelKind::linear: shape = {2, s.in_features}; break;
        case KernelKind::conv2d: shape = {1, s.in_channels, 6, 6}; break;
        case KernelKind::attention: shape = {1, static_cast<int64_t>(s.target_heads.size()), 3, s.head_dim}; break;
        case KernelKind::norm:
            shape = {2};  // a batch of 2, then the features ([C] for BatchNorm, the normalized shape for LayerNorm)
            for (int64_t size : s.feature_shape) shape.push_back(size);
            break;
    }
    int64_t elements = 1;
    for (int64_t size : shape) {
        if (size <= 0 || size > kMaxElements) return {};
        elements *= size;
        if (elements > kMaxElements) return {};
    }
    return Tensor::randn(shape);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    KernelArtifact artifact;
    try {
        artifact = parse_artifact(data, size, "fuzz input");
    } catch (const ArtifactError&) {
        return 0;
    }
    const std::vector<uint8_t> bytes = serialize_artifact(artifact);
    const KernelArtifact again = parse_artifact(bytes.data(), bytes.size(), "round trip");
    if (describe_artifact(again) != describe_artifact(artifact)) std::abort();
    // Running it: an accepted artifact either computes or raises a kasmina Error (e.g. a conv
    // signature whose output size the 6x6 probe cannot give), never crashes.
    const Tensor input = example_input(artifact.signature);
    if (input.defined()) {
        try {
            NoGradGuard no_grad;
            KernelNetwork network(artifact, /*trainable=*/false);
            (void)network.forward(input);
        } catch (const Error&) {
        }
    }
    return 0;
}

namespace kasmina::fuzz {

void write_seed_inputs(const std::filesystem::path& directory) {
    write_input(directory, "linear.safetensors", serialize_artifact(make_linear_bottleneck(4, 3, 2)));
    write_input(directory, "conv.safetensors",
                serialize_artifact(make_conv_bottleneck(2, 3, 2, {3, 3}, {1, 1}, {1, 1}, {1, 1})));
    write_input(directory, "attention.safetensors", serialize_artifact(make_attention_head_mlp(4, 2, 3, {1, 3})));
    write_input(directory, "norm_channels.safetensors", serialize_artifact(make_norm_affine({3}, 1)));
    write_input(directory, "norm_trailing.safetensors", serialize_artifact(make_norm_affine({2, 3}, -1)));
}

}  // namespace kasmina::fuzz
