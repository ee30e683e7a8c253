// Module: the base of every layer. Holds named parameters, buffers and child modules (dotted names
// like PyTorch's "out_proj.weight"), the train/eval flag, device moves, and the state dict that
// loads a PyTorch state dict saved as safetensors by name and shape.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace kasmina::nn {

class Module {
public:
    virtual ~Module() = default;
    Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // The class name as PyTorch prints it ("Linear", "Conv2d", ...).
    virtual std::string type_name() const = 0;
    // Constructor arguments for printing, e.g. "in_features=4, out_features=2, bias=True".
    virtual std::string extra_repr() const { return ""; }
    // Single-tensor forward; modules with other signatures raise here and offer their own.
    virtual Tensor forward(const Tensor& input);
    Tensor operator()(const Tensor& input) { return forward(input); }

    // ---- structure ------------------------------------------------------------------------------
    std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
    std::vector<Tensor> parameters(bool recurse = true) const;
    std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
    // Every module below (and including) this one, with dotted names ("" for this one).
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules(const std::string& prefix = "");
    std::shared_ptr<Module> child(const std::string& name) const;  // raises if absent
    // Replaces an existing child (used by wrap() to swap layers in place).
    void replace_child(const std::string& name, std::shared_ptr<Module> module);

    // ---- mode, device, gradients ----------------------------------------------------------------------
    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }
    // Moves every parameter, buffer and gradient in place (handles held by layers stay valid).
    void to(Device device);
    void to(DType dtype);  // floating parameters and buffers only
    void zero_grad();

    // ---- state ---------------------------------------------------------------------------------------
    TensorMap state_dict() const;  // parameters and buffers by dotted name (aliases, not copies)
    // Validates every entry first (missing / unexpected names when strict, shape mismatches always)
    // and raises ShapeError listing all offenders, leaving the module unchanged; then copies values in.
    void load_state_dict(const TensorMap& state, bool strict = true);
    void save(const std::string& path) const;
    void load(const std::string& path, bool strict = true);

    void print(std::ostream& stream, int indent = 0) const;

protected:
    Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
    Tensor register_buffer(const std::string& name, Tensor tensor);
    template <typename ModuleType>
    std::shared_ptr<ModuleType> register_module(const std::string& name, std::shared_ptr<ModuleType> module) {
        add_child(name, module);
        return module;
    }
    // Called after train()/eval() changes the flag on this module.
    virtual void on_train_mode_changed() {}
    // Called after to(device) / to(dtype) moved this module's registered members and children.
    virtual void on_device_changed(Device device) {}
    virtual void on_dtype_changed(DType dtype) {}
    // Parameters that come and go at run time (seed kernels), appended after the registered ones.
    // Overrides must be thread-safe: a controller thread may change them while training runs.
    virtual std::vector<std::pair<std::string, Tensor>> dynamic_parameters() const { return {}; }

private:
    void add_child(const std::string& name, std::shared_ptr<Module> module);
    void check_new_name(const std::string& name) const;

    std::vector<std::pair<std::string, Tensor>> parameters_;
    std::vector<std::pair<std::string, Tensor>> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    bool training_ = true;
};

std::ostream& operator<<(std::ostream& stream, const Module& module);

// A Python-style bool for extra_repr ("True"/"False").
inline const char* py_bool(bool value) { return value ? "True" : "False"; }

}  // namespace kasmina::nn
