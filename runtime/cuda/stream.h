// CUDA streams and events without <cuda_runtime.h>: a per-thread current stream that every kasmina
// kernel, memset, copy and allocation is queued on, and events that order or time work across streams.
#pragma once

struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t is CUevent_st*

namespace kasmina {
class Tensor;
}

namespace kasmina::cuda {

// Makes `device` the calling thread's current CUDA device for a scope, then restores the previous one.
class DeviceGuard {
public:
    explicit DeviceGuard(int device);
    ~DeviceGuard();
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
};

// A handle (not an owner) onto a stream of one device: the legacy default stream, or one of a per-device
// pool of non-blocking streams that live as long as the process. Cheap to copy and compare. Pool streams
// are not ordered with the default stream: use an Event to hand data from one to the other.
class Stream {
public:
    // The next stream of `device`'s pool (round robin over kPoolSize non-blocking streams).
    static Stream create(int device);
    static Stream default_stream(int device);
    static constexpr int kPoolSize = 16;

    int device() const { return device_; }
    CUstream_st* raw() const { return handle_; }  // a cudaStream_t; nullptr is the legacy default stream
    bool is_default() const { return handle_ == nullptr; }
    // True when all work queued so far has finished (does not block).
    bool query() const;
    void synchronize() const;
    bool operator==(const Stream&) const = default;

private:
    friend Stream current_stream(int device);
    Stream(int device, CUstream_st* handle) : device_(device), handle_(handle) {}
    int device_ = 0;
    CUstream_st* handle_ = nullptr;
};

// The calling thread's current stream on `device` (the default stream until a StreamGuard says otherwise).
Stream current_stream(int device);
// The calling thread's current stream on its current CUDA device: where kernels are launched.
Stream current_stream();

// Makes `stream` the calling thread's current stream on its device for a scope, then restores the previous one.
class StreamGuard {
public:
    explicit StreamGuard(Stream stream);
    ~StreamGuard();
    StreamGuard(const StreamGuard&) = delete;
    StreamGuard& operator=(const StreamGuard&) = delete;

private:
    Stream previous_;
};

struct EventOptions {
    bool enable_timing = false;  // needed by elapsed_ms; costs a little on every record
};

// An owned cudaEvent_t, created on the device of the first stream it is recorded on.
class Event {
public:
    explicit Event(EventOptions options = {}) : options_(options) {}
    ~Event();
    Event(Event&& other) noexcept;
    Event& operator=(Event&& other) noexcept;
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;

    // Captures the work queued on `stream` so far (re-recording replaces the capture).
    void record(const Stream& stream);
    // True when the captured work has finished, or nothing was recorded (does not block).
    bool query() const;
    void synchronize() const;
    // Makes later work on `stream` wait for the captured work (on the device, not the host).
    void wait(const Stream& stream) const;
    // Milliseconds from this event to `end`; both recorded with enable_timing, `end` finished.
    float elapsed_ms(const Event& end) const;

private:
    EventOptions options_;
    int device_ = -1;
    CUevent_st* handle_ = nullptr;
};

// Marks the memory of `tensor` (a CUDA tensor) as used on `stream`, which need not be the stream it was
// allocated on: when its storage is freed, the allocator reuses the block only after the work queued on
// `stream` until that moment has finished. Without it, a tensor used on another stream than the one it
// was allocated on must outlive that use, or the caller must synchronize before freeing it.
void record_stream(const Tensor& tensor, const Stream& stream);

}  // namespace kasmina::cuda
