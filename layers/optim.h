// Optimizers with PyTorch's update rules, step for step: SGD (momentum, dampening, Nesterov,
// weight decay) and AdamW (decoupled weight decay, bias-corrected moments). Parameters are the
// tensors a module's parameters() returns; their .grad is read, parameters are updated in place.
#pragma once

#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace kasmina::optim {

class Optimizer {
public:
    explicit Optimizer(std::vector<Tensor> parameters);
    virtual ~Optimizer() = default;
    virtual void step() = 0;
    void zero_grad();
    double learning_rate() const { return learning_rate_; }
    void set_learning_rate(double learning_rate) { learning_rate_ = learning_rate; }
    const std::vector<Tensor>& parameters() const { return parameters_; }
    // Adds parameters (e.g. a seed kernel's weights that appeared mid-training) with fresh state.
    void add_parameters(const std::vector<Tensor>& parameters);
    // Replaces the parameter list: tensors already present keep their state (matched by identity),
    // new ones start fresh, absent ones are dropped (e.g. an unloaded seed kernel's weights).
    void set_parameters(std::vector<Tensor> parameters);
    // Per-parameter state by "<index>.<name>" plus scalars; for checkpoints.
    virtual TensorMap state_dict() const = 0;
    virtual void load_state_dict(const TensorMap& state) = 0;

protected:
    // Reorders per-parameter state: entry i of the new list takes old entry source[i] (-1: fresh).
    virtual void remap_state(const std::vector<int>& source) = 0;

    std::vector<Tensor> parameters_;
    double learning_rate_ = 0.0;
};

struct SGDOptions {
    double lr = 0.01;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;
    bool nesterov = false;
};

class SGD : public Optimizer {
public:
    SGD(std::vector<Tensor> parameters, SGDOptions options);
    void step() override;
    TensorMap state_dict() const override;
    void load_state_dict(const TensorMap& state) override;

private:
    void remap_state(const std::vector<int>& source) override;
    SGDOptions options_;
    std::vector<Tensor> momentum_buffers_;  // undefined until a parameter's first step
};

struct AdamWOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;
};

class AdamW : public Optimizer {
public:
    AdamW(std::vector<Tensor> parameters, AdamWOptions options = {});
    void step() override;
    TensorMap state_dict() const override;
    void load_state_dict(const TensorMap& state) override;

private:
    void remap_state(const std::vector<int>& source) override;
    AdamWOptions options_;
    std::vector<Tensor> exp_avg_, exp_avg_sq_;
    std::vector<int64_t> steps_;
};

// Learning-rate schedules: step() advances one epoch and sets the optimizer's rate.
class LRScheduler {
public:
    explicit LRScheduler(Optimizer& optimizer) : optimizer_(optimizer), base_lr_(optimizer.learning_rate()) {}
    virtual ~LRScheduler() = default;
    void step();
    int64_t epoch() const { return epoch_; }
    void set_epoch(int64_t epoch);
    virtual double rate_at(int64_t epoch) const = 0;

protected:
    Optimizer& optimizer_;
    double base_lr_;
    int64_t epoch_ = 0;
};

// lr = base * gamma^(epoch / step_size)   (torch.optim.lr_scheduler.StepLR)
class StepLR : public LRScheduler {
public:
    StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
    double rate_at(int64_t epoch) const override;

private:
    int64_t step_size_;
    double gamma_;
};

// lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / T_max)) / 2   (CosineAnnealingLR, closed form)
class CosineAnnealingLR : public LRScheduler {
public:
    CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);
    double rate_at(int64_t epoch) const override;

private:
    int64_t t_max_;
    double eta_min_;
};

}  // namespace kasmina::optim
