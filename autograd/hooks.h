// Gradient hooks on leaf tensors: code that must act as soon as a parameter's gradient is complete
// during backward (the data-parallel wrapper starts its all-reduce from them, overlapping backward).
#pragma once

#include <functional>
#include <memory>

#include "runtime/tensor.h"

namespace kasmina::autograd {

// Removes its hook when destroyed (or on remove()). Movable, not copyable.
class HookHandle {
public:
    HookHandle() = default;
    HookHandle(std::weak_ptr<TensorImpl> leaf, uint64_t id) : leaf_(std::move(leaf)), id_(id) {}
    ~HookHandle() { remove(); }
    HookHandle(HookHandle&& other) noexcept : leaf_(std::move(other.leaf_)), id_(other.id_) { other.id_ = 0; }
    HookHandle& operator=(HookHandle&& other) noexcept;
    HookHandle(const HookHandle&) = delete;
    HookHandle& operator=(const HookHandle&) = delete;
    void remove();

private:
    std::weak_ptr<TensorImpl> leaf_;
    uint64_t id_ = 0;
};

// Calls `hook(leaf)` after each backward pass has accumulated into `leaf`'s grad (PyTorch's
// register_post_accumulate_grad_hook). `leaf` must be a leaf that requires grad. Hooks run on the
// thread running backward, in registration order.
[[nodiscard]] HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor& leaf)> hook);

}  // namespace kasmina::autograd
