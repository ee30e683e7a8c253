#include "autograd/hooks.h"

#include <algorithm>
#include <atomic>

#include "runtime/error.h"

namespace kasmina::autograd {
namespace {
std::atomic<uint64_t> next_hook_id{1};
}

HookHandle& HookHandle::operator=(HookHandle&& other) noexcept {
    if (this != &other) {
        remove();
        leaf_ = std::move(other.leaf_);
        id_ = other.id_;
        other.id_ = 0;
    }
    return *this;
}

void HookHandle::remove() {
    if (id_ == 0) return;
    if (std::shared_ptr<TensorImpl> leaf = leaf_.lock()) {
        auto& hooks = leaf->post_accumulate_hooks;
        hooks.erase(std::remove_if(hooks.begin(), hooks.end(), [&](const auto& entry) { return entry.first == id_; }), hooks.end());
    }
    id_ = 0;
}

HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor& leaf)> hook) {
    if (!leaf.defined() || !leaf.requires_grad() || leaf.impl()->grad_fn)
        raise<AutogradError>("register_post_accumulate_grad_hook", "expected a leaf tensor that requires grad, got ",
                             leaf.defined() ? leaf.describe() : std::string("an undefined tensor"),
                             leaf.defined() && leaf.impl()->grad_fn ? " (it has a grad_fn)" : "");
    if (!hook) raise<Error>("register_post_accumulate_grad_hook", "the hook is empty");
    const uint64_t id = next_hook_id.fetch_add(1);
    leaf.impl()->post_accumulate_hooks.emplace_back(
        id, [hook = std::move(hook)](const std::shared_ptr<TensorImpl>& impl) { hook(Tensor(impl)); });
    return HookHandle(leaf.impl_ptr(), id);
}

}  // namespace kasmina::autograd
