// Parameter-free modules: activations, Dropout, Flatten and Identity, as in torch.nn.
#pragma once

#include <string>

#include "layers/module.h"
#include "runtime/random.h"

namespace kasmina::nn {

class ReLU : public Module {
public:
    std::string type_name() const override { return "ReLU"; }
    Tensor forward(const Tensor& input) override;
};

class GELU : public Module {
public:
    explicit GELU(std::string approximate = "none");
    std::string type_name() const override { return "GELU"; }
    std::string extra_repr() const override { return "approximate='" + approximate_ + "'"; }
    Tensor forward(const Tensor& input) override;

private:
    std::string approximate_;
};

class Tanh : public Module {
public:
    std::string type_name() const override { return "Tanh"; }
    Tensor forward(const Tensor& input) override;
};

class Sigmoid : public Module {
public:
    std::string type_name() const override { return "Sigmoid"; }
    Tensor forward(const Tensor& input) override;
};

// Zeroes elements with probability p in training (scaling the rest by 1/(1-p)); identity in eval.
class Dropout : public Module {
public:
    explicit Dropout(double p = 0.5, Generator* generator = nullptr);
    std::string type_name() const override { return "Dropout"; }
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;
    double p() const { return p_; }

private:
    double p_;
    Generator* generator_;
};

class Flatten : public Module {
public:
    explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim_(start_dim), end_dim_(end_dim) {}
    std::string type_name() const override { return "Flatten"; }
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;

private:
    int64_t start_dim_, end_dim_;
};

class Identity : public Module {
public:
    std::string type_name() const override { return "Identity"; }
    Tensor forward(const Tensor& input) override { return input; }
};

}  // namespace kasmina::nn
