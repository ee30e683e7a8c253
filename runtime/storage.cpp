#include "runtime/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>
#include <string>
#include <utility>

#include "runtime/error.h"
#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace kasmina {
namespace {

// 64-byte aligned host memory. Blocks of kCachedBlockBytes or more are kept when freed (up to the cache
// limit in all) and handed out again for requests of the same page-rounded size: glibc gives freed large
// blocks back to the system, and the next block of that size then takes a page fault per 4 KiB page on
// first touch (~1 ms for 4 MiB), more than the kernels that fill it. A training loop asks for the same
// sizes every step, so after the first step it touches no fresh pages (LayerNorm forward + backward at
// [2048, 512], 2 threads: 2.7 ms -> 0.9 ms).
class CpuAlignedAllocator final : public Allocator {
public:
    static constexpr size_t kCachedBlockBytes = size_t{1} << 18;  // 256 KiB
    static constexpr size_t kPage = 4096;

    void* allocate(size_t bytes) override {
        if (bytes == 0) return nullptr;
        const size_t rounded = rounded_size(bytes);
        void* pointer = rounded >= kCachedBlockBytes ? take_cached(rounded) : nullptr;
        if (pointer == nullptr) {
            pointer = std::aligned_alloc(kCpuAlignment, rounded);
            if (pointer == nullptr) throw Error(make_message("cpu allocator: failed to allocate ", bytes, " bytes"));
        }
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
        bytes_in_use_.fetch_sub(bytes, std::memory_order_relaxed);
        const size_t rounded = rounded_size(bytes);
        if (rounded >= kCachedBlockBytes) {
            std::lock_guard lock(mutex_);
            if (cached_bytes_ + rounded <= cache_limit_) {
                free_blocks_[rounded].push_back(pointer);
                cached_bytes_ += rounded;
                return;
            }
        }
        std::free(pointer);
    }
    AllocatorStats stats() const override {
        const uint64_t in_use = bytes_in_use_.load(std::memory_order_relaxed);
        std::lock_guard lock(mutex_);
        return {allocations_.load(std::memory_order_relaxed), in_use, peak_bytes_.load(std::memory_order_relaxed),
                in_use + cached_bytes_, 0};
    }
    void reset_peak() override { peak_bytes_.store(bytes_in_use_.load(std::memory_order_relaxed), std::memory_order_relaxed); }
    void empty_cache() override {
        std::lock_guard lock(mutex_);
        for (auto& [size, blocks] : free_blocks_)
            for (void* block : blocks) std::free(block);
        free_blocks_.clear();
        cached_bytes_ = 0;
    }
    size_t cache_limit() const {
        std::lock_guard lock(mutex_);
        return cache_limit_;
    }
    void set_cache_limit(size_t bytes) {
        {
            std::lock_guard lock(mutex_);
            cache_limit_ = bytes;
            if (cached_bytes_ <= cache_limit_) return;
        }
        empty_cache();
    }

private:
    static size_t rounded_size(size_t bytes) {
        const size_t unit = bytes >= kCachedBlockBytes ? kPage : kCpuAlignment;
        return (bytes + unit - 1) / unit * unit;
    }
    void* take_cached(size_t rounded) {
        std::lock_guard lock(mutex_);
        const auto found = free_blocks_.find(rounded);
        if (found == free_blocks_.end() || found->second.empty()) return nullptr;
        void* pointer = found->second.back();
        found->second.pop_back();
        cached_bytes_ -= rounded;
        return pointer;
    }
    std::atomic<uint64_t> allocations_{0}, bytes_in_use_{0}, peak_bytes_{0};
    mutable std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by rounded size
    size_t cached_bytes_ = 0;
    size_t cache_limit_ = default_cache_limit();

    static size_t default_cache_limit() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        return 0;  // under the sanitizers every block goes back to them, so a use after free is still caught
#endif
        const char* value = std::getenv("KASMINA_CPU_CACHE_MB");
        if (value == nullptr || *value == '\0') return size_t{1} << 30;  // 1 GiB
        char* end = nullptr;
        const unsigned long long megabytes = std::strtoull(value, &end, 10);
        return end != value && *end == '\0' ? static_cast<size_t>(megabytes) << 20 : size_t{1} << 30;
    }
};

// Never destroyed: tensors in static storage may still free their blocks during exit.
CpuAlignedAllocator& cpu_allocator() {
    static CpuAlignedAllocator* const allocator = new CpuAlignedAllocator;
    return *allocator;
}

}  // namespace

void set_cpu_cache_limit(size_t bytes) { cpu_allocator().set_cache_limit(bytes); }
size_t cpu_cache_limit() { return cpu_allocator().cache_limit(); }

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
    if (device.is_cpu()) return cpu_allocator();
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
