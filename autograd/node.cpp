#include "autograd/node.h"

#include <atomic>

#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

namespace kasmina::autograd {
namespace {
std::atomic<uint64_t> next_sequence_nr{0};
}

Node::Node() : sequence_nr(next_sequence_nr.fetch_add(1)) {}

AccumulateGrad::AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {
    outputs.push_back({leaf_->shape, leaf_->dtype, leaf_->storage->device()});
}

std::vector<Tensor> AccumulateGrad::apply(const std::vector<Tensor>& grad_outputs) {
    const Tensor& incoming = grad_outputs.at(0);
    if (!incoming.defined()) return {};
    if (incoming.shape() != leaf_->shape)
        raise<ShapeError>("AccumulateGrad", "gradient ", shape_str(incoming.shape()), " does not match leaf ",
                          shape_str(leaf_->shape));
    if (!leaf_->grad) {
        // Adopt the incoming gradient when nothing else can see it (the only handle onto a dense block
        // of its own, as a backward kernel's fresh output is); otherwise own a dense copy, since it may
        // alias other gradients or be a broadcast view.
        const std::shared_ptr<TensorImpl>& impl = incoming.impl_ptr();
        const bool adoptable = impl.use_count() == 1 && impl->storage.use_count() == 1 && !impl->requires_grad &&
                               !impl->grad_fn && impl->offset == 0 && incoming.is_contiguous() &&
                               impl->dtype == leaf_->dtype && impl->storage->device() == leaf_->storage->device() &&
                               impl->storage->bytes() == static_cast<size_t>(incoming.numel()) * dtype_size(impl->dtype);
        if (adoptable) {
            leaf_->grad = impl;
        } else {
            Tensor owned = Tensor::empty(leaf_->shape, {.dtype = leaf_->dtype, .device = leaf_->storage->device()});
            copy_into(owned, incoming);
            leaf_->grad = owned.impl_ptr();
        }
    } else {
        kernels::add_into(Tensor(leaf_->grad), incoming);
    }
    if (!leaf_->post_accumulate_hooks.empty()) {
        const auto hooks = leaf_->post_accumulate_hooks;  // a copy: a hook may register or remove hooks
        for (const auto& entry : hooks) entry.second(leaf_);
    }
    return {};
}

SavedTensor::SavedTensor(const Tensor& tensor) {
    if (!tensor.defined()) return;
    data_ = tensor.detach();
    version_ = tensor.version();
}

Tensor SavedTensor::unpack(const char* op) const {
    if (data_.defined() && data_.version() != version_)
        raise<AutogradError>(op, "a tensor saved for backward (", data_.describe(), ") was modified in place (version ",
                             version_, " -> ", data_.version(), "); clone it before modifying");
    return data_;
}

FunctionNode::FunctionNode(std::string name, BackwardFunction backward)
    : name_(std::move(name)), backward_(std::move(backward)) {}

std::vector<Tensor> FunctionNode::apply(const std::vector<Tensor>& grad_outputs) {
    if (!backward_)
        raise<AutogradError>(name_.c_str(), "the graph has already been freed by a backward pass; "
                                            "call backward(..., retain_graph=true) to run it twice");
    return backward_(grad_outputs);
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
    if (!GradMode::is_enabled()) return false;
    for (const Tensor* input : inputs)
        if (input != nullptr && input->requires_grad()) return true;
    return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
    if (!GradMode::is_enabled()) return false;
    for (const Tensor& input : inputs)
        if (input.requires_grad()) return true;
    return false;
}

Edge gradient_edge(const Tensor& tensor) {
    if (!tensor.defined() || !tensor.requires_grad()) return {};
    TensorImpl* impl = tensor.impl();
    if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
    std::shared_ptr<Node> accumulator = impl->grad_accumulator.lock();
    if (!accumulator) {
        accumulator = std::make_shared<AccumulateGrad>(tensor.impl_ptr());
        impl->grad_accumulator = accumulator;
    }
    return {accumulator, 0};
}

std::vector<Tensor> record(const char* name, std::vector<Tensor> outputs, const std::vector<Tensor>& inputs,
                           BackwardFunction backward) {
    if (!needs_grad(inputs)) return outputs;
    auto node = std::make_shared<FunctionNode>(name, std::move(backward));
    for (const Tensor& input : inputs) node->next_edges.push_back(gradient_edge(input));
    for (size_t i = 0; i < outputs.size(); ++i) {
        Tensor& output = outputs[i];
        node->outputs.push_back({output.shape(), output.dtype(), output.device()});
        if (!is_floating(output.dtype())) continue;  // integer outputs (indices) carry no gradient
        TensorImpl* impl = output.impl();
        impl->grad_fn = node;
        impl->output_nr = static_cast<uint32_t>(i);
        impl->requires_grad = true;
    }
    return outputs;
}

Tensor record(const char* name, Tensor output, const std::vector<Tensor>& inputs, BackwardFunction backward) {
    return record(name, std::vector<Tensor>{std::move(output)}, inputs, std::move(backward))[0];
}

}  // namespace kasmina::autograd
