// The CPU allocator's cache of large blocks: a freed block of 256 KiB or more comes back for the next
// request of its size (no fresh pages to fault in), counts as reserved while cached, stays within the
// cache limit, and empty_cache() hands it back to the system.
#include "runtime/allocator.h"
#include "test_util.h"

using namespace kasmina;

namespace {
// Caching on (1 GiB) for the test, whatever the build's default; the default and an empty cache after.
struct CacheLimit {
    size_t previous = cpu_cache_limit();
    CacheLimit() { set_cpu_cache_limit(size_t{1} << 30); }
    ~CacheLimit() {
        set_cpu_cache_limit(previous);
        allocator_for(Device::cpu()).empty_cache();
    }
};
}  // namespace

TEST(CpuAllocator, AFreedLargeBlockServesTheNextRequestOfItsSize) {
    CacheLimit restore;
    Allocator& allocator = allocator_for(Device::cpu());
    allocator.empty_cache();
    const size_t bytes = (size_t{4} << 20) + 100;  // 4 MiB and a bit: page-rounded
    const AllocatorStats start = allocator.stats();
    void* first = allocator.allocate(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % kCpuAlignment, 0u);
    allocator.deallocate(first, bytes);
    const AllocatorStats cached = allocator.stats();
    EXPECT_EQ(cached.bytes_in_use, start.bytes_in_use);
    EXPECT_GE(cached.reserved_bytes, start.reserved_bytes + bytes) << "the freed block is kept";
    void* again = allocator.allocate(bytes - 50);  // another size that rounds to the same pages
    EXPECT_EQ(again, first);
    EXPECT_EQ(allocator.stats().allocations, cached.allocations + 1);
    allocator.deallocate(again, bytes - 50);
    allocator.empty_cache();
    EXPECT_EQ(allocator.stats().reserved_bytes, allocator.stats().bytes_in_use) << "nothing cached after empty_cache";
}

TEST(CpuAllocator, SmallBlocksAreNotCachedAndTheCacheStaysWithinItsLimit) {
    CacheLimit restore;
    Allocator& allocator = allocator_for(Device::cpu());
    allocator.empty_cache();
    void* small = allocator.allocate(1000);
    allocator.deallocate(small, 1000);
    EXPECT_EQ(allocator.stats().reserved_bytes, allocator.stats().bytes_in_use);

    set_cpu_cache_limit(size_t{9} << 20);  // room for two blocks of 4 MiB
    const size_t block = size_t{4} << 20;
    void* blocks[3] = {allocator.allocate(block), allocator.allocate(block), allocator.allocate(block)};
    for (void* b : blocks) allocator.deallocate(b, block);
    EXPECT_EQ(allocator.stats().reserved_bytes - allocator.stats().bytes_in_use, 2 * block);
    set_cpu_cache_limit(block);  // below what is cached: the cache is freed
    EXPECT_EQ(allocator.stats().reserved_bytes, allocator.stats().bytes_in_use);
    set_cpu_cache_limit(0);  // caching off
    allocator.deallocate(allocator.allocate(block), block);
    EXPECT_EQ(allocator.stats().reserved_bytes, allocator.stats().bytes_in_use);
}

TEST(CpuAllocator, TensorsReuseCachedBlocksWithTheirContentsFullyRewritten) {
    CacheLimit restore;
    const void* address = nullptr;
    {
        const Tensor gone = Tensor::full({512, 512}, 7.0);  // 1 MiB
        address = gone.raw_data();
    }
    const Tensor reused = Tensor::zeros({512, 512});
    EXPECT_EQ(reused.raw_data(), address) << "the freed block came back";
    EXPECT_EQ(max(abs(reused)).item(), 0.0);
}
