#include "layers/optim.h"

#include <cmath>

#include "autograd/ops.h"
#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

namespace kasmina::optim {

Optimizer::Optimizer(std::vector<Tensor> parameters) : parameters_(std::move(parameters)) {
    for (const Tensor& p : parameters_)
        if (!p.defined() || !p.is_leaf() || !is_floating(p.dtype()))
            raise<Error>("Optimizer", "parameters must be floating leaf tensors, got ", p.describe());
}

void Optimizer::zero_grad() {
    for (Tensor& p : parameters_) p.set_grad(Tensor());
}

void Optimizer::add_parameters(const std::vector<Tensor>& parameters) {
    for (const Tensor& p : parameters) {
        if (!p.defined() || !p.is_leaf() || !is_floating(p.dtype()))
            raise<Error>("Optimizer", "parameters must be floating leaf tensors, got ", p.describe());
        parameters_.push_back(p);
    }
}

void Optimizer::set_parameters(std::vector<Tensor> parameters) {
    for (const Tensor& p : parameters)
        if (!p.defined() || !p.is_leaf() || !is_floating(p.dtype()))
            raise<Error>("Optimizer", "parameters must be floating leaf tensors, got ", p.describe());
    std::vector<int> source(parameters.size(), -1);
    for (size_t i = 0; i < parameters.size(); ++i)
        for (size_t j = 0; j < parameters_.size(); ++j)
            if (parameters_[j].impl() == parameters[i].impl()) source[i] = static_cast<int>(j);
    remap_state(source);
    parameters_ = std::move(parameters);
}

namespace {

template <typename T>
std::vector<T> remapped(const std::vector<T>& old, const std::vector<int>& source, T fresh = T()) {
    std::vector<T> result;
    for (int index : source) result.push_back(index >= 0 && index < static_cast<int>(old.size()) ? old[index] : fresh);
    return result;
}

// Raises ArtifactError unless `state` holds `name` with `like`'s shape; returns it.
Tensor state_entry(const TensorMap& state, const std::string& name, const Tensor& like, const char* op) {
    const auto found = state.find(name);
    if (found == state.end()) raise<ArtifactError>(op, "optimizer state lacks '", name, "'");
    if (like.defined() && found->second.shape() != like.shape())
        raise<ArtifactError>(op, "optimizer state '", name, "' is ", shape_str(found->second.shape()), ", parameter is ",
                             shape_str(like.shape()));
    return found->second;
}

double scalar_entry(const TensorMap& state, const std::string& name, const char* op) {
    return state_entry(state, name, Tensor(), op).item();
}

}  // namespace

// ---- SGD -----------------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> parameters, SGDOptions options) : Optimizer(std::move(parameters)), options_(options) {
    if (options.lr < 0 || options.momentum < 0 || options.weight_decay < 0)
        raise<Error>("SGD", "lr, momentum and weight_decay must be non-negative");
    if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
        raise<Error>("SGD", "Nesterov momentum requires a momentum and zero dampening");
    learning_rate_ = options.lr;
}

// g = grad + wd * p;  buf = momentum * buf + (1 - dampening) * g (buf = g on the first step);
// g = nesterov ? g + momentum * buf : buf;  p -= lr * g
void SGD::step() {
    NoGradGuard no_grad;
    momentum_buffers_.resize(parameters_.size());
    for (size_t i = 0; i < parameters_.size(); ++i) {
        Tensor& p = parameters_[i];
        const Tensor grad = p.grad();
        if (!grad.defined()) continue;
        Tensor g = options_.weight_decay != 0 ? grad + p * options_.weight_decay : grad;
        if (options_.momentum != 0) {
            Tensor& buffer = momentum_buffers_[i];
            if (!buffer.defined()) {
                buffer = g.clone();
            } else {
                buffer.copy_(buffer * options_.momentum + g * (1.0 - options_.dampening));
            }
            g = options_.nesterov ? g + buffer * options_.momentum : buffer;
        }
        kernels::add_into(p, g, -learning_rate_);
        p.impl()->storage->bump_version();
    }
}

void SGD::remap_state(const std::vector<int>& source) { momentum_buffers_ = remapped(momentum_buffers_, source); }

TensorMap SGD::state_dict() const {
    TensorMap state{{"lr", Tensor::scalar(learning_rate_, {.dtype = DType::f64})}};
    for (size_t i = 0; i < momentum_buffers_.size(); ++i)
        if (momentum_buffers_[i].defined()) state.emplace(std::to_string(i) + ".momentum_buffer", momentum_buffers_[i]);
    return state;
}

void SGD::load_state_dict(const TensorMap& state) {
    const double lr = scalar_entry(state, "lr", "SGD::load_state_dict");
    std::vector<Tensor> buffers(parameters_.size());
    for (size_t i = 0; i < parameters_.size(); ++i) {
        const std::string name = std::to_string(i) + ".momentum_buffer";
        if (state.count(name))
            buffers[i] = state_entry(state, name, parameters_[i], "SGD::load_state_dict").to(parameters_[i].device()).clone();
    }
    learning_rate_ = lr;
    momentum_buffers_ = std::move(buffers);
}

// ---- AdamW ---------------------------------------------------------------------------------------

AdamW::AdamW(std::vector<Tensor> parameters, AdamWOptions options) : Optimizer(std::move(parameters)), options_(options) {
    if (options.lr < 0 || options.eps < 0 || options.weight_decay < 0 || options.beta1 < 0 || options.beta1 >= 1 ||
        options.beta2 < 0 || options.beta2 >= 1)
        raise<Error>("AdamW", "invalid hyperparameters (lr, eps, weight_decay >= 0; betas in [0, 1))");
    learning_rate_ = options.lr;
}

// p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void AdamW::step() {
    NoGradGuard no_grad;
    exp_avg_.resize(parameters_.size());
    exp_avg_sq_.resize(parameters_.size());
    steps_.resize(parameters_.size(), 0);
    for (size_t i = 0; i < parameters_.size(); ++i) {
        Tensor& p = parameters_[i];
        const Tensor grad = p.grad();
        if (!grad.defined()) continue;
        if (!exp_avg_[i].defined()) {
            exp_avg_[i] = Tensor::zeros(p.shape(), p.options());
            exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.options());
        }
        const int64_t t = ++steps_[i];
        if (options_.weight_decay != 0) p.copy_(p * (1.0 - learning_rate_ * options_.weight_decay));
        exp_avg_[i].copy_(exp_avg_[i] * options_.beta1 + grad * (1.0 - options_.beta1));
        exp_avg_sq_[i].copy_(exp_avg_sq_[i] * options_.beta2 + grad * grad * (1.0 - options_.beta2));
        const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
        const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
        const Tensor denominator = sqrt(exp_avg_sq_[i]) / std::sqrt(bias_correction2) + options_.eps;
        kernels::add_into(p, exp_avg_[i] / denominator, -learning_rate_ / bias_correction1);
        p.impl()->storage->bump_version();
    }
}

void AdamW::remap_state(const std::vector<int>& source) {
    exp_avg_ = remapped(exp_avg_, source);
    exp_avg_sq_ = remapped(exp_avg_sq_, source);
    steps_ = remapped<int64_t>(steps_, source, 0);
}

TensorMap AdamW::state_dict() const {
    TensorMap state{{"lr", Tensor::scalar(learning_rate_, {.dtype = DType::f64})}};
    for (size_t i = 0; i < exp_avg_.size(); ++i) {
        if (!exp_avg_[i].defined()) continue;
        const std::string prefix = std::to_string(i) + ".";
        state.emplace(prefix + "exp_avg", exp_avg_[i]);
        state.emplace(prefix + "exp_avg_sq", exp_avg_sq_[i]);
        state.emplace(prefix + "step", Tensor::scalar(static_cast<double>(steps_[i]), {.dtype = DType::i64}));
    }
    return state;
}

void AdamW::load_state_dict(const TensorMap& state) {
    const char* op = "AdamW::load_state_dict";
    const double lr = scalar_entry(state, "lr", op);
    std::vector<Tensor> averages(parameters_.size()), squares(parameters_.size());
    std::vector<int64_t> steps(parameters_.size(), 0);
    for (size_t i = 0; i < parameters_.size(); ++i) {
        const std::string prefix = std::to_string(i) + ".";
        if (!state.count(prefix + "step")) continue;
        const Device device = parameters_[i].device();
        averages[i] = state_entry(state, prefix + "exp_avg", parameters_[i], op).to(device).clone();
        squares[i] = state_entry(state, prefix + "exp_avg_sq", parameters_[i], op).to(device).clone();
        steps[i] = static_cast<int64_t>(scalar_entry(state, prefix + "step", op));
    }
    learning_rate_ = lr;
    exp_avg_ = std::move(averages);
    exp_avg_sq_ = std::move(squares);
    steps_ = std::move(steps);
}

// ---- schedules -----------------------------------------------------------------------------------

void LRScheduler::step() { set_epoch(epoch_ + 1); }

void LRScheduler::set_epoch(int64_t epoch) {
    epoch_ = epoch;
    optimizer_.set_learning_rate(rate_at(epoch_));
}

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
    if (step_size <= 0) raise<Error>("StepLR", "step_size must be positive, got ", step_size);
}

double StepLR::rate_at(int64_t epoch) const { return base_lr_ * std::pow(gamma_, static_cast<double>(epoch / step_size_)); }

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
    if (t_max <= 0) raise<Error>("CosineAnnealingLR", "T_max must be positive, got ", t_max);
}

double CosineAnnealingLR::rate_at(int64_t epoch) const {
    constexpr double kPi = 3.14159265358979323846;
    return eta_min_ + (base_lr_ - eta_min_) * (1.0 + std::cos(kPi * static_cast<double>(epoch) / static_cast<double>(t_max_))) / 2.0;
}

}  // namespace kasmina::optim
