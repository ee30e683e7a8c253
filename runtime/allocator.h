// Memory for tensor storage. Each device type has one Allocator; the CPU one returns 64-byte
// aligned blocks, the CUDA one (built with CUDA) device memory. Storage asks through this interface
// only, so a caching allocator can replace the plain one without touching tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "runtime/device.h"

namespace kasmina {

// Counters an allocator keeps (the CPU one always; they cost one relaxed atomic per call).
struct AllocatorStats {
    uint64_t allocations = 0;   // blocks handed out since the process started
    uint64_t bytes_in_use = 0;  // requested bytes not yet returned
    uint64_t peak_bytes = 0;    // the highest bytes_in_use seen
    uint64_t reserved_bytes = 0;  // held from the device/system (caching allocators keep freed blocks)
    uint64_t device_allocations = 0;  // calls to the underlying allocator (cudaMalloc); 0 for the CPU
};

class Allocator {
public:
    virtual ~Allocator() = default;
    // Returns a block of at least `bytes` bytes (nullptr only when bytes == 0); raises on failure.
    virtual void* allocate(size_t bytes) = 0;
    virtual void deallocate(void* pointer, size_t bytes) = 0;
    virtual AllocatorStats stats() const { return {}; }
    // Starts a new peak: stats().peak_bytes becomes today's bytes_in_use (to measure one step's peak).
    virtual void reset_peak() {}
    // Returns cached, unused memory to the device (caching allocators); a no-op elsewhere.
    virtual void empty_cache() {}
};

constexpr size_t kCpuAlignment = 64;

// The most bytes of freed host blocks (256 KiB and up) the CPU allocator keeps for reuse; default 1 GiB,
// or KASMINA_CPU_CACHE_MB (0 under AddressSanitizer/ThreadSanitizer builds, so they still see every free).
// Lowering it below what is cached frees the cache; 0 turns caching off.
// allocator_for(Device::cpu()).empty_cache() frees the cached blocks now; stats().reserved_bytes counts them.
void set_cpu_cache_limit(size_t bytes);
size_t cpu_cache_limit();

// True when KASMINA_POISON_ALLOCATIONS=1: every new block is filled with 0xFF bytes (NaN for floats)
// so a kernel that leaves part of its output unwritten shows up in the tests. Read once per process.
bool poison_allocations();

// The allocator that serves `device` (a process-wide instance per device type, unless this thread
// has an override in place).
Allocator& allocator_for(Device device);

// While it lives, this thread's allocations on `type` go to `allocator` (fault injection: an
// allocator that fails on chosen calls). Each block goes back to the allocator that made it, so
// `allocator` must outlive the tensors allocated through it. Overrides nest.
class ScopedAllocatorOverride {
public:
    ScopedAllocatorOverride(DeviceType type, Allocator& allocator);
    ~ScopedAllocatorOverride();
    ScopedAllocatorOverride(const ScopedAllocatorOverride&) = delete;
    ScopedAllocatorOverride& operator=(const ScopedAllocatorOverride&) = delete;

private:
    DeviceType type_;
    Allocator* previous_;
};

}  // namespace kasmina
