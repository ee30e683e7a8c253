#include "layers/module.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "runtime/grad_mode.h"

namespace kasmina::nn {
namespace {

}  // namespace

Tensor Module::forward(const Tensor&) {
    raise<Error>(type_name().c_str(), "this module does not take a single tensor; call its own forward overload");
}

void Module::check_new_name(const std::string& name) const {
    if (name.empty() || name.find('.') != std::string::npos)
        raise<Error>(type_name().c_str(), "invalid member name '", name, "' (non-empty, no dots)");
    auto taken = [&](const auto& list) {
        return std::any_of(list.begin(), list.end(), [&](const auto& entry) { return entry.first == name; });
    };
    if (taken(parameters_) || taken(buffers_) || taken(children_))
        raise<Error>(type_name().c_str(), "member '", name, "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
    check_new_name(name);
    if (tensor.defined() && requires_grad) tensor.set_requires_grad(true);
    parameters_.emplace_back(name, tensor);
    return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
    check_new_name(name);
    buffers_.emplace_back(name, tensor);
    return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
    check_new_name(name);
    if (!module) raise<Error>(type_name().c_str(), "child '", name, "' is null");
    children_.emplace_back(name, std::move(module));
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
    for (const auto& [child_name, module] : children_)
        if (child_name == name) return module;
    raise<Error>(type_name().c_str(), "no child module named '", name, "'");
}

void Module::replace_child(const std::string& name, std::shared_ptr<Module> module) {
    if (!module) raise<Error>(type_name().c_str(), "replacement for '", name, "' is null");
    for (auto& [child_name, existing] : children_)
        if (child_name == name) {
            existing = std::move(module);
            return;
        }
    raise<Error>(type_name().c_str(), "no child module named '", name, "' to replace");
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
    std::vector<std::pair<std::string, Tensor>> result;
    for (const auto& entry : parameters_)
        if (entry.second.defined()) result.push_back(entry);
    for (auto& entry : dynamic_parameters()) result.push_back(std::move(entry));
    if (recurse)
        for (const auto& [child_name, module] : children_)
            for (auto& [name, tensor] : module->named_parameters(true)) result.emplace_back(child_name + "." + name, tensor);
    return result;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
    std::vector<Tensor> result;
    for (auto& entry : named_parameters(recurse)) result.push_back(entry.second);
    return result;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
    std::vector<std::pair<std::string, Tensor>> result;
    for (const auto& entry : buffers_)
        if (entry.second.defined()) result.push_back(entry);
    if (recurse)
        for (const auto& [child_name, module] : children_)
            for (auto& [name, tensor] : module->named_buffers(true)) result.emplace_back(child_name + "." + name, tensor);
    return result;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules(const std::string& prefix) {
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> result;
    for (const auto& [child_name, module] : children_) {
        const std::string name = prefix.empty() ? child_name : prefix + "." + child_name;
        result.emplace_back(name, module);
        for (auto& entry : module->named_modules(name)) result.push_back(std::move(entry));
    }
    return result;
}

void Module::train(bool on) {
    const bool changed = training_ != on;
    training_ = on;
    for (auto& [name, module] : children_) module->train(on);
    if (changed) on_train_mode_changed();
}

// Registered members move in place; dynamic parameters (seed kernels) are their owner's business
// (on_device_changed / on_dtype_changed), since some of them are shared with the kernel cache.
void Module::to(Device device) {
    for (auto& [name, tensor] : parameters_) detail::move_in_place(tensor, device, tensor.dtype());
    for (auto& [name, tensor] : buffers_) detail::move_in_place(tensor, device, tensor.dtype());
    for (auto& [name, child] : children_) child->to(device);
    on_device_changed(device);
}

void Module::to(DType dtype) {
    if (!is_floating(dtype)) raise<DTypeError>("Module::to", "modules convert to floating dtypes only, got ", dtype_name(dtype));
    for (auto& [name, tensor] : parameters_) detail::move_in_place(tensor, tensor.device(), dtype);
    for (auto& [name, tensor] : buffers_)
        if (tensor.defined() && is_floating(tensor.dtype())) detail::move_in_place(tensor, tensor.device(), dtype);
    for (auto& [name, child] : children_) child->to(dtype);
    on_dtype_changed(dtype);
}

void Module::zero_grad() {
    for (auto& tensor : parameters()) tensor.set_grad(Tensor());
}

TensorMap Module::state_dict() const {
    TensorMap state;
    for (auto& [name, tensor] : named_parameters()) state.emplace(name, tensor.detach());
    for (auto& [name, tensor] : named_buffers()) state.emplace(name, tensor.detach());
    return state;
}

void Module::load_state_dict(const TensorMap& state, bool strict) {
    std::vector<std::pair<std::string, Tensor>> targets = named_parameters();
    for (auto& entry : named_buffers()) targets.push_back(entry);
    std::vector<std::string> missing, mismatched;
    std::set<std::string> expected;
    for (const auto& [name, tensor] : targets) {
        expected.insert(name);
        const auto found = state.find(name);
        if (found == state.end()) {
            missing.push_back(name);
            continue;
        }
        if (found->second.shape() != tensor.shape())
            mismatched.push_back(name + " (checkpoint " + shape_str(found->second.shape()) + ", module " +
                                 shape_str(tensor.shape()) + ")");
    }
    std::vector<std::string> unexpected;
    for (const auto& [name, tensor] : state)
        if (!expected.count(name)) unexpected.push_back(name);
    auto join = [](const std::vector<std::string>& names) {
        std::string text;
        for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
        return text;
    };
    std::string problems;
    if (!mismatched.empty()) problems += "size mismatch for " + join(mismatched) + ". ";
    if (strict && !missing.empty()) problems += "missing keys: " + join(missing) + ". ";
    if (strict && !unexpected.empty()) problems += "unexpected keys: " + join(unexpected) + ". ";
    if (!problems.empty())
        raise<ShapeError>("load_state_dict", "error(s) loading state dict for ", type_name(), ": ", problems,
                          "Module left unchanged.");
    NoGradGuard no_grad;
    for (const auto& [name, tensor] : targets) {
        const auto found = state.find(name);
        if (found != state.end()) Tensor(tensor).copy_(found->second);
    }
}

void Module::save(const std::string& path) const { save_safetensors(path, state_dict()); }

void Module::load(const std::string& path, bool strict) { load_state_dict(load_safetensors(path).tensors, strict); }

void Module::print(std::ostream& stream, int indent) const {
    stream << type_name() << '(' << extra_repr();
    if (!children_.empty()) {
        stream << '\n';
        for (const auto& [name, module] : children_) {
            stream << std::string(indent + 2, ' ') << '(' << name << "): ";
            module->print(stream, indent + 2);
            stream << '\n';
        }
        stream << std::string(indent, ' ');
    }
    stream << ')';
}

std::ostream& operator<<(std::ostream& stream, const Module& module) {
    module.print(stream);
    return stream;
}

}  // namespace kasmina::nn
