#include "kernels/backend.h"

#include "runtime/error.h"
#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace kasmina::kernels {

void select_backend(Device device, const char* op) {
    if (device.is_cpu()) return;
#ifdef KASMINA_WITH_CUDA
    ::kasmina::cuda::make_current(device.index);
#else
    raise<DeviceError>(op, "device ", device.str(),
                       " needs the CUDA backend, which this build lacks (configure with KASMINA_CUDA=ON on a machine with "
                       "nvcc); move operands with .to(cpu)");
#endif
}

}  // namespace kasmina::kernels
