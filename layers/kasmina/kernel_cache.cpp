#include "layers/kasmina/kernel_cache.h"

#include "runtime/dtype.h"

namespace kasmina::morph {

KernelCache::KernelCache(std::shared_ptr<KernelStore> store, CacheOptions options)
    : store_(std::move(store)), options_(options) {
    if (!store_) raise<Error>("KernelCache", "needs a kernel store");
    if (options_.max_entries == 0) raise<Error>("KernelCache", "max_entries must be at least 1");
}

std::shared_ptr<const CachedKernel> KernelCache::get(uint64_t id, Device device) {
    const Key key{id, device.str()};
    {
        std::lock_guard lock(mutex_);
        if (const auto found = entries_.find(key); found != entries_.end()) {
            recency_.splice(recency_.begin(), recency_, found->second.position);
            ++stats_.hits;
            return found->second.kernel;
        }
        ++stats_.misses;
    }
    // Miss: read, validate and upload outside the lock so hits on other kernels never wait on disk.
    const std::vector<uint8_t> bytes = store_->read(id);
    auto kernel = std::make_shared<CachedKernel>();
    kernel->id = id;
    kernel->device = device;
    kernel->artifact = parse_artifact(bytes.data(), bytes.size(), store_->describe() + " kernel " + format_kernel_id(id),
                                      options_.artifact_limits);
    for (auto& [name, tensor] : kernel->artifact.tensors) {
        if (!device.is_cpu()) tensor = tensor.to(device);
        kernel->bytes += static_cast<uint64_t>(tensor.numel()) * dtype_size(tensor.dtype());
    }

    std::lock_guard lock(mutex_);
    if (const auto found = entries_.find(key); found != entries_.end()) return found->second.kernel;  // loaded meanwhile
    if (kernel->bytes > options_.max_bytes) return kernel;  // larger than the whole cache: used, not kept
    recency_.push_front(key);
    entries_.emplace(key, Entry{kernel, recency_.begin()});
    stats_.bytes += kernel->bytes;
    evict_to_limits();
    return kernel;
}

void KernelCache::evict_to_limits() {
    while (!recency_.empty() && (entries_.size() > options_.max_entries || stats_.bytes > options_.max_bytes)) {
        const Key oldest = recency_.back();
        recency_.pop_back();
        const auto found = entries_.find(oldest);
        stats_.bytes -= found->second.kernel->bytes;
        entries_.erase(found);
        ++stats_.evictions;
    }
}

bool KernelCache::contains(uint64_t id, Device device) const {
    std::lock_guard lock(mutex_);
    return entries_.count({id, device.str()}) != 0;
}

CacheStats KernelCache::stats() const {
    std::lock_guard lock(mutex_);
    CacheStats stats = stats_;
    stats.entries = entries_.size();
    return stats;
}

void KernelCache::clear() {
    std::lock_guard lock(mutex_);
    entries_.clear();
    recency_.clear();
    stats_.bytes = 0;
}

}  // namespace kasmina::morph
