// Asynchronous copies from global to shared memory (cp.async, sm_80 and later): the loads of the
// tensor-core kernels' tiles and of the batch norm that holds its batch on chip.
#pragma once

#include <cstdint>

// The sm_80 instructions (cp.async here, the TF32 conversions and MMAs in tf32x3.cuh): a build for
// older GPUs compiles them to a trap, and the callers check the device's compute capability first.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define KASMINA_SM80_ASM(...) asm(__VA_ARGS__)
#define KASMINA_SM80_ASM_VOLATILE(...) asm volatile(__VA_ARGS__)
#else
#define KASMINA_SM80_ASM(...) __trap()
#define KASMINA_SM80_ASM_VOLATILE(...) __trap()
#endif

namespace kasmina::kernels::cuda {

// Copies 16 bytes from global to shared memory asynchronously (cp.async), or zero-fills them when
// `inside` is false (source size 0: nothing is read, but `source` must still be a valid address).
// The caller commits its copies as a group and waits for the group before its barrier.
__device__ __forceinline__ void cp_async_16(float* destination, const float* source, bool inside) {
    const auto shared = static_cast<uint32_t>(__cvta_generic_to_shared(destination));
    KASMINA_SM80_ASM_VOLATILE("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(source),
                              "r"(inside ? 16 : 0));
}

// The same for 4 bytes (for operands gathered one float at a time, like an image read as im2col).
__device__ __forceinline__ void cp_async_4(float* destination, const float* source, bool inside) {
    const auto shared = static_cast<uint32_t>(__cvta_generic_to_shared(destination));
    KASMINA_SM80_ASM_VOLATILE("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared), "l"(source),
                              "r"(inside ? 4 : 0));
}

__device__ __forceinline__ void cp_async_commit() { KASMINA_SM80_ASM_VOLATILE("cp.async.commit_group;\n" ::); }

// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    KASMINA_SM80_ASM_VOLATILE("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kasmina::kernels::cuda
