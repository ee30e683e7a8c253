// Where an op meets its backend: KASMINA_BACKEND(device, function, args...) calls
// cpu::function(args...) for a CPU device and cuda::function(args...) for a CUDA device (made current
// first). In a build without CUDA a CUDA device raises DeviceError naming the function. Every
// dispatch function (dispatch.cpp, convolution.cpp, normalization.cpp, blend.cpp) calls its backend
// through this one macro.
#pragma once

#include "runtime/device.h"

#ifdef KASMINA_WITH_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace kasmina::kernels {

// Raises DeviceError unless this build has a backend for `device`; makes a CUDA device current.
void select_backend(Device device, const char* op);

}  // namespace kasmina::kernels

#ifdef KASMINA_WITH_CUDA
#define KASMINA_BACKEND(device, function, ...)                                      \
    do {                                                                            \
        const ::kasmina::Device kasmina_backend_device = (device);                 \
        ::kasmina::kernels::select_backend(kasmina_backend_device, #function);     \
        if (kasmina_backend_device.is_cpu())                                        \
            ::kasmina::kernels::cpu::function(__VA_ARGS__);                         \
        else                                                                        \
            ::kasmina::kernels::cuda::function(__VA_ARGS__);                        \
    } while (0)
#else
#define KASMINA_BACKEND(device, function, ...)                   \
    do {                                                         \
        ::kasmina::kernels::select_backend((device), #function); \
        ::kasmina::kernels::cpu::function(__VA_ARGS__);          \
    } while (0)
#endif
