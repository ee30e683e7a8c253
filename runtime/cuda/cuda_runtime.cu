// Device discovery, plain device memory and copies for CUDA tensors (the caching allocator and
// streams of the GPU backend build on these).
#include "runtime/cuda/cuda_runtime.h"

#include <array>
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

class PlainCudaAllocator final : public Allocator {
public:
    explicit PlainCudaAllocator(int device) : device_(device) {}
    void* allocate(size_t bytes) override {
        if (bytes == 0) return nullptr;
        DeviceGuard guard(device_);
        void* pointer = nullptr;
        KASMINA_CUDA_CHECK(cudaMalloc(&pointer, bytes));
        return pointer;
    }
    void deallocate(void* pointer, size_t) override {
        if (pointer == nullptr) return;
        DeviceGuard guard(device_);
        cudaFree(pointer);
    }

private:
    int device_;
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
    static std::vector<std::unique_ptr<PlainCudaAllocator>> allocators;
    std::lock_guard lock(mutex);
    if (device < 0 || device >= device_count())
        raise<DeviceError>("cuda allocator", "device cuda:", device, " is not available (", device_count(),
                           " visible)");
    if (allocators.empty())
        for (int d = 0; d < device_count(); ++d) allocators.push_back(std::make_unique<PlainCudaAllocator>(d));
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
