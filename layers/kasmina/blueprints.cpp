#include "layers/kasmina/blueprints.h"

#include "layers/init.h"

namespace kasmina::morph {
namespace {

// nn.Linear's init: weight and bias uniform in +-1/sqrt(fan_in).
void add_linear(KernelArtifact& artifact, int64_t in, int64_t out, Generator* generator) {
    const std::string index = std::to_string(artifact.ops.size());
    artifact.tensors["w" + index] = nn::init::kaiming_uniform_default({out, in}, in, generator);
    artifact.tensors["b" + index] = nn::init::kaiming_uniform_default({out}, in, generator);
    artifact.ops.push_back({.type = KernelOpType::linear, .weight = "w" + index, .bias = "b" + index});
}

// nn.Conv2d's init: fan_in = in * kh * kw.
void add_conv(KernelArtifact& artifact, int64_t in, int64_t out, std::array<int64_t, 2> kernel, const Conv2dParams& params,
              Generator* generator) {
    const std::string index = std::to_string(artifact.ops.size());
    const int64_t fan_in = in * kernel[0] * kernel[1];
    artifact.tensors["w" + index] = nn::init::kaiming_uniform_default({out, in, kernel[0], kernel[1]}, fan_in, generator);
    artifact.tensors["b" + index] = nn::init::kaiming_uniform_default({out}, fan_in, generator);
    artifact.ops.push_back({.type = KernelOpType::conv2d, .weight = "w" + index, .bias = "b" + index, .conv = params});
}

void add_op(KernelArtifact& artifact, KernelOpType type) { artifact.ops.push_back({.type = type}); }

KernelArtifact finish(KernelArtifact artifact) {
    validate_artifact(artifact);  // a blueprint that does not validate is a bug here, not user input
    return artifact;
}

}  // namespace

KernelArtifact make_linear_bottleneck(int64_t in_features, int64_t out_features, int64_t hidden, double alpha,
                                      std::string name, Generator* generator) {
    KernelArtifact artifact{.name = std::move(name), .suggested_alpha = alpha};
    artifact.signature.kind = KernelKind::linear;
    artifact.signature.in_features = in_features;
    artifact.signature.out_features = out_features;
    add_linear(artifact, in_features, hidden, generator);
    add_op(artifact, KernelOpType::gelu);
    add_linear(artifact, hidden, out_features, generator);
    return finish(std::move(artifact));
}

KernelArtifact make_conv_bottleneck(int64_t in_channels, int64_t out_channels, int64_t hidden,
                                    std::array<int64_t, 2> kernel_size, std::array<int64_t, 2> stride,
                                    std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation, double alpha,
                                    std::string name, Generator* generator) {
    KernelArtifact artifact{.name = std::move(name), .suggested_alpha = alpha};
    KernelSignature& s = artifact.signature;
    s.kind = KernelKind::conv2d;
    s.in_channels = in_channels;
    s.out_channels = out_channels;
    s.kernel_size = kernel_size;
    s.stride = stride;
    s.padding = padding;
    s.dilation = dilation;
    add_conv(artifact, in_channels, hidden, {1, 1}, {}, generator);
    add_op(artifact, KernelOpType::relu);
    add_conv(artifact, hidden, out_channels, kernel_size, {stride, padding, dilation, 1}, generator);
    return finish(std::move(artifact));
}

KernelArtifact make_attention_head_mlp(int64_t num_heads, int64_t head_dim, int64_t hidden,
                                       std::vector<int64_t> target_heads, double alpha, std::string name,
                                       Generator* generator) {
    KernelArtifact artifact{.name = std::move(name), .suggested_alpha = alpha};
    KernelSignature& s = artifact.signature;
    s.kind = KernelKind::attention;
    s.num_heads = num_heads;
    s.head_dim = head_dim;
    s.target_heads = std::move(target_heads);
    add_linear(artifact, head_dim, hidden, generator);
    add_op(artifact, KernelOpType::gelu);
    add_linear(artifact, hidden, head_dim, generator);
    artifact.ops.push_back({.type = KernelOpType::residual_add, .from = 0});
    return finish(std::move(artifact));
}

KernelArtifact make_norm_affine(Shape feature_shape, int64_t channel_dim, double alpha, std::string name,
                                Generator* generator) {
    (void)generator;  // the identity start needs no random numbers
    KernelArtifact artifact{.name = std::move(name), .suggested_alpha = alpha};
    artifact.signature.kind = KernelKind::norm;
    artifact.signature.feature_shape = feature_shape;
    artifact.signature.channel_dim = channel_dim;
    artifact.tensors["w0"] = Tensor::ones(feature_shape);
    artifact.tensors["b0"] = Tensor::zeros(feature_shape);
    artifact.ops.push_back({.type = KernelOpType::affine, .weight = "w0", .bias = "b0"});
    return finish(std::move(artifact));
}

}  // namespace kasmina::morph
