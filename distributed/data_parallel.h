// Data-parallel training over a ProcessGroup (PyTorch DDP's model): every rank holds a replica of the
// module and trains it on its share of the global batch. Parameters start as rank 0's; gradients are
// averaged across ranks in buckets whose all-reduce starts while backward is still running (from
// post-accumulate hooks); batch-norm statistics are per rank (rank 0's running statistics broadcast
// before each training forward, like DDP) or, with sync_batch_norm, computed over the global batch.
// Parameters that appear or go (seed kernels) are picked up at the next forward on every rank.
#pragma once

#include <memory>
#include <vector>

#include "autograd/hooks.h"
#include "distributed/process_group.h"
#include "layers/module.h"

namespace kasmina::dist {

struct DataParallelOptions {
    size_t bucket_bytes = size_t{25} << 20;  // gradients per all-reduce (a bucket holds at least one parameter)
    bool broadcast_buffers = true;           // rank 0's buffers to every rank before each training forward
                                             // (not needed, so not done, under sync_batch_norm)
    bool sync_batch_norm = false;            // batch-norm statistics over all ranks' samples (SyncBatchNorm)
};

class DataParallel {
public:
    // Collective: every rank constructs it with its replica; rank 0's parameters and buffers win.
    DataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {});
    ~DataParallel();
    DataParallel(const DataParallel&) = delete;
    DataParallel& operator=(const DataParallel&) = delete;

    // Collective: forward of this rank's share of the batch.
    Tensor forward(const Tensor& local_batch);
    // Collective, after backward and before the optimizer step: starts the buckets backward did not
    // complete, waits for all of them and writes the averaged gradients back into the parameters.
    void synchronize_gradients();

    nn::Module& module() const { return *module_; }
    ProcessGroup& group() const { return *group_; }
    size_t bucket_count() const { return buckets_.size(); }
    // How many buckets the last backward started before synchronize_gradients() (the overlap).
    size_t buckets_started_during_backward() const { return last_overlap_; }

private:
    struct Bucket;
    void refresh_if_parameters_changed();
    void rebuild_buckets(const std::vector<std::pair<std::string, Tensor>>& parameters);
    void on_gradient_ready(size_t bucket, size_t entry);
    void launch_ready_buckets();
    void launch(Bucket& bucket);

    std::shared_ptr<nn::Module> module_;
    std::shared_ptr<ProcessGroup> group_;
    DataParallelOptions options_;
    std::vector<TensorImpl*> tracked_;  // the trainable parameters the buckets were built for, in order
    std::vector<std::unique_ptr<Bucket>> buckets_;
    std::vector<autograd::HookHandle> hooks_;
    size_t next_to_launch_ = 0;  // buckets start in index order on every rank (NCCL needs one order)
    size_t started_during_backward_ = 0;
    size_t last_overlap_ = 0;
};

// Sums `tensor` over the ranks of `group`, differentiably: the gradient of every rank's input is the sum
// of all ranks' output gradients (what SyncBatchNorm's statistics need).
Tensor all_reduce_sum(const Tensor& tensor, const std::shared_ptr<ProcessGroup>& group);

}  // namespace kasmina::dist
