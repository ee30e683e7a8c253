#include "kernels/settings.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace kasmina {
namespace {
std::atomic<bool> allow_tf32_flag{false};
std::atomic<bool> fused_attention_flag{true};
// KASMINA_ATTENTION_TENSOR_CORES=0 or KASMINA_MATMUL_TENSOR_CORES=0 starts with the CUDA-core
// kernels or cuBLAS, KASMINA_CONVOLUTION_WINOGRAD=0 with the direct convolutions, KASMINA_BATCH_NORM_ON_CHIP=0 with
// batch norm's two passes (for side-by-side timings).
bool enabled_unless_environment_says_0(const char* variable) {
    const char* value = std::getenv(variable);
    return value == nullptr || std::strcmp(value, "0") != 0;
}
std::atomic<bool> attention_tensor_cores_flag{enabled_unless_environment_says_0("KASMINA_ATTENTION_TENSOR_CORES")};
std::atomic<bool> matmul_tensor_cores_flag{enabled_unless_environment_says_0("KASMINA_MATMUL_TENSOR_CORES")};
std::atomic<bool> convolution_winograd_flag{enabled_unless_environment_says_0("KASMINA_CONVOLUTION_WINOGRAD")};
std::atomic<bool> batch_norm_on_chip_flag{enabled_unless_environment_says_0("KASMINA_BATCH_NORM_ON_CHIP")};
std::atomic<size_t> attention_workspace{size_t{64} << 20};
ConvolutionTensorCores convolution_mode_from_environment() {
    const char* value = std::getenv("KASMINA_CONVOLUTION_TENSOR_CORES");
    if (value != nullptr && std::strcmp(value, "0") == 0) return ConvolutionTensorCores::off;
    if (value != nullptr && std::strcmp(value, "always") == 0) return ConvolutionTensorCores::always;
    return ConvolutionTensorCores::measured;
}
std::atomic<ConvolutionTensorCores> convolution_mode{convolution_mode_from_environment()};
}

void set_allow_tf32(bool allow) { allow_tf32_flag.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return allow_tf32_flag.load(std::memory_order_relaxed); }
void set_fused_attention(bool enable) { fused_attention_flag.store(enable, std::memory_order_relaxed); }
bool fused_attention() { return fused_attention_flag.load(std::memory_order_relaxed); }
void set_attention_tensor_cores(bool enable) { attention_tensor_cores_flag.store(enable, std::memory_order_relaxed); }
bool attention_tensor_cores() { return attention_tensor_cores_flag.load(std::memory_order_relaxed); }
void set_matmul_tensor_cores(bool enable) { matmul_tensor_cores_flag.store(enable, std::memory_order_relaxed); }
bool matmul_tensor_cores() { return matmul_tensor_cores_flag.load(std::memory_order_relaxed); }
void set_convolution_tensor_cores(ConvolutionTensorCores mode) { convolution_mode.store(mode, std::memory_order_relaxed); }
ConvolutionTensorCores convolution_tensor_cores() { return convolution_mode.load(std::memory_order_relaxed); }
void set_convolution_winograd(bool enable) { convolution_winograd_flag.store(enable, std::memory_order_relaxed); }
bool convolution_winograd() { return convolution_winograd_flag.load(std::memory_order_relaxed); }
void set_batch_norm_on_chip(bool enable) { batch_norm_on_chip_flag.store(enable, std::memory_order_relaxed); }
bool batch_norm_on_chip() { return batch_norm_on_chip_flag.load(std::memory_order_relaxed); }
void set_attention_workspace_bytes(size_t bytes) { attention_workspace.store(bytes, std::memory_order_relaxed); }
size_t attention_workspace_bytes() { return attention_workspace.load(std::memory_order_relaxed); }
}  // namespace kasmina
