// Per-stream block counters for kernels whose last block to finish combines the others' partial
// results (cuda_launch.cuh: last_block_of).
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_launch.cuh"

namespace kasmina::kernels::cuda {

unsigned* stream_block_counters(int64_t count) {
    struct Counters {
        Tensor buffer;                 // undefined until the first call on the stream
        std::vector<Tensor> outgrown;  // kernels queued before a growth may still count in these
    };
    // Never destroyed: device memory must not be freed after the CUDA runtime has shut down.
    static auto* table = new std::map<std::pair<int, cudaStream_t>, Counters>;
    static std::mutex mutex;
    const ::kasmina::cuda::Stream stream = ::kasmina::cuda::current_stream();
    std::lock_guard lock(mutex);
    Counters& counters = (*table)[{stream.device(), stream.raw()}];
    const int64_t capacity = counters.buffer.defined() ? counters.buffer.numel() : 0;
    if (capacity < count) {
        if (counters.buffer.defined()) counters.outgrown.push_back(counters.buffer);
        // Zeroed on this stream, so before any kernel queued on it after this call.
        counters.buffer = Tensor::zeros({std::max<int64_t>({count, 2 * capacity, 256})},
                                        {.dtype = DType::i32, .device = Device::cuda(stream.device())});
    }
    return static_cast<unsigned*>(counters.buffer.raw_data());
}

}  // namespace kasmina::kernels::cuda
