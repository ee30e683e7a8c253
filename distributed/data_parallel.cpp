#include "distributed/data_parallel.h"

#include <functional>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "layers/normalization.h"
#include "runtime/grad_mode.h"

namespace kasmina::dist {

struct DataParallel::Bucket {
    struct Entry {
        Tensor parameter;
        int64_t offset = 0;  // in elements of `flat`
        bool ready = false;  // its gradient arrived in this backward
    };
    std::vector<Entry> entries;
    Tensor flat;       // the gradients, laid end to end, all-reduced in place
    size_t ready = 0;  // entries ready in this backward
    bool launched = false;
    std::shared_ptr<Work> work;
};

Tensor all_reduce_sum(const Tensor& tensor, const std::shared_ptr<ProcessGroup>& group) {
    Tensor total;
    {
        NoGradGuard no_grad;
        total = tensor.detach().contiguous().clone();
        group->all_reduce(total, ReduceOp::sum)->wait();
    }
    return autograd::record("all_reduce_sum", total, {tensor}, [group](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
        Tensor grad = grads[0].contiguous().clone();
        group->all_reduce(grad, ReduceOp::sum)->wait();
        return {grad};
    });
}

namespace {

std::vector<std::pair<std::string, Tensor>> trainable_parameters(const nn::Module& module) {
    std::vector<std::pair<std::string, Tensor>> result;
    for (auto& [name, tensor] : module.named_parameters())
        if (tensor.requires_grad()) result.emplace_back(name, tensor);
    return result;
}

// A fingerprint of names, shapes and dtypes: ranks whose parameter lists differ must not exchange them.
int64_t fingerprint(const std::vector<std::pair<std::string, Tensor>>& parameters) {
    uint64_t hash = 1469598103934665603ull;
    auto mix = [&](const std::string& text) {
        for (const unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
    };
    for (const auto& [name, tensor] : parameters) mix(name + shape_str(tensor.shape()) + dtype_name(tensor.dtype()) + ";");
    return static_cast<int64_t>(hash >> 1);
}

void check_same_on_every_rank(ProcessGroup& group, const char* what, int64_t value) {
    if (group.world_size() == 1) return;
    NoGradGuard no_grad;
    // One max over (v, -v) gives the largest and (negated) the smallest value.
    Tensor extremes = Tensor::from_vector<int64_t>({value, -value}, {2}, group.device());
    group.all_reduce(extremes, ReduceOp::max)->wait();
    const std::vector<int64_t> both = extremes.to_vector<int64_t>();
    if (both[0] != -both[1])
        raise<DistributedError>("DataParallel", "rank ", group.rank(), ": the ranks' ", what,
                                " differ (their replicas have diverged: a seed loaded on some ranks only?)");
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : module_(std::move(module)), group_(std::move(group)), options_(options) {
    if (!module_ || !group_) raise<DistributedError>("DataParallel", "needs a module and a process group");
    if (options_.sync_batch_norm)
        for (auto& [name, child] : module_->named_modules())
            if (auto* norm = dynamic_cast<nn::BatchNorm*>(child.get()))
                norm->set_replica_sum([group = group_](const Tensor& x) { return all_reduce_sum(x, group); });
    const auto parameters = trainable_parameters(*module_);
    check_same_on_every_rank(*group_, "parameter lists", fingerprint(parameters));
    NoGradGuard no_grad;
    std::vector<Tensor> state;
    for (const auto& [name, tensor] : parameters) state.push_back(tensor);
    for (const auto& [name, tensor] : module_->named_buffers()) state.push_back(tensor);
    if (group_->world_size() > 1 && !state.empty()) group_->broadcast_coalesced(state, 0)->wait();
    rebuild_buckets(parameters);
}

DataParallel::~DataParallel() {
    hooks_.clear();
    if (options_.sync_batch_norm)
        for (auto& [name, child] : module_->named_modules())
            if (auto* norm = dynamic_cast<nn::BatchNorm*>(child.get())) norm->set_replica_sum({});
}

void DataParallel::rebuild_buckets(const std::vector<std::pair<std::string, Tensor>>& parameters) {
    hooks_.clear();
    buckets_.clear();
    tracked_.clear();
    next_to_launch_ = 0;
    for (const auto& [name, tensor] : parameters) tracked_.push_back(tensor.impl());
    // Reverse order: backward produces the last layers' gradients first, so their bucket fills first.
    for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
        const Tensor& parameter = it->second;
        const size_t bytes = static_cast<size_t>(parameter.numel()) * dtype_size(parameter.dtype());
        Bucket* bucket = buckets_.empty() ? nullptr : buckets_.back().get();
        const bool fits = bucket != nullptr && bucket->entries.front().parameter.dtype() == parameter.dtype() &&
                          bucket->entries.front().parameter.device() == parameter.device() &&
                          (static_cast<size_t>(bucket->flat.numel()) * dtype_size(parameter.dtype()) + bytes <= options_.bucket_bytes);
        if (!fits) {
            buckets_.push_back(std::make_unique<Bucket>());
            bucket = buckets_.back().get();
            bucket->flat = Tensor::empty({0}, {.dtype = parameter.dtype(), .device = parameter.device()});
        }
        bucket->entries.push_back({parameter, bucket->flat.numel()});
        bucket->flat = Tensor::empty({bucket->flat.numel() + parameter.numel()}, {.dtype = parameter.dtype(), .device = parameter.device()});
    }
    for (size_t b = 0; b < buckets_.size(); ++b)
        for (size_t e = 0; e < buckets_[b]->entries.size(); ++e)
            hooks_.push_back(autograd::register_post_accumulate_grad_hook(buckets_[b]->entries[e].parameter,
                                                                          [this, b, e](const Tensor&) { on_gradient_ready(b, e); }));
}

void DataParallel::refresh_if_parameters_changed() {
    const auto parameters = trainable_parameters(*module_);
    bool same = parameters.size() == tracked_.size();
    for (size_t i = 0; same && i < parameters.size(); ++i) same = parameters[i].second.impl() == tracked_[i];
    if (same) return;
    for (const auto& bucket : buckets_)
        if (bucket->ready > 0 || bucket->launched)
            raise<DistributedError>("DataParallel", "the parameters changed between backward and synchronize_gradients()");
    check_same_on_every_rank(*group_, "parameter lists", fingerprint(parameters));
    // New parameters (a kernel just loaded) start as rank 0's everywhere.
    std::vector<Tensor> fresh;
    for (const auto& [name, tensor] : parameters)
        if (std::find(tracked_.begin(), tracked_.end(), tensor.impl()) == tracked_.end()) fresh.push_back(tensor);
    if (group_->world_size() > 1 && !fresh.empty()) {
        NoGradGuard no_grad;
        group_->broadcast_coalesced(fresh, 0)->wait();
    }
    rebuild_buckets(parameters);
}

Tensor DataParallel::forward(const Tensor& local_batch) {
    group_->check_health();
    refresh_if_parameters_changed();
    // Under SyncBatchNorm every rank updates its buffers from the same global statistics: nothing to send.
    if (module_->is_training() && options_.broadcast_buffers && !options_.sync_batch_norm && group_->world_size() > 1) {
        std::vector<Tensor> buffers;
        for (const auto& [name, tensor] : module_->named_buffers()) buffers.push_back(tensor);
        if (!buffers.empty()) {
            NoGradGuard no_grad;
            group_->broadcast_coalesced(buffers, 0)->wait();
        }
    }
    return module_->forward(local_batch);
}

void DataParallel::on_gradient_ready(size_t b, size_t e) {
    Bucket& bucket = *buckets_[b];
    Bucket::Entry& entry = bucket.entries[e];
    if (entry.ready || bucket.launched)
        raise<DistributedError>("DataParallel", "a parameter ", entry.parameter.describe(),
                                " received a second gradient before synchronize_gradients(); call it after every backward");
    entry.ready = true;
    if (++bucket.ready == bucket.entries.size()) launch_ready_buckets();
}

void DataParallel::launch_ready_buckets() {
    while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_]->ready == buckets_[next_to_launch_]->entries.size()) {
        launch(*buckets_[next_to_launch_++]);
        ++started_during_backward_;
    }
}

void DataParallel::launch(Bucket& bucket) {
    bucket.launched = true;
    if (group_->world_size() == 1) return;  // a world of one averages nothing
    NoGradGuard no_grad;
    for (const Bucket::Entry& entry : bucket.entries) {
        Tensor slot = bucket.flat.narrow(0, entry.offset, entry.parameter.numel()).view(entry.parameter.shape());
        const Tensor grad = entry.parameter.grad();
        if (entry.ready && grad.defined()) copy_into(slot, grad);
        else copy_into(slot, Tensor::zeros(entry.parameter.shape(), {.dtype = entry.parameter.dtype(), .device = entry.parameter.device()}));
    }
    bucket.work = group_->all_reduce(bucket.flat, ReduceOp::average);
}

void DataParallel::synchronize_gradients() {
    last_overlap_ = started_during_backward_;
    started_during_backward_ = 0;
    while (next_to_launch_ < buckets_.size()) launch(*buckets_[next_to_launch_++]);
    NoGradGuard no_grad;
    for (const auto& bucket : buckets_) {
        if (bucket->work) bucket->work->wait();
        for (Bucket::Entry& entry : bucket->entries) {
            // Every rank ran the same graph, so a parameter without a gradient here has none anywhere.
            if (entry.ready && bucket->work) {
                const Tensor averaged = bucket->flat.narrow(0, entry.offset, entry.parameter.numel()).view(entry.parameter.shape());
                copy_into(entry.parameter.grad(), averaged);
            }
            entry.ready = false;
        }
        bucket->ready = 0;
        bucket->launched = false;
        bucket->work.reset();
    }
    next_to_launch_ = 0;
    group_->check_health();
}

}  // namespace kasmina::dist
