#include "layers/activation.h"

#include "autograd/ops.h"

namespace kasmina::nn {

Tensor ReLU::forward(const Tensor& input) { return relu(input); }

GELU::GELU(std::string approximate) : approximate_(std::move(approximate)) {
    if (approximate_ != "none" && approximate_ != "tanh")
        raise<Error>("GELU", "approximate must be 'none' or 'tanh', got '", approximate_, "'");
}

Tensor GELU::forward(const Tensor& input) { return gelu(input, approximate_); }
Tensor Tanh::forward(const Tensor& input) { return tanh(input); }
Tensor Sigmoid::forward(const Tensor& input) { return sigmoid(input); }

Dropout::Dropout(double p, Generator* generator) : p_(p), generator_(generator) {
    if (!(p >= 0.0 && p <= 1.0)) raise<Error>("Dropout", "probability must be in [0, 1], got ", p);
}

std::string Dropout::extra_repr() const { return make_message("p=", p_, ", inplace=False"); }

Tensor Dropout::forward(const Tensor& input) { return dropout(input, p_, is_training(), generator_); }

std::string Flatten::extra_repr() const { return make_message("start_dim=", start_dim_, ", end_dim=", end_dim_); }

Tensor Flatten::forward(const Tensor& input) { return input.flatten(start_dim_, end_dim_); }

}  // namespace kasmina::nn
