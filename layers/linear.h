// nn.Linear: y = x W^T + b with W [out, in] and b [out], initialized like PyTorch.
#pragma once

#include "layers/module.h"

namespace kasmina::nn {

class Linear : public Module {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias = true);
    std::string type_name() const override { return "Linear"; }
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;  // [*, in] -> [*, out]

    int64_t in_features() const { return in_features_; }
    int64_t out_features() const { return out_features_; }
    Tensor weight;
    Tensor bias;  // undefined without bias

private:
    int64_t in_features_, out_features_;
};

}  // namespace kasmina::nn
