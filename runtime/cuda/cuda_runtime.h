// The CUDA side of the runtime: device discovery, memory and copies. Compiled only when kasmina is
// built with CUDA (KASMINA_WITH_CUDA); callers guard with that macro.
#pragma once

#include <cstddef>

namespace kasmina {
class Tensor;
class Allocator;
}  // namespace kasmina

namespace kasmina::cuda {

int device_count();
// Makes `device` the calling thread's current CUDA device (raises DeviceError if it does not exist).
void make_current(int device);
void synchronize(int device);
Allocator& allocator(int device);

enum class CopyKind { host_to_device, device_to_host, device_to_device };
// Copies `bytes` contiguous bytes; synchronous with respect to the host for device_to_host.
void copy_bytes(void* destination, const void* source, size_t bytes, CopyKind kind, int device);

// Element-wise strided copy with dtype conversion between two tensors on the same CUDA device
// (destination shape; source already broadcast to it by the caller's strides).
void strided_copy(const Tensor& destination, const Tensor& source_broadcast);
void fill(const Tensor& destination, double value);

}  // namespace kasmina::cuda
