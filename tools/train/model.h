// The demo host network for Fashion-MNIST, using every layer kind Kasmina wraps; W is the width:
//   conv stages  Conv2d+BatchNorm2d+ReLU x3 (1 -> W -> 2W -> 2W channels; 28x28 -> 14x14 -> 7x7)
//   token stage  49 tokens of 2W features: x + MultiheadAttention(LayerNorm(x)) (4 heads), mean-pooled
//   head         Linear(2W, 4W) + BatchNorm1d + ReLU + Linear(4W, 10)
// Children are looked up by name on every forward, so wrap() can swap them in place.
#pragma once

#include "layers/layers.h"

namespace kasmina::train {

class FashionNet : public nn::Module {
public:
    static constexpr int64_t kDefaultWidth = 32;
    explicit FashionNet(int64_t width = kDefaultWidth);  // width: even, >= 2
    std::string type_name() const override { return "FashionNet"; }
    Tensor forward(const Tensor& images) override;  // [B, 1, 28, 28] -> logits [B, 10]

private:
    Tensor stage(const std::string& conv, const std::string& norm, const Tensor& x);
};

}  // namespace kasmina::train
