#include "runtime/readback.h"

#include <cstring>

#include "runtime/error.h"

#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/stream.h"
#endif

namespace kasmina {

#ifdef KASMINA_WITH_CUDA
struct Readback::Pinned {
    ~Pinned() {
        if (data) cuda::free_pinned(data);
    }
    void reserve(size_t size) {
        if (size <= capacity) return;
        if (data) cuda::free_pinned(data);
        data = nullptr;
        data = cuda::allocate_pinned(size);
        capacity = size;
    }
    void* data = nullptr;
    size_t capacity = 0;
    size_t bytes = 0;
    cuda::Event done;
};
#else
struct Readback::Pinned {};
#endif

Readback::Readback() = default;
Readback::~Readback() {
#ifdef KASMINA_WITH_CUDA
    if (pending_ && pinned_) {
        try {
            pinned_->done.synchronize();  // the DMA must not land in freed memory
        } catch (...) {
        }
    }
#endif
}

void Readback::start(const Tensor& source) {
    if (pending_) raise<Error>("Readback::start", "a copy is still pending; take() it first");
    source_ = source.detach().contiguous();
    pending_ = true;
#ifdef KASMINA_WITH_CUDA
    if (source_.device().is_cuda()) {
        if (!pinned_) pinned_ = std::make_unique<Pinned>();
        const size_t bytes = static_cast<size_t>(source_.numel()) * dtype_size(source_.dtype());
        pinned_->reserve(bytes);
        pinned_->bytes = bytes;
        cuda::copy_to_host_async(pinned_->data, source_.raw_data(), bytes, source_.device().index);
        pinned_->done.record(cuda::current_stream(source_.device().index));
    }
#endif
}

bool Readback::ready() const {
    if (!pending_) return false;
#ifdef KASMINA_WITH_CUDA
    if (source_.device().is_cuda()) return pinned_->done.query();
#endif
    return true;
}

std::vector<double> Readback::take() {
    if (!pending_) raise<Error>("Readback::take", "nothing is pending; start() a copy first");
    Tensor host = source_;
#ifdef KASMINA_WITH_CUDA
    if (source_.device().is_cuda()) {
        pinned_->done.synchronize();
        host = Tensor::empty(source_.shape(), {.dtype = source_.dtype()});
        std::memcpy(host.raw_data(), pinned_->data, pinned_->bytes);
    }
#endif
    pending_ = false;
    source_ = Tensor();
    return host.to_vector<double>();
}

}  // namespace kasmina
