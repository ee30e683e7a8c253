#include "kernels/settings.h"

#include <atomic>

namespace kasmina {
namespace {
std::atomic<bool> allow_tf32_flag{false};
std::atomic<bool> fused_attention_flag{true};
}

void set_allow_tf32(bool allow) { allow_tf32_flag.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return allow_tf32_flag.load(std::memory_order_relaxed); }
void set_fused_attention(bool enable) { fused_attention_flag.store(enable, std::memory_order_relaxed); }
bool fused_attention() { return fused_attention_flag.load(std::memory_order_relaxed); }

}  // namespace kasmina
