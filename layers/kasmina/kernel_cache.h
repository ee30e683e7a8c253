// The kernel cache: per process, shared by every Kasmina layer, keyed by (kernel id, device),
// bounded by entry count and bytes, least-recently-used eviction. A hit touches no disk and copies
// no weights (the caller gets the cached, device-resident artifact); a miss reads the store,
// validates and uploads once. Entries are shared_ptrs: evicting one that a seed still uses only
// drops the cache's reference. Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>

#include "layers/kasmina/artifact.h"
#include "layers/kasmina/kernel_store.h"

namespace kasmina::morph {

struct CacheOptions {
    size_t max_entries = 64;
    uint64_t max_bytes = 256ull << 20;
    ArtifactLimits artifact_limits;  // what a kernel file may declare before it is refused
};

struct CacheStats {
    uint64_t hits = 0, misses = 0, evictions = 0;
    uint64_t entries = 0, bytes = 0;  // what the cache holds now
};

// One validated artifact with its weights on `device`.
struct CachedKernel {
    uint64_t id = 0;
    Device device;
    KernelArtifact artifact;
    uint64_t bytes = 0;  // weight bytes
};

class KernelCache {
public:
    explicit KernelCache(std::shared_ptr<KernelStore> store, CacheOptions options = {});

    // The artifact `id` with weights on `device`; raises ArtifactError when the store lacks it or it
    // is invalid (nothing is cached then).
    std::shared_ptr<const CachedKernel> get(uint64_t id, Device device);
    bool contains(uint64_t id, Device device) const;
    CacheStats stats() const;
    void clear();  // drops every entry (seeds keep the ones they use)

    const std::shared_ptr<KernelStore>& store() const { return store_; }
    const CacheOptions& options() const { return options_; }

private:
    using Key = std::pair<uint64_t, std::string>;  // (id, device string)
    struct Entry {
        std::shared_ptr<const CachedKernel> kernel;
        std::list<Key>::iterator position;  // in recency_, most recent first
    };
    void evict_to_limits();  // under mutex_

    std::shared_ptr<KernelStore> store_;
    CacheOptions options_;
    mutable std::mutex mutex_;
    std::map<Key, Entry> entries_;
    std::list<Key> recency_;
    CacheStats stats_;
};

}  // namespace kasmina::morph
