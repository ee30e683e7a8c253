#include "layers/kasmina/kernel_network.h"

#include "autograd/convolution.h"
#include "autograd/normalization.h"
#include "autograd/ops.h"
#include "runtime/grad_mode.h"

namespace kasmina::morph {

KernelNetwork::KernelNetwork(const KernelArtifact& artifact, bool trainable)
    : signature_(artifact.signature), ops_(artifact.ops) {
    for (const auto& [name, tensor] : artifact.tensors) {
        if (!trainable) {
            weights_.emplace_back(name, tensor);
            continue;
        }
        Tensor copy;
        {
            NoGradGuard no_grad;
            copy = tensor.clone();
        }
        weights_.emplace_back(name, copy.set_requires_grad(true));
    }
}

Tensor KernelNetwork::weight(const std::string& name) const {
    if (name.empty()) return Tensor();
    for (const auto& [weight_name, tensor] : weights_)
        if (weight_name == name) return tensor;
    raise<ArtifactError>("KernelNetwork", "no weight named '", name, "'");
}

Tensor KernelNetwork::forward(const Tensor& input) const {
    // values[0] is the input, values[i + 1] the output of op i (residual_add reads any of them).
    std::vector<Tensor> values{input};
    const bool channel_axis = signature_.kind == KernelKind::conv2d ||
                              (signature_.kind == KernelKind::norm && signature_.channel_dim == 1);
    for (const KernelOp& op : ops_) {
        const Tensor& x = values.back();
        switch (op.type) {
            case KernelOpType::linear: values.push_back(linear(x, weight(op.weight), weight(op.bias))); break;
            case KernelOpType::conv2d: values.push_back(conv2d(x, weight(op.weight), weight(op.bias), op.conv)); break;
            case KernelOpType::relu: values.push_back(relu(x)); break;
            case KernelOpType::gelu: values.push_back(gelu(x)); break;
            case KernelOpType::layernorm:
                values.push_back(layer_norm(x, {x.size(-1)}, weight(op.weight), weight(op.bias), op.eps));
                break;
            case KernelOpType::affine: {
                Tensor scale = weight(op.weight), shift = weight(op.bias);
                if (channel_axis) {
                    // [C] -> [C, 1, ..., 1] so it broadcasts along dim 1 of [N, C, *].
                    if (x.dim() < 2)
                        raise<ShapeError>("kernel affine", "input ", shape_str(x.shape()), " has no channel dim 1");
                    Shape shape{scale.size(0)};
                    shape.resize(static_cast<size_t>(x.dim() - 1), 1);
                    scale = scale.reshape(shape);
                    if (shift.defined()) shift = shift.reshape(shape);
                }
                const Tensor scaled = x * scale;
                values.push_back(shift.defined() ? scaled + shift : scaled);
                break;
            }
            case KernelOpType::residual_add: values.push_back(x + values.at(static_cast<size_t>(op.from))); break;
        }
    }
    return values.back();
}

template <typename Convert>
void KernelNetwork::convert(Convert&& convert_tensor) {
    for (auto& [name, tensor] : weights_) {
        const bool trainable = tensor.requires_grad();
        Tensor converted;
        {
            NoGradGuard no_grad;
            converted = convert_tensor(tensor);
        }
        if (converted.impl() == tensor.impl()) continue;
        if (trainable) converted.set_requires_grad(true);
        tensor = converted;
    }
}

void KernelNetwork::to(Device device) {
    convert([&](const Tensor& t) { return t.device() == device ? t : t.to(device); });
}

void KernelNetwork::to(DType dtype) {
    convert([&](const Tensor& t) { return t.dtype() == dtype ? t : t.to(dtype); });
}

std::vector<std::pair<std::string, Tensor>> KernelNetwork::named_parameters() const { return weights_; }

}  // namespace kasmina::morph
