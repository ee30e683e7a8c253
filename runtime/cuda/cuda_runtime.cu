// Device discovery, the stream-ordered caching device-memory allocator, and copies for CUDA tensors.
#include <algorithm>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/stream.h"
#include "runtime/tensor.h"

namespace kasmina::cuda {

int device_count() {
    static const int count = [] {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess) {
            cudaGetLastError();  // clear the sticky "no driver/no device" error
            return 0;
        }
        return devices;
    }();
    return count;
}

void make_current(int device) {
    if (device < 0 || device >= device_count())
        raise<DeviceError>("cuda", "device cuda:", device, " is not available (", device_count(), " visible)");
    int current = -1;
    KASMINA_CUDA_CHECK(cudaGetDevice(&current));
    if (current != device) KASMINA_CUDA_CHECK(cudaSetDevice(device));
}

void synchronize(int device) {
    make_current(device);
    KASMINA_CUDA_CHECK(cudaDeviceSynchronize());
}

namespace {

// A stream-ordered caching allocator. A block belongs to the stream that was current when its segment
// was allocated; once freed it returns to that stream's pool and is handed out again only on that
// stream, where later work is ordered after the kernels that used it, so no synchronization is needed.
// A block also used on other streams (record_stream) waits for events recorded on them at free time.
// Requests are rounded to 512 bytes; small ones (< 1 MiB) are carved from 2 MiB segments, large ones
// get their own segment rounded to 2 MiB; free blocks are found best fit within the stream's pool,
// split when the rest is worth keeping, and merged with free neighbours (same segment, so same
// stream) on release. In steady state no cudaMalloc/cudaFree happens. empty_cache() returns wholly
// free segments to the driver.
class CachingCudaAllocator final : public Allocator {
public:
    explicit CachingCudaAllocator(int device) : device_(device) {}
    ~CachingCudaAllocator() override = default;  // the driver reclaims device memory and events at exit

    void* allocate(size_t bytes) override {
        if (bytes == 0) return nullptr;
        const size_t size = round_up(bytes, kRound);
        const cudaStream_t stream = current_stream(device_).raw();
        std::lock_guard lock(mutex_);
        if (!pending_frees_.empty()) collect_pending_frees(/*wait=*/false);
        Block* block = take_free(size, stream);
        if (block == nullptr) block = new_segment(size, stream);
        if (block->size - size >= (size < kSmall ? kRound : kSmall)) split(block, size);
        block->allocated = true;
        if (poison_allocations()) {
            DeviceGuard guard(device_);  // the default stream (nullptr) is the current device's
            KASMINA_CUDA_CHECK(cudaMemsetAsync(block->pointer, 0xFF, block->size, stream));
        }
        live_.emplace(block->pointer, block);
        ++stats_.allocations;
        stats_.bytes_in_use += block->size;
        stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.bytes_in_use);
        return block->pointer;
    }

    void deallocate(void* pointer, size_t) override {
        if (pointer == nullptr) return;
        std::lock_guard lock(mutex_);
        const auto found = live_.find(pointer);
        if (found == live_.end()) return;  // not ours: nothing sensible to do in a destructor path
        Block* block = found->second;
        live_.erase(found);
        stats_.bytes_in_use -= block->size;
        if (block->used_on.empty())
            release(block);
        else
            hold_until_streams_finish(block);
    }

    // Adds `stream` to the streams whose work must finish before `pointer`'s block is reused.
    void record_stream(void* pointer, const Stream& stream) {
        if (stream.device() != device_)
            raise<DeviceError>("record_stream", "a stream of cuda:", stream.device(), " for memory of cuda:", device_);
        std::lock_guard lock(mutex_);
        const auto found = live_.find(pointer);
        if (found == live_.end())
            raise<DeviceError>("record_stream", "the pointer is not a live block of cuda:", device_, "'s allocator");
        Block* block = found->second;
        if (stream.raw() != block->stream &&
            std::find(block->used_on.begin(), block->used_on.end(), stream.raw()) == block->used_on.end())
            block->used_on.push_back(stream.raw());
    }

    AllocatorStats stats() const override {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    void reset_peak() override {
        std::lock_guard lock(mutex_);
        stats_.peak_bytes = stats_.bytes_in_use;
    }

    void empty_cache() override {
        std::lock_guard lock(mutex_);
        collect_pending_frees(/*wait=*/true);
        release_free_segments();
    }

private:
    static constexpr size_t kRound = 512, kSmall = 1 << 20, kSegment = 2 << 20;
    struct Block {
        char* pointer = nullptr;
        size_t size = 0;
        cudaStream_t stream = nullptr;  // the stream whose pool the block belongs to
        bool allocated = false;         // live, or freed but waiting for pending_events
        int pending_events = 0;
        std::vector<cudaStream_t> used_on;           // other streams recorded with record_stream
        Block *previous = nullptr, *next = nullptr;  // neighbours inside one cudaMalloc segment
    };
    // Free blocks ordered by (stream, size, address): lower_bound finds a stream's best fit.
    struct ByStreamAndSize {
        bool operator()(const Block* a, const Block* b) const {
            const auto key = [](const Block* block) {
                return std::tuple(reinterpret_cast<uintptr_t>(block->stream), block->size,
                                  reinterpret_cast<uintptr_t>(block->pointer));
            };
            return key(a) < key(b);
        }
    };
    static size_t round_up(size_t value, size_t step) { return (value + step - 1) / step * step; }

    Block* take_free(size_t size, cudaStream_t stream) {
        Block key;
        key.size = size;
        key.stream = stream;
        const auto found = free_.lower_bound(&key);
        if (found == free_.end() || (*found)->stream != stream) return nullptr;
        Block* block = *found;
        free_.erase(found);
        return block;
    }

    // Back to its stream's pool, merged with free neighbours.
    void release(Block* block) {
        block->allocated = false;
        if (block->next && !block->next->allocated) block = merge(block, block->next);
        if (block->previous && !block->previous->allocated) block = merge(block->previous, block);
        free_.insert(block);
    }

    // Records an event on every other stream the block was used on; the block is released when all
    // have completed (collect_pending_frees). Runs in a destructor path, so it must not throw.
    void hold_until_streams_finish(Block* block) {
        const std::vector<cudaStream_t> streams = std::exchange(block->used_on, {});
        try {
            DeviceGuard guard(device_);
            for (const cudaStream_t stream : streams) {
                cudaEvent_t event = take_spare_event();
                KASMINA_CUDA_CHECK(cudaEventRecord(event, stream));
                pending_frees_.push_back({event, block});
                ++block->pending_events;
            }
        } catch (const std::exception&) {
            for (const cudaStream_t stream : streams) cudaStreamSynchronize(stream);  // the safe fallback
            cudaGetLastError();
        }
        if (block->pending_events == 0) release(block);
    }

    cudaEvent_t take_spare_event() {
        if (spare_events_.empty()) {
            cudaEvent_t event = nullptr;
            KASMINA_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
            return event;
        }
        cudaEvent_t event = spare_events_.back();
        spare_events_.pop_back();
        return event;
    }

    // Releases the blocks whose streams have finished with them (all of them when `wait`).
    void collect_pending_frees(bool wait) {
        for (auto it = pending_frees_.begin(); it != pending_frees_.end();) {
            const cudaError_t status = wait ? cudaEventSynchronize(it->event) : cudaEventQuery(it->event);
            if (status != cudaSuccess) cudaGetLastError();  // not ready, or a failure already reported elsewhere
            if (status == cudaErrorNotReady) {
                ++it;
                continue;
            }
            spare_events_.push_back(it->event);
            if (--it->block->pending_events == 0) release(it->block);
            it = pending_frees_.erase(it);
        }
    }

    void release_free_segments() {  // under mutex_
        DeviceGuard guard(device_);
        for (auto it = free_.begin(); it != free_.end();) {
            Block* block = *it;
            if (block->previous == nullptr && block->next == nullptr) {  // a whole free segment
                it = free_.erase(it);
                cudaFree(block->pointer);
                stats_.reserved_bytes -= block->size;
                blocks_.erase(block);
            } else {
                ++it;
            }
        }
    }

    Block* new_segment(size_t size, cudaStream_t stream) {
        const size_t segment = size < kSmall ? kSegment : round_up(size, kSegment);
        DeviceGuard guard(device_);
        void* pointer = nullptr;
        cudaError_t status = cudaMalloc(&pointer, segment);
        if (status == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            collect_pending_frees(/*wait=*/true);
            release_free_segments();
            status = cudaMalloc(&pointer, segment);
        }
        if (status != cudaSuccess) {
            cudaGetLastError();
            raise<DeviceError>("cuda allocator", "cudaMalloc of ", segment, " bytes on cuda:", device_, " failed: ",
                               cudaGetErrorString(status), " (", stats_.bytes_in_use, " bytes in use, ",
                               stats_.reserved_bytes, " reserved)");
        }
        ++stats_.device_allocations;
        stats_.reserved_bytes += segment;
        auto block = std::make_unique<Block>();
        block->pointer = static_cast<char*>(pointer);
        block->size = segment;
        block->stream = stream;
        Block* raw = block.get();
        blocks_.emplace(raw, std::move(block));
        return raw;
    }

    void split(Block* block, size_t size) {
        auto rest = std::make_unique<Block>();
        rest->pointer = block->pointer + size;
        rest->size = block->size - size;
        rest->stream = block->stream;
        rest->previous = block;
        rest->next = block->next;
        if (block->next) block->next->previous = rest.get();
        block->next = rest.get();
        block->size = size;
        free_.insert(rest.get());
        Block* raw = rest.get();
        blocks_.emplace(raw, std::move(rest));
    }

    // Joins `right` into `left` (both free, adjacent); returns left.
    Block* merge(Block* left, Block* right) {
        free_.erase(left);  // before the size (part of the key) changes; a no-op for the block being released
        free_.erase(right);
        left->size += right->size;
        left->next = right->next;
        if (right->next) right->next->previous = left;
        blocks_.erase(right);
        return left;
    }

    struct PendingFree {
        cudaEvent_t event;
        Block* block;
    };

    int device_;
    mutable std::mutex mutex_;
    std::set<Block*, ByStreamAndSize> free_;                   // free blocks of every stream's pool
    std::unordered_map<void*, Block*> live_;                   // allocated blocks by pointer
    std::unordered_map<Block*, std::unique_ptr<Block>> blocks_;  // owns every block
    std::list<PendingFree> pending_frees_;                       // freed blocks waiting for other streams
    std::vector<cudaEvent_t> spare_events_;
    AllocatorStats stats_;
};

constexpr int kMaxRank = 8;

struct StridedGeometry {
    int rank;
    int64_t shape[kMaxRank];
    int64_t destination_strides[kMaxRank];
    int64_t source_strides[kMaxRank];
};

// Offsets of element `linear` of the first `rank` dims (row-major over geometry.shape; all of them unless
// given); one dim (dims collapsed) needs no division.
__device__ inline void strided_offsets(const StridedGeometry& geometry, int64_t linear, int64_t& out_offset,
                                       int64_t& in_offset, int rank = -1) {
    if (rank < 0) rank = geometry.rank;
    if (rank == 1) {
        out_offset = linear * geometry.destination_strides[0];
        in_offset = linear * geometry.source_strides[0];
        return;
    }
    int64_t rest = linear;
    out_offset = 0;
    in_offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
        const int64_t index = rest % geometry.shape[d];
        rest /= geometry.shape[d];
        out_offset += index * geometry.destination_strides[d];
        in_offset += index * geometry.source_strides[d];
    }
}

template <typename Out, typename In>
__global__ void strided_copy_kernel(Out* destination, const In* source, StridedGeometry geometry, int64_t count) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < count;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t out_offset, in_offset;
        strided_offsets(geometry, linear, out_offset, in_offset);
        destination[out_offset] = static_cast<Out>(source[in_offset]);
    }
}

// Where a dense fill's value comes from: a constant from the host (fill_), or one element in device
// memory converted to the destination's type (an expanded scalar, such as the gradient of sum()).
template <typename T>
struct HostValue {
    T value;
    __device__ T operator()() const { return value; }
};
template <typename Out, typename In>
struct DeviceValue {
    const In* value;
    __device__ Out operator()() const { return static_cast<Out>(*value); }
};

// A dense range: 16 bytes of the value's pattern a store, the unaligned head and the tail one element
// at a time. One element a thread took 17 us for 12.6 MB on the H100 (a gradient's zeros, under ncu).
// The driver's memset, tried for zeros, was no faster and takes zeros only.
template <typename T, typename Source>
__global__ void fill_dense_kernel(T* destination, int64_t count, Source source) {
    constexpr int kPer = 16 / sizeof(T);
    const T value = source();
    union {
        uint4 chunk;
        T elements[kPer];
    } pattern;
#pragma unroll
    for (int e = 0; e < kPer; ++e) pattern.elements[e] = value;
    const int64_t misalignment = static_cast<int64_t>(reinterpret_cast<uintptr_t>(destination) % 16);
    const int64_t head = std::min<int64_t>(count, (16 - misalignment) % 16 / static_cast<int64_t>(sizeof(T)));
    const int64_t chunks = (count - head) / kPer, tail = head + chunks * kPer;
    const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    uint4* aligned = reinterpret_cast<uint4*>(destination + head);
    for (int64_t i = first; i < chunks; i += stride) __stcg(aligned + i, pattern.chunk);
    for (int64_t i = first; i < head; i += stride) destination[i] = value;
    for (int64_t i = tail + first; i < count; i += stride) destination[i] = value;
}

template <typename T>
__global__ void fill_kernel(T* destination, StridedGeometry geometry, int64_t count, T value) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < count;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t out_offset, unused;
        strided_offsets(geometry, linear, out_offset, unused);
        destination[out_offset] = value;
    }
}

// Layouts whose innermost dimension is contiguous on both sides (a permute that keeps the last dim, a
// narrowed or transposed-outer view): one warp per run of that dimension, offsets found once per run,
// the run copied by the lanes with coalesced loads and stores.
template <typename Out, typename In>
__global__ void strided_rows_copy_kernel(Out* destination, const In* source, StridedGeometry geometry, int64_t rows) {
    const int last = geometry.rank - 1;
    const int64_t run = geometry.shape[last];
    const int lane = threadIdx.x & 31;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        int64_t out_offset, in_offset;
        strided_offsets(geometry, row, out_offset, in_offset, last);  // the row's start: the dims before the run
        for (int64_t i = lane; i < run; i += 32) destination[out_offset + i] = static_cast<Out>(source[in_offset + i]);
    }
}

// Merges dimensions that are contiguous with each other in both layouts and drops size-1 ones, so a
// dense copy becomes rank 1 (no per-element division) and the fast paths below can see it.
StridedGeometry collapse(const StridedGeometry& geometry) {
    StridedGeometry collapsed{};
    collapsed.rank = 0;
    for (int d = geometry.rank - 1; d >= 0; --d) {
        if (geometry.shape[d] == 1) continue;
        const int last = collapsed.rank - 1;
        if (last >= 0 && geometry.destination_strides[d] == collapsed.destination_strides[last] * collapsed.shape[last] &&
            geometry.source_strides[d] == collapsed.source_strides[last] * collapsed.shape[last]) {
            collapsed.shape[last] *= geometry.shape[d];
            continue;
        }
        collapsed.shape[collapsed.rank] = geometry.shape[d];
        collapsed.destination_strides[collapsed.rank] = geometry.destination_strides[d];
        collapsed.source_strides[collapsed.rank] = geometry.source_strides[d];
        ++collapsed.rank;
    }
    if (collapsed.rank == 0) {  // a single element
        collapsed.rank = 1;
        collapsed.shape[0] = 1;
        collapsed.destination_strides[0] = 1;
        collapsed.source_strides[0] = 1;
    }
    // Collected innermost first; the kernels walk row-major (innermost last).
    std::reverse(collapsed.shape, collapsed.shape + collapsed.rank);
    std::reverse(collapsed.destination_strides, collapsed.destination_strides + collapsed.rank);
    std::reverse(collapsed.source_strides, collapsed.source_strides + collapsed.rank);
    return collapsed;
}

StridedGeometry make_geometry(const Shape& shape, const Shape& destination_strides, const Shape& source_strides,
                              const char* op) {
    if (shape.size() > kMaxRank) raise<ShapeError>(op, "CUDA path supports rank <= ", kMaxRank, ", got ", shape_str(shape));
    StridedGeometry geometry{};
    geometry.rank = static_cast<int>(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) {
        geometry.shape[d] = shape[d];
        geometry.destination_strides[d] = destination_strides[d];
        geometry.source_strides[d] = source_strides.empty() ? 0 : source_strides[d];
    }
    return geometry;
}

unsigned grid_for(int64_t count) {
    return static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 65535));
}

// Launches fill_dense_kernel over `count` elements of a dense destination.
template <typename T, typename Source>
void fill_dense(T* destination, int64_t count, Source source, cudaStream_t stream) {
    const int64_t chunks = count * static_cast<int64_t>(sizeof(T)) / 16 + 1;
    fill_dense_kernel<T><<<grid_for(chunks), 256, 0, stream>>>(destination, count, source);
}

}  // namespace

namespace {

CachingCudaAllocator& caching_allocator(int device) {
    static std::mutex mutex;
    static std::vector<std::unique_ptr<CachingCudaAllocator>> allocators;
    std::lock_guard lock(mutex);
    if (device < 0 || device >= device_count())
        raise<DeviceError>("cuda allocator", "device cuda:", device, " is not available (", device_count(),
                           " visible)");
    if (allocators.empty())
        for (int d = 0; d < device_count(); ++d) allocators.push_back(std::make_unique<CachingCudaAllocator>(d));
    return *allocators[device];
}

// Two pinned chunks per device that large copies from or to pageable memory pass through: the host
// fills (or drains) one while the DMA engine works on the other. in_use[h] is recorded after the last
// DMA touching chunk h; whoever takes chunk h next (this copy or a later one, on any stream) waits for it.
struct PinnedStaging {
    std::mutex mutex;
    std::array<char*, 2> chunks{};
    std::array<cudaEvent_t, 2> in_use{};
};

PinnedStaging& pinned_staging(int device) {  // device is current
    static std::mutex mutex;
    static std::vector<std::unique_ptr<PinnedStaging>> stagings;
    std::lock_guard lock(mutex);
    if (stagings.empty())
        for (int d = 0; d < device_count(); ++d) stagings.push_back(std::make_unique<PinnedStaging>());
    PinnedStaging& staging = *stagings[device];
    for (int h = 0; h < 2; ++h) {  // kept for the process; the driver reclaims them at exit
        if (staging.chunks[h] == nullptr)
            KASMINA_CUDA_CHECK(
                cudaHostAlloc(reinterpret_cast<void**>(&staging.chunks[h]), kStagingChunkBytes, cudaHostAllocDefault));
        if (staging.in_use[h] == nullptr)
            KASMINA_CUDA_CHECK(cudaEventCreateWithFlags(&staging.in_use[h], cudaEventDisableTiming));
    }
    return staging;
}

bool is_pinned(const void* host) {
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, host) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return attributes.type == cudaMemoryTypeHost;
}

// Host to device through the pinned chunks. Returns once the source has been read (the last DMAs may
// still run; they are ordered on `stream` before any later work there).
void staged_host_to_device(char* destination, const char* source, size_t bytes, cudaStream_t stream,
                           PinnedStaging& staging) {
    for (size_t offset = 0, index = 0; offset < bytes; offset += kStagingChunkBytes, ++index) {
        const size_t size = std::min(kStagingChunkBytes, bytes - offset);
        const size_t h = index % 2;
        KASMINA_CUDA_CHECK(cudaEventSynchronize(staging.in_use[h]));  // the DMA that last read chunk h is done
        std::memcpy(staging.chunks[h], source + offset, size);
        KASMINA_CUDA_CHECK(
            cudaMemcpyAsync(destination + offset, staging.chunks[h], size, cudaMemcpyHostToDevice, stream));
        KASMINA_CUDA_CHECK(cudaEventRecord(staging.in_use[h], stream));
    }
}

// Device to host through the pinned chunks: DMA of chunk i overlaps the host copying out chunk i - 1.
// Complete when it returns.
void staged_device_to_host(char* destination, const char* source, size_t bytes, cudaStream_t stream,
                           PinnedStaging& staging) {
    const size_t count = (bytes + kStagingChunkBytes - 1) / kStagingChunkBytes;
    auto chunk_size = [&](size_t index) { return std::min(kStagingChunkBytes, bytes - index * kStagingChunkBytes); };
    for (size_t index = 0; index <= count; ++index) {
        if (index < count) {
            const size_t h = index % 2;
            KASMINA_CUDA_CHECK(cudaEventSynchronize(staging.in_use[h]));  // e.g. a host-to-device copy's last DMA
            KASMINA_CUDA_CHECK(cudaMemcpyAsync(staging.chunks[h], source + index * kStagingChunkBytes,
                                               chunk_size(index), cudaMemcpyDeviceToHost, stream));
            KASMINA_CUDA_CHECK(cudaEventRecord(staging.in_use[h], stream));
        }
        if (index > 0) {
            const size_t previous = index - 1, h = previous % 2;
            KASMINA_CUDA_CHECK(cudaEventSynchronize(staging.in_use[h]));
            std::memcpy(destination + previous * kStagingChunkBytes, staging.chunks[h], chunk_size(previous));
        }
    }
}

}  // namespace

Allocator& allocator(int device) { return caching_allocator(device); }

void record_stream(const Tensor& tensor, const Stream& stream) {
    if (!tensor.device().is_cuda())
        raise<DeviceError>("record_stream", "expected a CUDA tensor, got ", tensor.describe());
    void* block = tensor.impl()->storage->data();
    if (block != nullptr) caching_allocator(tensor.device().index).record_stream(block, stream);
}

void copy_bytes(void* destination, const void* source, size_t bytes, CopyKind kind, int device) {
    if (bytes == 0) return;
    DeviceGuard guard(device);
    const cudaStream_t stream = current_stream(device).raw();
    if (kind == CopyKind::device_to_device) {
        KASMINA_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, stream));
        return;
    }
    const bool to_device = kind == CopyKind::host_to_device;
    const bool pinned = bytes >= kStagedCopyThreshold && is_pinned(to_device ? source : destination);
    if (bytes < kStagedCopyThreshold || pinned) {
        // From pageable memory the driver has read the source when cudaMemcpyAsync returns; from pinned
        // memory only the stream knows, and the caller may free or reuse the source once we return.
        KASMINA_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes,
                                           to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, stream));
        if (pinned || !to_device) KASMINA_CUDA_CHECK(cudaStreamSynchronize(stream));
        return;
    }
    PinnedStaging& staging = pinned_staging(device);
    std::lock_guard lock(staging.mutex);
    try {
        if (to_device)
            staged_host_to_device(static_cast<char*>(destination), static_cast<const char*>(source), bytes, stream,
                                  staging);
        else
            staged_device_to_host(static_cast<char*>(destination), static_cast<const char*>(source), bytes, stream,
                                  staging);
    } catch (...) {
        cudaStreamSynchronize(stream);  // a failed event record must not leave a DMA on a chunk unnoticed
        throw;
    }
}

void* allocate_pinned(size_t bytes) {
    void* pointer = nullptr;
    KASMINA_CUDA_CHECK(cudaHostAlloc(&pointer, bytes, cudaHostAllocDefault));
    return pointer;
}

void free_pinned(void* pointer) { cudaFreeHost(pointer); }

void copy_to_host_async(void* destination, const void* source, size_t bytes, int device) {
    if (bytes == 0) return;
    DeviceGuard guard(device);
    KASMINA_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToHost, current_stream(device).raw()));
}

void strided_copy(const Tensor& destination, const Tensor& source) {
    const int64_t count = destination.numel();
    if (count == 0) return;
    DeviceGuard guard(destination.device().index);
    const StridedGeometry geometry =
        collapse(make_geometry(destination.shape(), destination.strides(), source.strides(), "copy"));
    const cudaStream_t stream = current_stream(destination.device().index).raw();
    const bool dense_destination = geometry.rank == 1 && geometry.destination_strides[0] == 1;
    if (dense_destination && geometry.source_strides[0] == 1 && destination.dtype() == source.dtype()) {
        KASMINA_CUDA_CHECK(cudaMemcpyAsync(destination.raw_data(), source.raw_data(),
                                           static_cast<size_t>(count) * dtype_size(destination.dtype()),
                                           cudaMemcpyDeviceToDevice, stream));
        return;
    }
    dispatch_all(destination.dtype(), "copy", [&]<typename Out>() {
        dispatch_all(source.dtype(), "copy", [&]<typename In>() {
            if (dense_destination && geometry.source_strides[0] == 0) {
                fill_dense(static_cast<Out*>(destination.raw_data()), count,
                           DeviceValue<Out, In>{static_cast<const In*>(source.raw_data())}, stream);
                return;
            }
            const int last = geometry.rank - 1;
            if (geometry.rank > 1 && geometry.destination_strides[last] == 1 && geometry.source_strides[last] == 1 &&
                geometry.shape[last] >= 16) {
                const int64_t rows = count / geometry.shape[last];
                strided_rows_copy_kernel<Out, In><<<grid_for(rows * 32), 256, 0, stream>>>(
                    static_cast<Out*>(destination.raw_data()), static_cast<const In*>(source.raw_data()), geometry, rows);
                return;
            }
            strided_copy_kernel<Out, In><<<grid_for(count), 256, 0, stream>>>(static_cast<Out*>(destination.raw_data()),
                                                                             static_cast<const In*>(source.raw_data()),
                                                                             geometry, count);
        });
    });
    KASMINA_CUDA_CHECK(cudaGetLastError());
}

void fill(const Tensor& destination, double value) {
    const int64_t count = destination.numel();
    if (count == 0) return;
    DeviceGuard guard(destination.device().index);
    const StridedGeometry geometry = collapse(make_geometry(destination.shape(), destination.strides(), {}, "fill_"));
    const cudaStream_t stream = current_stream(destination.device().index).raw();
    dispatch_all(destination.dtype(), "fill_", [&]<typename T>() {
        if (geometry.rank == 1 && geometry.destination_strides[0] == 1) {  // a dense range
            fill_dense(static_cast<T*>(destination.raw_data()), count, HostValue<T>{static_cast<T>(value)}, stream);
            return;
        }
        fill_kernel<T><<<grid_for(count), 256, 0, stream>>>(static_cast<T*>(destination.raw_data()), geometry, count,
                                                            static_cast<T>(value));
    });
    KASMINA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kasmina::cuda
