#include "layers/kasmina/artifact.h"

#include "runtime/untrusted_json.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace kasmina::morph {
namespace {

using Json = nlohmann::json;

constexpr int64_t kMaxExtent = int64_t{1} << 24;  // any single size an artifact may declare
constexpr size_t kMaxOps = 256;

[[noreturn]] void refuse(const std::string& problem) { throw ArtifactError("kernel artifact: " + problem); }

std::string pair_text(const std::array<int64_t, 2>& pair) { return make_message("(", pair[0], ", ", pair[1], ")"); }

// ---- the spatial size function of a chain of convolutions (conv2d kernels) -----------------------

struct SpatialStep {
    std::array<int64_t, 2> kernel, stride, padding, dilation;
};

// Output extent along `axis` of input extent `size` through `steps`; -1 where some step has no output.
int64_t spatial_extent(const std::vector<SpatialStep>& steps, int64_t size, int axis) {
    for (const SpatialStep& s : steps) {
        const int64_t span = s.dilation[axis] * (s.kernel[axis] - 1) + 1;
        const int64_t padded = size + 2 * s.padding[axis];
        if (span > padded) return -1;
        size = (padded - span) / s.stride[axis] + 1;
    }
    return size;
}

// Two chains agree when they produce the same extent for every input size 1..128 along both axes.
// (Extents are piecewise linear with period dividing the stride product, so this covers every case
// the small kernels we accept can hit.)
std::string spatial_mismatch(const std::vector<SpatialStep>& a, const std::vector<SpatialStep>& b) {
    for (int axis = 0; axis < 2; ++axis)
        for (int64_t size = 1; size <= 128; ++size) {
            const int64_t ea = spatial_extent(a, size, axis), eb = spatial_extent(b, size, axis);
            if (ea != eb && eb > 0)
                return make_message("for input ", axis == 0 ? "height " : "width ", size, " the kernel gives ",
                                    ea < 0 ? std::string("no output") : std::to_string(ea), ", the layer ", eb);
        }
    return "";
}

SpatialStep host_step(const KernelSignature& s) { return {s.kernel_size, s.stride, s.padding, s.dilation}; }

// ---- validation ------------------------------------------------------------------------------------

// What flows between ops: the size of the feature axis and (conv2d) the spatial size function.
struct ValueInfo {
    int64_t features = 0;
    std::vector<SpatialStep> spatial;
};

// The feature axis kernels of a kind act on: 1 for NCHW / BatchNorm channels, -1 for the last dim.
int64_t feature_axis(const KernelSignature& s) {
    if (s.kind == KernelKind::conv2d) return 1;
    if (s.kind == KernelKind::norm) return s.channel_dim;
    return -1;
}

int64_t input_features(const KernelSignature& s) {
    switch (s.kind) {
        case KernelKind::linear: return s.in_features;
        case KernelKind::conv2d: return s.in_channels;
        case KernelKind::attention: return s.head_dim;
        case KernelKind::norm: return s.channel_dim == 1 ? s.feature_shape.front() : s.feature_shape.back();
    }
    return 0;
}

int64_t output_features(const KernelSignature& s) {
    switch (s.kind) {
        case KernelKind::linear: return s.out_features;
        case KernelKind::conv2d: return s.out_channels;
        default: return input_features(s);
    }
}

void check_extent(int64_t value, const char* what) {
    if (value <= 0 || value > kMaxExtent) refuse(make_message(what, " must be in [1, ", kMaxExtent, "], got ", value));
}

void validate_signature(const KernelSignature& s) {
    switch (s.kind) {
        case KernelKind::linear:
            check_extent(s.in_features, "signature in_features");
            check_extent(s.out_features, "signature out_features");
            break;
        case KernelKind::conv2d:
            check_extent(s.in_channels, "signature in_channels");
            check_extent(s.out_channels, "signature out_channels");
            for (int axis = 0; axis < 2; ++axis) {
                check_extent(s.kernel_size[axis], "signature kernel_size");
                check_extent(s.stride[axis], "signature stride");
                check_extent(s.dilation[axis], "signature dilation");
                if (s.padding[axis] < 0 || s.padding[axis] > kMaxExtent) refuse("signature padding must be >= 0");
            }
            break;
        case KernelKind::attention: {
            check_extent(s.num_heads, "signature num_heads");
            check_extent(s.head_dim, "signature head_dim");
            if (s.target_heads.empty()) refuse("an attention kernel must name at least one target head");
            std::set<int64_t> seen;
            for (int64_t head : s.target_heads) {
                if (head < 0 || head >= s.num_heads)
                    refuse(make_message("target head ", head, " is outside [0, ", s.num_heads, ")"));
                if (!seen.insert(head).second) refuse(make_message("target head ", head, " is named twice"));
            }
            break;
        }
        case KernelKind::norm:
            if (s.feature_shape.empty() || s.feature_shape.size() > 8) refuse("signature feature_shape must have 1 to 8 dims");
            for (int64_t extent : s.feature_shape) check_extent(extent, "signature feature_shape");
            if (s.channel_dim != 1 && s.channel_dim != -1)
                refuse(make_message("signature channel_dim must be 1 (BatchNorm) or -1 (LayerNorm), got ", s.channel_dim));
            if (s.channel_dim == 1 && s.feature_shape.size() != 1)
                refuse("a BatchNorm kernel (channel_dim 1) has a feature_shape of one dim [C]");
            break;
    }
}

// The index of a float32 tensor's first NaN or infinity, or -1. A parsed file's tensors are dense on the
// host and are scanned where they lie, a block of values at a time (the scan vectorizes); others through a
// dense host copy.
int64_t first_non_finite(const Tensor& tensor) {
    const Tensor host = tensor.device().is_cpu() && tensor.is_contiguous() ? tensor : tensor.to(Device::cpu()).contiguous();
    const auto* values = static_cast<const float*>(host.raw_data());
    const int64_t count = host.numel();
    constexpr uint32_t kExponent = 0x7f800000u;  // all exponent bits set: infinity or NaN
    constexpr int64_t kBlock = 4096;
    for (int64_t begin = 0; begin < count; begin += kBlock) {
        const int64_t end = std::min(count, begin + kBlock);
        uint32_t widest = 0;  // the largest exponent field of the block (a max reduction vectorizes)
        for (int64_t i = begin; i < end; ++i) widest = std::max(widest, std::bit_cast<uint32_t>(values[i]) & kExponent);
        if (widest != kExponent) continue;
        for (int64_t i = begin; i < end; ++i)
            if ((std::bit_cast<uint32_t>(values[i]) & kExponent) == kExponent) return i;
    }
    return -1;
}

// The tensor `name` (required or optional), float32 of `shape`, finite; marks it used.
void check_tensor(const KernelArtifact& artifact, size_t op_index, const std::string& name, const Shape& shape,
                  bool required, std::set<std::string>& used) {
    const std::string op = make_message("op ", op_index, " (", kernel_op_name(artifact.ops[op_index].type), ")");
    if (name.empty()) {
        if (required) refuse(op + " needs a weight tensor");
        return;
    }
    const auto found = artifact.tensors.find(name);
    if (found == artifact.tensors.end()) refuse(op + " names tensor '" + name + "', which the file does not hold");
    if (!used.insert(name).second) refuse("tensor '" + name + "' is used by more than one op");
    const Tensor& tensor = found->second;
    if (tensor.dtype() != DType::f32)
        refuse(make_message("tensor '", name, "' is ", dtype_name(tensor.dtype()), ", kernel weights are float32"));
    if (tensor.shape() != shape)
        refuse(make_message(op, ": tensor '", name, "' has shape ", shape_str(tensor.shape()), ", expected ",
                            shape_str(shape)));
    if (const int64_t bad = first_non_finite(tensor); bad >= 0)
        refuse(make_message("tensor '", name, "' holds a non-finite value (", tensor.flatten().narrow(0, bad, 1).item(),
                            ") at element ", bad));
}

}  // namespace

const char* kernel_kind_name(KernelKind kind) {
    switch (kind) {
        case KernelKind::linear: return "linear";
        case KernelKind::conv2d: return "conv2d";
        case KernelKind::attention: return "attention";
        case KernelKind::norm: return "norm";
    }
    return "?";
}

KernelKind parse_kernel_kind(const std::string& name) {
    for (KernelKind kind : {KernelKind::linear, KernelKind::conv2d, KernelKind::attention, KernelKind::norm})
        if (name == kernel_kind_name(kind)) return kind;
    refuse("unknown kernel kind '" + name + "' (expected linear, conv2d, attention or norm)");
}

const char* kernel_op_name(KernelOpType type) {
    switch (type) {
        case KernelOpType::linear: return "linear";
        case KernelOpType::conv2d: return "conv2d";
        case KernelOpType::relu: return "relu";
        case KernelOpType::gelu: return "gelu";
        case KernelOpType::layernorm: return "layernorm";
        case KernelOpType::affine: return "affine";
        case KernelOpType::residual_add: return "residual_add";
    }
    return "?";
}

namespace {
KernelOpType parse_op_type(const std::string& name) {
    for (KernelOpType type : {KernelOpType::linear, KernelOpType::conv2d, KernelOpType::relu, KernelOpType::gelu,
                              KernelOpType::layernorm, KernelOpType::affine, KernelOpType::residual_add})
        if (name == kernel_op_name(type)) return type;
    refuse("unknown op '" + name + "' (known: linear, conv2d, relu, gelu, layernorm, affine, residual_add)");
}
}  // namespace

void validate_artifact(KernelArtifact& artifact) {
    const KernelSignature& s = artifact.signature;
    validate_signature(s);
    if (!std::isfinite(artifact.suggested_alpha) || artifact.suggested_alpha < 0.0 || artifact.suggested_alpha > 1.0)
        refuse(make_message("suggested alpha must be in [0, 1], got ", artifact.suggested_alpha));
    if (artifact.ops.empty()) refuse("the op list is empty");
    if (artifact.ops.size() > kMaxOps) refuse(make_message("more than ", kMaxOps, " ops"));

    const int64_t axis = feature_axis(s);
    // Affine weights span the norm's whole feature shape; elsewhere the feature axis.
    auto affine_shape = [&](int64_t features) {
        return s.kind == KernelKind::norm ? s.feature_shape : Shape{features};
    };
    std::vector<ValueInfo> values{{input_features(s), {}}};
    std::set<std::string> used;
    for (size_t i = 0; i < artifact.ops.size(); ++i) {
        const KernelOp& op = artifact.ops[i];
        const std::string where = make_message("op ", i, " (", kernel_op_name(op.type), ")");
        ValueInfo value = values.back();
        switch (op.type) {
            case KernelOpType::linear: {
                if (axis != -1 || (s.kind == KernelKind::norm && s.feature_shape.size() != 1))
                    refuse(where + " acts on the last dim, which is not this " + kernel_kind_name(s.kind) +
                           " kernel's feature axis");
                const auto w = artifact.tensors.find(op.weight);
                if (w == artifact.tensors.end() || w->second.dim() != 2)
                    refuse(where + " needs a 2-D weight tensor '" + op.weight + "'");
                const int64_t out = w->second.size(0);
                check_extent(out, (where + " output features").c_str());
                check_tensor(artifact, i, op.weight, {out, value.features}, true, used);
                check_tensor(artifact, i, op.bias, {out}, false, used);
                value.features = out;
                break;
            }
            case KernelOpType::conv2d: {
                if (s.kind != KernelKind::conv2d) refuse(where + " is only allowed in conv2d kernels");
                const Conv2dParams& c = op.conv;
                if (c.groups <= 0 || value.features % c.groups != 0)
                    refuse(make_message(where, ": groups ", c.groups, " does not divide ", value.features, " channels"));
                for (int a = 0; a < 2; ++a)
                    if (c.stride[a] <= 0 || c.dilation[a] <= 0 || c.padding[a] < 0 || c.stride[a] > kMaxExtent ||
                        c.dilation[a] > kMaxExtent || c.padding[a] > kMaxExtent)
                        refuse(make_message(where, ": stride ", pair_text(c.stride), ", padding ", pair_text(c.padding),
                                            ", dilation ", pair_text(c.dilation), " are not valid"));
                const auto w = artifact.tensors.find(op.weight);
                if (w == artifact.tensors.end() || w->second.dim() != 4)
                    refuse(where + " needs a 4-D weight tensor '" + op.weight + "'");
                const Shape& ws = w->second.shape();
                check_extent(ws[0], (where + " output channels").c_str());
                if (ws[0] % c.groups != 0) refuse(make_message(where, ": groups ", c.groups, " does not divide ", ws[0]));
                check_extent(ws[2], (where + " kernel height").c_str());
                check_extent(ws[3], (where + " kernel width").c_str());
                check_tensor(artifact, i, op.weight, {ws[0], value.features / c.groups, ws[2], ws[3]}, true, used);
                check_tensor(artifact, i, op.bias, {ws[0]}, false, used);
                value.features = ws[0];
                value.spatial.push_back({{ws[2], ws[3]}, c.stride, c.padding, c.dilation});
                break;
            }
            case KernelOpType::relu:
            case KernelOpType::gelu: break;
            case KernelOpType::layernorm:
                if (axis != -1) refuse(where + " normalizes the last dim, which is not this kernel's feature axis");
                if (!(op.eps > 0.0) || !std::isfinite(op.eps)) refuse(make_message(where, ": eps must be > 0, got ", op.eps));
                check_tensor(artifact, i, op.weight, {value.features}, false, used);
                check_tensor(artifact, i, op.bias, {value.features}, false, used);
                break;
            case KernelOpType::affine:
                check_tensor(artifact, i, op.weight, affine_shape(value.features), true, used);
                check_tensor(artifact, i, op.bias, affine_shape(value.features), false, used);
                break;
            case KernelOpType::residual_add: {
                if (op.from < 0 || op.from > static_cast<int64_t>(i))
                    refuse(make_message(where, ": from ", op.from, " must name the input (0) or an earlier op's output (1..", i,
                                        ")"));
                const ValueInfo& other = values[op.from];
                if (other.features != value.features)
                    refuse(make_message(where, ": adds ", other.features, " features to ", value.features));
                if (s.kind == KernelKind::conv2d) {
                    const std::string mismatch = spatial_mismatch(other.spatial, value.spatial);
                    if (!mismatch.empty()) refuse(where + ": the two operands differ in spatial size " + mismatch);
                }
                break;
            }
        }
        values.push_back(value);
    }
    for (const auto& [name, tensor] : artifact.tensors)
        if (!used.count(name)) refuse("tensor '" + name + "' is not used by any op");
    const ValueInfo& out = values.back();
    if (out.features != output_features(s))
        refuse(make_message("the network ends with ", out.features, " features, the ", kernel_kind_name(s.kind),
                            " signature needs ", output_features(s)));
    if (s.kind == KernelKind::conv2d) {
        const std::string mismatch = spatial_mismatch(out.spatial, {host_step(s)});
        if (!mismatch.empty())
            refuse("the kernel's output size differs from the host conv's (kernel " + pair_text(s.kernel_size) + ", stride " +
                   pair_text(s.stride) + ", padding " + pair_text(s.padding) + ", dilation " + pair_text(s.dilation) +
                   "): " + mismatch);
    }
    int64_t count = 0;
    for (const auto& [name, tensor] : artifact.tensors) count += tensor.numel();
    artifact.parameter_count = count;
}

// ---- JSON description ----------------------------------------------------------------------------

namespace {

Json signature_json(const KernelSignature& s) {
    switch (s.kind) {
        case KernelKind::linear: return {{"in_features", s.in_features}, {"out_features", s.out_features}};
        case KernelKind::conv2d:
            return {{"in_channels", s.in_channels}, {"out_channels", s.out_channels}, {"kernel_size", s.kernel_size},
                    {"stride", s.stride},           {"padding", s.padding},           {"dilation", s.dilation}};
        case KernelKind::attention:
            return {{"num_heads", s.num_heads}, {"head_dim", s.head_dim}, {"target_heads", s.target_heads}};
        case KernelKind::norm: return {{"feature_shape", s.feature_shape}, {"channel_dim", s.channel_dim}};
    }
    return {};
}

Json op_json(const KernelOp& op) {
    Json j{{"op", kernel_op_name(op.type)}};
    if (!op.weight.empty()) j["weight"] = op.weight;
    if (!op.bias.empty()) j["bias"] = op.bias;
    if (op.type == KernelOpType::conv2d)
        j.update({{"stride", op.conv.stride}, {"padding", op.conv.padding}, {"dilation", op.conv.dilation},
                  {"groups", op.conv.groups}});
    if (op.type == KernelOpType::layernorm) j["eps"] = op.eps;
    if (op.type == KernelOpType::residual_add) j["from"] = op.from;
    return j;
}

std::array<int64_t, 2> pair_field(const Json& j, const char* key, std::array<int64_t, 2> fallback) {
    if (!j.contains(key)) return fallback;
    const std::vector<int64_t> values = j.at(key).get<std::vector<int64_t>>();
    if (values.size() != 2) refuse(make_message("'", key, "' must hold 2 numbers, got ", values.size()));
    return {values[0], values[1]};
}

KernelSignature parse_signature(KernelKind kind, const Json& j) {
    KernelSignature s;
    s.kind = kind;
    switch (kind) {
        case KernelKind::linear:
            s.in_features = j.at("in_features").get<int64_t>();
            s.out_features = j.at("out_features").get<int64_t>();
            break;
        case KernelKind::conv2d:
            s.in_channels = j.at("in_channels").get<int64_t>();
            s.out_channels = j.at("out_channels").get<int64_t>();
            s.kernel_size = pair_field(j, "kernel_size", {0, 0});
            s.stride = pair_field(j, "stride", {1, 1});
            s.padding = pair_field(j, "padding", {0, 0});
            s.dilation = pair_field(j, "dilation", {1, 1});
            break;
        case KernelKind::attention:
            s.num_heads = j.at("num_heads").get<int64_t>();
            s.head_dim = j.at("head_dim").get<int64_t>();
            s.target_heads = j.at("target_heads").get<std::vector<int64_t>>();
            break;
        case KernelKind::norm:
            s.feature_shape = j.at("feature_shape").get<Shape>();
            s.channel_dim = j.at("channel_dim").get<int64_t>();
            break;
    }
    return s;
}

KernelOp parse_op(const Json& j) {
    if (!j.is_object()) refuse("each op must be a JSON object, got " + j.dump());
    KernelOp op;
    op.type = parse_op_type(j.at("op").get<std::string>());
    if (j.contains("weight")) op.weight = j.at("weight").get<std::string>();
    if (j.contains("bias")) op.bias = j.at("bias").get<std::string>();
    if (op.type == KernelOpType::conv2d) {
        op.conv.stride = pair_field(j, "stride", {1, 1});
        op.conv.padding = pair_field(j, "padding", {0, 0});
        op.conv.dilation = pair_field(j, "dilation", {1, 1});
        op.conv.groups = j.value("groups", int64_t{1});
    }
    if (op.type == KernelOpType::layernorm) op.eps = j.value("eps", 1e-5);
    if (op.type == KernelOpType::residual_add) op.from = j.at("from").get<int64_t>();
    return op;
}

}  // namespace

std::vector<uint8_t> serialize_artifact(const KernelArtifact& artifact) {
    KernelArtifact checked = artifact;
    validate_artifact(checked);
    Json ops = Json::array();
    for (const KernelOp& op : checked.ops) ops.push_back(op_json(op));
    const Json description{{"format_version", kArtifactFormatVersion},
                           {"name", checked.name},
                           {"kind", kernel_kind_name(checked.signature.kind)},
                           {"signature", signature_json(checked.signature)},
                           {"ops", ops},
                           {"suggested_alpha", checked.suggested_alpha},
                           {"parameter_count", checked.parameter_count}};
    return serialize_safetensors(checked.tensors, {{kArtifactMetadataKey, description.dump()}});
}

KernelArtifact parse_artifact(const uint8_t* bytes, size_t size, const std::string& source, const ArtifactLimits& limits) {
    try {
        SafetensorsLimits file_limits;
        file_limits.max_file_bytes = limits.max_file_bytes;
        file_limits.max_header_bytes = limits.max_description_bytes + (64u << 10);  // the description plus tensor entries
        file_limits.max_tensors = 2 * kMaxOps;  // at most a weight and a bias per op
        SafetensorsContent content = parse_safetensors(bytes, size, source, file_limits);
        const auto found = content.metadata.find(kArtifactMetadataKey);
        if (found == content.metadata.end())
            refuse(make_message("'", source, "' has no \"", kArtifactMetadataKey,
                                "\" entry in its __metadata__ (not a kernel artifact)"));
        const std::string op = "kernel artifact '" + source + "'";
        const Json description = parse_untrusted_json(found->second, op.c_str(), "the description",
                                                      {.max_bytes = limits.max_description_bytes, .max_depth = 8});
        if (!description.is_object()) refuse("'" + source + "': the description must be a JSON object");
        KernelArtifact artifact;
        try {
            const int version = description.at("format_version").get<int>();
            if (version != kArtifactFormatVersion)
                refuse(make_message("'", source, "' has format version ", version, ", this build reads ",
                                    kArtifactFormatVersion));
            artifact.name = description.value("name", std::string());
            artifact.signature =
                parse_signature(parse_kernel_kind(description.at("kind").get<std::string>()), description.at("signature"));
            const Json& ops = description.at("ops");
            if (!ops.is_array()) refuse("'ops' must be an array");
            for (const Json& op : ops) artifact.ops.push_back(parse_op(op));
            artifact.suggested_alpha = description.at("suggested_alpha").get<double>();
            const int64_t declared = description.at("parameter_count").get<int64_t>();
            artifact.tensors = std::move(content.tensors);
            validate_artifact(artifact);
            if (declared != artifact.parameter_count)
                refuse(make_message("declares ", declared, " parameters but holds ", artifact.parameter_count));
        } catch (const Json::exception& error) {
            refuse(make_message("'", source, "': malformed description (", error.what(), ")"));
        }
        return artifact;
    } catch (const ArtifactError& error) {
        const std::string message = error.what();
        if (message.find(source) != std::string::npos) throw;
        throw ArtifactError(message + " (in '" + source + "')");
    }
}

KernelArtifact load_artifact(const std::string& path, const ArtifactLimits& limits) {
    const std::vector<uint8_t> bytes = read_file_bytes(path, limits.max_file_bytes, "load_artifact: kernel artifact");
    return parse_artifact(bytes.data(), bytes.size(), path, limits);
}

void check_compatible(const KernelArtifact& artifact, const KernelSignature& layer) {
    const KernelSignature& a = artifact.signature;
    if (a.kind != layer.kind)
        refuse(make_message("kind mismatch: the layer takes ", kernel_kind_name(layer.kind), " kernels, the artifact is a ",
                            kernel_kind_name(a.kind), " kernel"));
    auto differ = [&](const char* what, const auto& kernel, const auto& host) {
        refuse(make_message("shape mismatch: the kernel's ", what, " is ", kernel, ", the layer's ", host));
    };
    switch (layer.kind) {
        case KernelKind::linear:
            if (a.in_features != layer.in_features) differ("in_features", a.in_features, layer.in_features);
            if (a.out_features != layer.out_features) differ("out_features", a.out_features, layer.out_features);
            break;
        case KernelKind::conv2d: {
            if (a.in_channels != layer.in_channels) differ("in_channels", a.in_channels, layer.in_channels);
            if (a.out_channels != layer.out_channels) differ("out_channels", a.out_channels, layer.out_channels);
            const std::string mismatch = spatial_mismatch({host_step(a)}, {host_step(layer)});
            if (!mismatch.empty()) refuse("shape mismatch: the kernel's output size differs from the layer's " + mismatch);
            break;
        }
        case KernelKind::attention:
            if (a.head_dim != layer.head_dim) differ("head_dim", a.head_dim, layer.head_dim);
            for (int64_t head : a.target_heads)
                if (head >= layer.num_heads)
                    refuse(make_message("shape mismatch: the kernel targets head ", head, ", the layer has ", layer.num_heads));
            break;
        case KernelKind::norm:
            if (a.feature_shape != layer.feature_shape)
                differ("feature shape", shape_str(a.feature_shape), shape_str(layer.feature_shape));
            if (a.channel_dim != layer.channel_dim) differ("channel_dim", a.channel_dim, layer.channel_dim);
            break;
    }
}

// Word-at-a-time multiply-rotate hash with a final avalanche; not cryptographic, just a content id.
uint64_t content_hash(const uint8_t* bytes, size_t size) {
    constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull, kPrime2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t hash = 0x4B61736D696E6121ull ^ (static_cast<uint64_t>(size) * kPrime1);
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t word;
        std::memcpy(&word, bytes + i, 8);
        hash ^= word * kPrime2;
        hash = ((hash << 31) | (hash >> 33)) * kPrime1;
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < size; ++k) tail |= static_cast<uint64_t>(bytes[i + k]) << (8 * k);
    hash ^= tail * kPrime2;
    hash ^= hash >> 33;
    hash *= 0xFF51AFD7ED558CCDull;
    hash ^= hash >> 33;
    hash *= 0xC4CEB9FE1A85EC53ull;
    hash ^= hash >> 33;
    return hash;
}

std::string format_kernel_id(uint64_t id) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(id));
    return text;
}

uint64_t parse_kernel_id(const std::string& text) {
    if (text.empty() || text.size() > 16 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
        raise<Error>("parse_kernel_id", "'", text, "' is not a kernel id (1 to 16 hex digits)");
    return std::stoull(text, nullptr, 16);
}

std::string describe_artifact(const KernelArtifact& artifact) {
    std::ostringstream out;
    const KernelSignature& s = artifact.signature;
    out << "name:            " << (artifact.name.empty() ? "(unnamed)" : artifact.name) << "\n";
    out << "kind:            " << kernel_kind_name(s.kind) << "\n";
    out << "signature:       " << signature_json(s).dump() << "\n";
    out << "suggested alpha: " << artifact.suggested_alpha << "\n";
    out << "parameters:      " << artifact.parameter_count << "\n";
    out << "ops:\n";
    for (size_t i = 0; i < artifact.ops.size(); ++i) out << "  " << i << ": " << op_json(artifact.ops[i]).dump() << "\n";
    out << "tensors:\n";
    for (const auto& [name, tensor] : artifact.tensors) out << "  " << name << ": " << tensor.describe() << "\n";
    return out.str();
}

}  // namespace kasmina::morph
