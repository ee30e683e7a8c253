// Reads small tensors back to the host without making the host wait for the device: start() queues
// the copy (for a CUDA tensor: into pinned memory this object keeps, behind the work already queued on
// the current stream), ready() polls without blocking, take() returns the values, waiting if needed.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "runtime/tensor.h"

namespace kasmina {

class Readback {
public:
    Readback();
    ~Readback();
    Readback(const Readback&) = delete;
    Readback& operator=(const Readback&) = delete;

    // Queues the copy of `source` (any device, dtype and layout); raises Error while one is pending.
    void start(const Tensor& source);
    bool pending() const { return pending_; }
    // True once the pending copy has landed (never blocks); false when nothing is pending.
    bool ready() const;
    // The values of the pending copy in order, as double; waits for the copy. Raises Error if none is pending.
    std::vector<double> take();

private:
    struct Pinned;  // pinned host buffer and completion event (CUDA builds)
    std::unique_ptr<Pinned> pinned_;
    Tensor source_;  // dense, kept alive until the copy lands
    bool pending_ = false;
};

}  // namespace kasmina
