// A process group: the ranks of one data-parallel job and the collectives between them (all-reduce,
// broadcast, barrier) on tensors of the rank's device. NcclProcessGroup (nccl_process_group.h) is the
// GPU backend; ThreadProcessGroup runs ranks as threads of one process on the CPU (the single-process
// logic tests, and CPU data parallelism). init_process_group() reads torchrun's environment.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "distributed/store.h"
#include "runtime/tensor.h"

namespace kasmina::dist {

enum class ReduceOp { sum, average, max, min };
const char* reduce_op_name(ReduceOp op);

// An issued collective. wait() orders the caller after it: on a GPU the caller's current stream waits
// on the device (the host does not block); on the CPU it has already completed. Raises
// DistributedError when the collective failed or timed out.
class Work {
public:
    virtual ~Work() = default;
    virtual void wait() = 0;
    virtual bool completed() const = 0;
};

class ProcessGroup {
public:
    virtual ~ProcessGroup() = default;
    int rank() const { return rank_; }
    int world_size() const { return world_size_; }
    virtual std::string backend() const = 0;
    virtual Device device() const = 0;  // where the tensors of this rank's collectives live

    // In place, on a contiguous tensor of device(); every rank passes the same shape and dtype.
    virtual std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::sum) = 0;
    virtual std::shared_ptr<Work> broadcast(const Tensor& tensor, int root) = 0;
    // Several broadcasts issued as one (NCCL groups them into one launch).
    virtual std::shared_ptr<Work> broadcast_coalesced(const std::vector<Tensor>& tensors, int root);
    // Returns when every rank has reached it.
    virtual void barrier() = 0;
    // Raises DistributedError if an earlier collective failed or timed out (the group is then unusable).
    virtual void check_health() {}

    // Host bytes from `root` to every rank (the others' `bytes` are ignored): length, then content.
    std::vector<uint8_t> broadcast_bytes(const std::vector<uint8_t>& bytes, int root);
    // One flag per rank gathered on every rank (an all-reduce of a one-hot vector).
    std::vector<int64_t> all_gather_flags(int64_t flag);

protected:
    ProcessGroup(int rank, int world_size);
    // Raises the errors every backend shares: a tensor off the device, not contiguous, a root out of range.
    void check_tensor(const char* op, const Tensor& tensor) const;
    void check_root(const char* op, int root) const;

private:
    int rank_;
    int world_size_;
};

// Ranks as threads of one process (CPU tensors). Collectives meet at a rendezvous: every rank must
// issue the same collective with the same shape and dtype, or all of them raise DistributedError naming
// what each rank passed; a rank that does not arrive within the timeout makes the others raise.
class ThreadProcessGroup final : public ProcessGroup {
public:
    struct Rendezvous;
    // The `world_size` ranks of one group: hand element r to the thread that plays rank r.
    static std::vector<std::shared_ptr<ProcessGroup>> create(int world_size,
                                                             std::chrono::milliseconds timeout = std::chrono::seconds(60));
    std::string backend() const override { return "threads"; }
    Device device() const override { return Device::cpu(); }
    std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::sum) override;
    std::shared_ptr<Work> broadcast(const Tensor& tensor, int root) override;
    void barrier() override;
    ThreadProcessGroup(int rank, int world_size, std::shared_ptr<Rendezvous> rendezvous);

private:
    std::shared_ptr<Rendezvous> rendezvous_;
};

// torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (default 127.0.0.1), MASTER_PORT,
// and KASMINA_DIST_TIMEOUT (seconds, default 300). Raises DistributedError naming a missing or bad one.
struct LaunchEnvironment {
    int rank = 0;
    int world_size = 1;
    int local_rank = 0;
    std::string master_address = "127.0.0.1";
    int master_port = 0;
    std::chrono::milliseconds timeout = std::chrono::seconds(300);
    static LaunchEnvironment from_environment();
    // True when WORLD_SIZE is set (the process was started by a launcher).
    static bool present();
};

// The process group of a launched job: NCCL on cuda:LOCAL_RANK (raises if kasmina was built without
// NCCL), the store served by rank 0 on MASTER_ADDR:MASTER_PORT.
std::shared_ptr<ProcessGroup> init_process_group(const LaunchEnvironment& environment, const std::string& backend = "nccl");

// True when kasmina was built with the NCCL backend.
bool nccl_available();

}  // namespace kasmina::dist
