// nn.LayerNorm, nn.BatchNorm1d and nn.BatchNorm2d with PyTorch's parameters, buffers, defaults and
// train/eval behaviour (running statistics updated with the unbiased variance).
#pragma once

#include <functional>
#include <optional>

#include "layers/module.h"

namespace kasmina::nn {

struct LayerNormOptions {
    double eps = 1e-5;
    bool elementwise_affine = true;
    bool bias = true;
};

class LayerNorm : public Module {
public:
    explicit LayerNorm(Shape normalized_shape, LayerNormOptions options = {});
    std::string type_name() const override { return "LayerNorm"; }
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;

    const Shape& normalized_shape() const { return normalized_shape_; }
    double eps() const { return options_.eps; }
    Tensor weight;  // undefined without elementwise_affine
    Tensor bias;    // undefined without elementwise_affine or bias

private:
    Shape normalized_shape_;
    LayerNormOptions options_;
};

struct BatchNormOptions {
    double eps = 1e-5;
    std::optional<double> momentum = 0.1;  // nullopt: cumulative moving average
    bool affine = true;
    bool track_running_stats = true;
};

// The shared mechanism of BatchNorm1d and BatchNorm2d; they differ only in the input ranks accepted.
class BatchNorm : public Module {
public:
    BatchNorm(int64_t num_features, BatchNormOptions options);
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;

    int64_t num_features() const { return num_features_; }
    const BatchNormOptions& options() const { return options_; }
    // Synchronized batch statistics (data parallelism's SyncBatchNorm): `sum` adds a per-replica tensor
    // over all replicas, differentiably. While set, training forwards normalize with the mean and variance
    // of every replica's samples. An empty function returns to per-replica statistics.
    using ReplicaSum = std::function<Tensor(const Tensor&)>;
    void set_replica_sum(ReplicaSum sum) { replica_sum_ = std::move(sum); }
    bool synchronized() const { return static_cast<bool>(replica_sum_); }

    Tensor weight, bias;                                          // affine parameters [C]
    Tensor running_mean, running_var, num_batches_tracked;        // buffers (undefined without tracking)

protected:
    virtual void check_input_rank(const Tensor& input) const = 0;
    // Training with running statistics: each successful forward counts one batch in num_batches_tracked.
    bool counts_batches() const { return is_training() && options_.track_running_stats; }
    // The momentum for this forward, PyTorch's rule: with momentum none, the cumulative average over the
    // batches counted so far plus this one. Reads num_batches_tracked without advancing it.
    double average_factor() const;
    void count_batch();

private:
    Tensor synchronized_batch_norm(const Tensor& input);

    int64_t num_features_;
    BatchNormOptions options_;
    ReplicaSum replica_sum_;
};

class BatchNorm1d : public BatchNorm {
public:
    explicit BatchNorm1d(int64_t num_features, BatchNormOptions options = {}) : BatchNorm(num_features, options) {}
    std::string type_name() const override { return "BatchNorm1d"; }

protected:
    void check_input_rank(const Tensor& input) const override;  // (N, C) or (N, C, L)
};

class BatchNorm2d : public BatchNorm {
public:
    explicit BatchNorm2d(int64_t num_features, BatchNormOptions options = {}) : BatchNorm(num_features, options) {}
    std::string type_name() const override { return "BatchNorm2d"; }

protected:
    void check_input_rank(const Tensor& input) const override;  // (N, C, H, W)
};

}  // namespace kasmina::nn
