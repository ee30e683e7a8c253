// The CUDA side of the runtime: device discovery, memory and copies (streams and events: stream.h). Compiled only when
// kasmina is built with CUDA (KASMINA_WITH_CUDA); callers guard with that macro.
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
// Waits for all work on `device`, on every stream.
void synchronize(int device);
Allocator& allocator(int device);

enum class CopyKind { host_to_device, device_to_host, device_to_device };
// Copies `bytes` contiguous bytes on `device`'s current stream. When it returns, a host source may be
// freed or changed and a host destination holds the data; device-side work stays stream-ordered.
// From pageable host memory, copies of kStagedCopyThreshold bytes or more pass through pinned chunks of
// kStagingChunkBytes (the host copy of one chunk overlapping the DMA of the other).
void copy_bytes(void* destination, const void* source, size_t bytes, CopyKind kind, int device);
constexpr size_t kStagedCopyThreshold = size_t{256} << 10;
constexpr size_t kStagingChunkBytes = size_t{4} << 20;

// Pinned (page-locked) host memory, for copies the host does not wait on.
void* allocate_pinned(size_t bytes);
void free_pinned(void* pointer);
// Queues a device-to-host copy into pinned `destination` on `device`'s current stream and returns at
// once; the data is there when an event recorded on that stream afterwards has completed.
void copy_to_host_async(void* destination, const void* source, size_t bytes, int device);

// Element-wise strided copy with dtype conversion between two tensors on the same CUDA device
// (destination shape; source already broadcast to it by the caller's strides).
void strided_copy(const Tensor& destination, const Tensor& source_broadcast);
void fill(const Tensor& destination, double value);

}  // namespace kasmina::cuda
