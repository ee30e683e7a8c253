#include "layers/kasmina/kernel_network.h"

#include "autograd/convolution.h"
#include "autograd/normalization.h"
#include "autograd/ops.h"
#include "runtime/grad_mode.h"

namespace kasmina::morph {

KernelNetwork::KernelNetwork(const KernelArtifact& artifact, bool trainable)
    : signature_(artifact.signature), ops_(artifact.ops), owns_weights_(trainable) {
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

// Owned weights move in place (an optimizer's handles stay valid); weights shared with the kernel
// cache are replaced by converted copies, so the cache's tensors are never touched.
void KernelNetwork::move_weight(Tensor& weight, Device device, DType dtype) const {
    if (owns_weights_) {
        detail::move_in_place(weight, device, dtype);
        return;
    }
    if (weight.device() == device && weight.dtype() == dtype) return;
    NoGradGuard no_grad;
    weight = weight.to(device).to(dtype);
}

void KernelNetwork::to(Device device) {
    for (auto& [name, weight] : weights_) move_weight(weight, device, weight.dtype());
}

void KernelNetwork::to(DType dtype) {
    for (auto& [name, weight] : weights_) move_weight(weight, weight.device(), dtype);
}

std::vector<std::pair<std::string, Tensor>> KernelNetwork::named_parameters() const { return weights_; }

}  // namespace kasmina::morph
