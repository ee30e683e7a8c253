// Turns a failed CUDA runtime call into kasmina::DeviceError naming the call, the error code and text.
#pragma once

#include <cuda_runtime.h>

#include "runtime/error.h"

#define KASMINA_CUDA_CHECK(call)                                                                      \
    do {                                                                                               \
        const cudaError_t kasmina_status = (call);                                                     \
        if (kasmina_status != cudaSuccess)                                                             \
            throw ::kasmina::DeviceError(::kasmina::make_message(#call, " failed: ",                   \
                                                                 cudaGetErrorName(kasmina_status), " (", \
                                                                 static_cast<int>(kasmina_status), "): ", \
                                                                 cudaGetErrorString(kasmina_status)));  \
    } while (0)
