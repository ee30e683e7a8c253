// Device discovery, the caching device-memory allocator, and copies for CUDA tensors.
#include "runtime/cuda/cuda_runtime.h"

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <unordered_map>
#include <mutex>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/cuda/cuda_check.h"
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

class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        KASMINA_CUDA_CHECK(cudaGetDevice(&previous_));
        if (previous_ != device) KASMINA_CUDA_CHECK(cudaSetDevice(device));
    }
    ~DeviceGuard() { cudaSetDevice(previous_); }

private:
    int previous_ = 0;
};

// A stream-ordered caching allocator. All kasmina work runs on the device's default stream, so a
// block freed by the host can be handed out again at once: later work on the same stream is ordered
// after the kernels that used it. Requests are rounded to 512 bytes; small ones (< 1 MiB) are carved
// from 2 MiB segments, large ones get their own segment rounded to 2 MiB; free blocks are found best
// fit, split when the rest is worth keeping, and merged with free neighbours on release. In steady
// state no cudaMalloc/cudaFree happens. empty_cache() returns wholly free segments to the driver.
class CachingCudaAllocator final : public Allocator {
public:
    explicit CachingCudaAllocator(int device) : device_(device) {}
    ~CachingCudaAllocator() override = default;  // the driver reclaims device memory at exit

    void* allocate(size_t bytes) override {
        if (bytes == 0) return nullptr;
        const size_t size = round_up(bytes, kRound);
        std::lock_guard lock(mutex_);
        Block* block = take_free(size);
        if (block == nullptr) block = new_segment(size);
        if (block->size - size >= (size < kSmall ? kRound : kSmall)) split(block, size);
        block->allocated = true;
        if (poison_allocations()) KASMINA_CUDA_CHECK(cudaMemsetAsync(block->pointer, 0xFF, block->size));
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
        block->allocated = false;
        if (block->next && !block->next->allocated) block = merge(block, block->next);
        if (block->previous && !block->previous->allocated) block = merge(block->previous, block);
        free_.emplace(block->size, block);
    }

    AllocatorStats stats() const override {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    void empty_cache() override {
        std::lock_guard lock(mutex_);
        release_free_segments();
    }

private:
    static constexpr size_t kRound = 512, kSmall = 1 << 20, kSegment = 2 << 20;
    struct Block {
        char* pointer = nullptr;
        size_t size = 0;
        bool allocated = false;
        Block *previous = nullptr, *next = nullptr;  // neighbours inside one cudaMalloc segment
    };
    static size_t round_up(size_t value, size_t step) { return (value + step - 1) / step * step; }

    // Best fit among the free blocks.
    Block* take_free(size_t size) {
        const auto found = free_.lower_bound(size);
        if (found == free_.end()) return nullptr;
        Block* block = found->second;
        free_.erase(found);
        return block;
    }

    void release_free_segments() {  // under mutex_
        DeviceGuard guard(device_);
        for (auto it = free_.begin(); it != free_.end();) {
            Block* block = it->second;
            if (block->previous == nullptr && block->next == nullptr) {  // a whole free segment
                cudaFree(block->pointer);
                stats_.reserved_bytes -= block->size;
                blocks_.erase(block);
                it = free_.erase(it);
            } else {
                ++it;
            }
        }
    }

    Block* new_segment(size_t size) {
        const size_t segment = size < kSmall ? kSegment : round_up(size, kSegment);
        DeviceGuard guard(device_);
        void* pointer = nullptr;
        cudaError_t status = cudaMalloc(&pointer, segment);
        if (status == cudaErrorMemoryAllocation) {
            cudaGetLastError();
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
        Block* raw = block.get();
        blocks_.emplace(raw, std::move(block));
        return raw;
    }

    void split(Block* block, size_t size) {
        auto rest = std::make_unique<Block>();
        rest->pointer = block->pointer + size;
        rest->size = block->size - size;
        rest->previous = block;
        rest->next = block->next;
        if (block->next) block->next->previous = rest.get();
        block->next = rest.get();
        block->size = size;
        free_.emplace(rest->size, rest.get());
        Block* raw = rest.get();
        blocks_.emplace(raw, std::move(rest));
    }

    // Joins `right` into `left` (both free, adjacent); returns left.
    Block* merge(Block* left, Block* right) {
        for (Block* candidate : {left, right}) {
            auto range = free_.equal_range(candidate->size);
            for (auto it = range.first; it != range.second; ++it)
                if (it->second == candidate) {
                    free_.erase(it);
                    break;
                }
        }
        left->size += right->size;
        left->next = right->next;
        if (right->next) right->next->previous = left;
        blocks_.erase(right);
        return left;
    }

    int device_;
    mutable std::mutex mutex_;
    std::multimap<size_t, Block*> free_;                       // free blocks by size (best fit)
    std::unordered_map<void*, Block*> live_;                   // allocated blocks by pointer
    std::unordered_map<Block*, std::unique_ptr<Block>> blocks_;  // owns every block
    AllocatorStats stats_;
};

constexpr int kMaxRank = 8;

struct StridedGeometry {
    int rank;
    int64_t shape[kMaxRank];
    int64_t destination_strides[kMaxRank];
    int64_t source_strides[kMaxRank];
};

template <typename Out, typename In>
__global__ void strided_copy_kernel(Out* destination, const In* source, StridedGeometry geometry, int64_t count) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < count;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t rest = linear, out_offset = 0, in_offset = 0;
        for (int d = geometry.rank - 1; d >= 0; --d) {
            const int64_t index = rest % geometry.shape[d];
            rest /= geometry.shape[d];
            out_offset += index * geometry.destination_strides[d];
            in_offset += index * geometry.source_strides[d];
        }
        destination[out_offset] = static_cast<Out>(source[in_offset]);
    }
}

template <typename T>
__global__ void fill_kernel(T* destination, StridedGeometry geometry, int64_t count, T value) {
    for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < count;
         linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t rest = linear, out_offset = 0;
        for (int d = geometry.rank - 1; d >= 0; --d) {
            out_offset += (rest % geometry.shape[d]) * geometry.destination_strides[d];
            rest /= geometry.shape[d];
        }
        destination[out_offset] = value;
    }
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

}  // namespace

Allocator& allocator(int device) {
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

void copy_bytes(void* destination, const void* source, size_t bytes, CopyKind kind, int device) {
    if (bytes == 0) return;
    DeviceGuard guard(device);
    const cudaMemcpyKind direction = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                                     : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                                        : cudaMemcpyDeviceToDevice;
    KASMINA_CUDA_CHECK(cudaMemcpy(destination, source, bytes, direction));
}

void strided_copy(const Tensor& destination, const Tensor& source) {
    const int64_t count = destination.numel();
    if (count == 0) return;
    DeviceGuard guard(destination.device().index);
    const StridedGeometry geometry = make_geometry(destination.shape(), destination.strides(), source.strides(), "copy");
    dispatch_all(destination.dtype(), "copy", [&]<typename Out>() {
        dispatch_all(source.dtype(), "copy", [&]<typename In>() {
            strided_copy_kernel<Out, In><<<grid_for(count), 256>>>(static_cast<Out*>(destination.raw_data()),
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
    const StridedGeometry geometry = make_geometry(destination.shape(), destination.strides(), {}, "fill_");
    dispatch_all(destination.dtype(), "fill_", [&]<typename T>() {
        fill_kernel<T><<<grid_for(count), 256>>>(static_cast<T*>(destination.raw_data()), geometry, count,
                                                 static_cast<T>(value));
    });
    KASMINA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kasmina::cuda
