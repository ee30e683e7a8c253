#include "runtime/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "runtime/error.h"
#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace kasmina {
namespace {

class CpuAlignedAllocator final : public Allocator {
public:
    void* allocate(size_t bytes) override {
        if (bytes == 0) return nullptr;
        const size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
        void* pointer = std::aligned_alloc(kCpuAlignment, rounded);
        if (pointer == nullptr)
            throw Error(make_message("cpu allocator: failed to allocate ", bytes, " bytes"));
        if (poison_allocations()) std::memset(pointer, 0xFF, rounded);
        allocations_.fetch_add(1, std::memory_order_relaxed);
        const uint64_t in_use = bytes_in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
        uint64_t peak = peak_bytes_.load(std::memory_order_relaxed);
        while (in_use > peak && !peak_bytes_.compare_exchange_weak(peak, in_use, std::memory_order_relaxed)) {
        }
        return pointer;
    }
    void deallocate(void* pointer, size_t bytes) override {
        if (pointer == nullptr) return;
        std::free(pointer);
        bytes_in_use_.fetch_sub(bytes, std::memory_order_relaxed);
    }
    AllocatorStats stats() const override {
        const uint64_t in_use = bytes_in_use_.load(std::memory_order_relaxed);
        return {allocations_.load(std::memory_order_relaxed), in_use, peak_bytes_.load(std::memory_order_relaxed), in_use, 0};
    }

private:
    std::atomic<uint64_t> allocations_{0}, bytes_in_use_{0}, peak_bytes_{0};
};

}  // namespace

bool poison_allocations() {
    static const bool poison = [] {
        const char* value = std::getenv("KASMINA_POISON_ALLOCATIONS");
        return value != nullptr && std::string(value) == "1";
    }();
    return poison;
}

namespace {
thread_local Allocator* allocator_overrides[2] = {nullptr, nullptr};  // by DeviceType
}  // namespace

ScopedAllocatorOverride::ScopedAllocatorOverride(DeviceType type, Allocator& allocator)
    : type_(type), previous_(allocator_overrides[static_cast<int>(type)]) {
    allocator_overrides[static_cast<int>(type)] = &allocator;
}

ScopedAllocatorOverride::~ScopedAllocatorOverride() { allocator_overrides[static_cast<int>(type_)] = previous_; }

Allocator& allocator_for(Device device) {
    if (Allocator* replacement = allocator_overrides[static_cast<int>(device.type)]) return *replacement;
    static CpuAlignedAllocator cpu_allocator;
    if (device.is_cpu()) return cpu_allocator;
#ifdef KASMINA_WITH_CUDA
    return cuda::allocator(device.index);
#else
    throw DeviceError(make_message("allocator: device ", device.str(),
                                   " requested but this build of kasmina has no CUDA support"));
#endif
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), allocator_(&allocator_for(device)), device_(device) {
    data_ = allocator_->allocate(bytes);
}

Storage::Storage(void* data, size_t bytes, Device device, std::function<void()> release)
    : data_(data), bytes_(bytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
    if (release_) {
        release_();
    } else if (data_ != nullptr) {
        allocator_->deallocate(data_, bytes_);
    }
}

}  // namespace kasmina
