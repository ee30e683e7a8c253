// Memory for tensor storage. Each device type has one Allocator; the CPU one returns 64-byte
// aligned blocks, the CUDA one (built with CUDA) device memory. Storage asks through this interface
// only, so a caching allocator can replace the plain one without touching tensors.
#pragma once

#include <cstddef>
#include <memory>

#include "runtime/device.h"

namespace kasmina {

class Allocator {
public:
    virtual ~Allocator() = default;
    // Returns a block of at least `bytes` bytes (nullptr only when bytes == 0); raises on failure.
    virtual void* allocate(size_t bytes) = 0;
    virtual void deallocate(void* pointer, size_t bytes) = 0;
};

constexpr size_t kCpuAlignment = 64;

// The allocator that serves `device` (a process-wide instance per device type).
Allocator& allocator_for(Device device);

}  // namespace kasmina
