// Streams, the per-thread current stream, events and the device guard (see stream.h).
#include <array>
#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/stream.h"

namespace kasmina::cuda {
namespace {

void require_device(int device, const char* op) {
    if (device < 0 || device >= device_count())
        raise<DeviceError>(op, "device cuda:", device, " is not available (", device_count(), " visible)");
}

// The calling thread's current stream per device; nullptr (the default stream) until a guard sets one.
std::vector<cudaStream_t>& thread_current_streams() {
    thread_local std::vector<cudaStream_t> streams(static_cast<size_t>(device_count()), nullptr);
    return streams;
}

struct StreamPool {
    std::mutex mutex;
    std::array<cudaStream_t, Stream::kPoolSize> streams{};
    std::atomic<unsigned> next{0};
};

}  // namespace

DeviceGuard::DeviceGuard(int device) {
    KASMINA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) KASMINA_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) != cudaSuccess || current != previous_) cudaSetDevice(previous_);
}

Stream Stream::create(int device) {
    require_device(device, "Stream::create");
    static std::vector<StreamPool> pools(static_cast<size_t>(device_count()));
    StreamPool& pool = pools[device];
    const unsigned slot = pool.next.fetch_add(1, std::memory_order_relaxed) % kPoolSize;
    std::lock_guard lock(pool.mutex);
    if (pool.streams[slot] == nullptr) {
        DeviceGuard guard(device);
        KASMINA_CUDA_CHECK(cudaStreamCreateWithFlags(&pool.streams[slot], cudaStreamNonBlocking));
    }
    return Stream(device, pool.streams[slot]);
}

Stream Stream::default_stream(int device) {
    require_device(device, "Stream::default_stream");
    return Stream(device, nullptr);
}

bool Stream::query() const {
    DeviceGuard guard(device_);  // the default stream (nullptr) means the current device's
    const cudaError_t status = cudaStreamQuery(handle_);
    if (status == cudaErrorNotReady) {
        cudaGetLastError();  // not an error: clear it
        return false;
    }
    KASMINA_CUDA_CHECK(status);
    return true;
}

void Stream::synchronize() const {
    DeviceGuard guard(device_);
    KASMINA_CUDA_CHECK(cudaStreamSynchronize(handle_));
}

Stream current_stream(int device) {
    require_device(device, "current_stream");
    return Stream(device, thread_current_streams()[device]);
}

Stream current_stream() {
    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    return current_stream(device);
}

StreamGuard::StreamGuard(Stream stream) : previous_(current_stream(stream.device())) {
    thread_current_streams()[stream.device()] = stream.raw();
}

StreamGuard::~StreamGuard() { thread_current_streams()[previous_.device()] = previous_.raw(); }

Event::~Event() {
    if (handle_ != nullptr) cudaEventDestroy(handle_);
}

Event::Event(Event&& other) noexcept
    : options_(other.options_),
      device_(std::exchange(other.device_, -1)),
      handle_(std::exchange(other.handle_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
    if (this != &other) {
        if (handle_ != nullptr) cudaEventDestroy(handle_);
        options_ = other.options_;
        device_ = std::exchange(other.device_, -1);
        handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
}

void Event::record(const Stream& stream) {
    if (handle_ != nullptr && device_ != stream.device())
        raise<DeviceError>("Event::record", "event of cuda:", device_,
                           " recorded on a stream of cuda:", stream.device());
    DeviceGuard guard(stream.device());
    if (handle_ == nullptr) {
        KASMINA_CUDA_CHECK(
            cudaEventCreateWithFlags(&handle_, options_.enable_timing ? cudaEventDefault : cudaEventDisableTiming));
        device_ = stream.device();
    }
    KASMINA_CUDA_CHECK(cudaEventRecord(handle_, stream.raw()));
}

bool Event::query() const {
    if (handle_ == nullptr) return true;
    const cudaError_t status = cudaEventQuery(handle_);
    if (status == cudaErrorNotReady) {
        cudaGetLastError();
        return false;
    }
    KASMINA_CUDA_CHECK(status);
    return true;
}

void Event::synchronize() const {
    if (handle_ != nullptr) KASMINA_CUDA_CHECK(cudaEventSynchronize(handle_));
}

void Event::wait(const Stream& stream) const {
    if (handle_ == nullptr) return;
    DeviceGuard guard(stream.device());
    KASMINA_CUDA_CHECK(cudaStreamWaitEvent(stream.raw(), handle_, 0));
}

float Event::elapsed_ms(const Event& end) const {
    if (handle_ == nullptr || end.handle_ == nullptr || !options_.enable_timing || !end.options_.enable_timing)
        raise<DeviceError>("Event::elapsed_ms", "both events must be recorded and created with enable_timing");
    float milliseconds = 0;
    KASMINA_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, handle_, end.handle_));
    return milliseconds;
}

}  // namespace kasmina::cuda
