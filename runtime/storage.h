// A block of memory shared by a tensor and all its views, with the version counter that detects
// in-place modification of data saved for backward (bumped by every in-place write to any view).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "runtime/allocator.h"
#include "runtime/device.h"

namespace kasmina {

class Storage {
public:
    Storage(size_t bytes, Device device);
    // Adopts memory owned elsewhere (a NumPy array, a DLPack tensor): `release` runs instead of the
    // allocator's deallocate when the last tensor using the block goes away.
    Storage(void* data, size_t bytes, Device device, std::function<void()> release);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return data_; }
    size_t bytes() const { return bytes_; }
    Device device() const { return device_; }

    uint64_t version() const { return version_.load(std::memory_order_relaxed); }
    void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

private:
    void* data_ = nullptr;
    size_t bytes_ = 0;
    Allocator* allocator_ = nullptr;  // the one that made data_, which takes it back
    Device device_;
    std::function<void()> release_;  // set for adopted memory
    std::atomic<uint64_t> version_{0};
};

}  // namespace kasmina
