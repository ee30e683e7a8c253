// The NCCL backend of ProcessGroup: one process per GPU, the communicator bootstrapped through a
// Store. Collectives run on a stream of their own after the caller's current stream (so they overlap
// later compute), and Work::wait() makes the caller's stream wait for them. A watchdog thread polls
// every outstanding collective: one that fails (ncclCommGetAsyncError) or outlives the timeout aborts
// the communicator — the stuck kernels exit instead of hanging — and every later call raises
// DistributedError. Compiled only when kasmina is built with NCCL (KASMINA_WITH_NCCL).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "distributed/process_group.h"
#include "runtime/cuda/stream.h"

namespace kasmina::dist {

struct NcclOptions {
    std::chrono::milliseconds timeout = std::chrono::seconds(300);
};

class NcclProcessGroup final : public ProcessGroup {
public:
    // Joins the group as `rank` of `world_size` on cuda:`device`. Every rank must call it; raises
    // DistributedError when a rank does not arrive within the timeout.
    NcclProcessGroup(std::shared_ptr<Store> store, int rank, int world_size, int device, NcclOptions options = {});
    ~NcclProcessGroup() override;
    NcclProcessGroup(const NcclProcessGroup&) = delete;
    NcclProcessGroup& operator=(const NcclProcessGroup&) = delete;

    std::string backend() const override { return "nccl"; }
    Device device() const override { return Device::cuda(device_); }
    std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::sum) override;
    std::shared_ptr<Work> broadcast(const Tensor& tensor, int root) override;
    std::shared_ptr<Work> broadcast_coalesced(const std::vector<Tensor>& tensors, int root) override;
    void barrier() override;
    void check_health() override;

    struct Communicator;  // the ncclComm_t and the watchdog's shared state

private:
    std::shared_ptr<Work> launch(const char* op, const std::vector<Tensor>& tensors, const std::function<void(void* stream)>& issue);

    int device_;
    NcclOptions options_;
    std::shared_ptr<Store> store_;
    std::shared_ptr<Communicator> communicator_;
    cuda::Stream stream_;  // where the collectives run
    std::thread watchdog_;
};

}  // namespace kasmina::dist
