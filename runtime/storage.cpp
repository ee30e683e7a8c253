#include "runtime/storage.h"

#include <cstdlib>
#include <new>

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
        return pointer;
    }
    void deallocate(void* pointer, size_t) override { std::free(pointer); }
};

}  // namespace

Allocator& allocator_for(Device device) {
    static CpuAlignedAllocator cpu_allocator;
    if (device.is_cpu()) return cpu_allocator;
#ifdef KASMINA_WITH_CUDA
    return cuda::allocator(device.index);
#else
    throw DeviceError(make_message("allocator: device ", device.str(),
                                   " requested but this build of kasmina has no CUDA support"));
#endif
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
    data_ = allocator_for(device).allocate(bytes);
}

Storage::~Storage() {
    if (data_ != nullptr) allocator_for(device_).deallocate(data_, bytes_);
}

}  // namespace kasmina
