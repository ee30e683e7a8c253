// The demo host network for Fashion-MNIST, using every layer kind Kasmina wraps:
//   conv stages  Conv2d+BatchNorm2d+ReLU x3 (28x28 -> 14x14 -> 7x7, stride-2 downsampling)
//   token stage  49 tokens of 64 features: x + MultiheadAttention(LayerNorm(x)), mean-pooled
//   head         Linear(64, 128) + BatchNorm1d + ReLU + Linear(128, 10)
// Children are looked up by name on every forward, so wrap() can swap them in place.
#pragma once

#include "layers/layers.h"

namespace kasmina::train {

class FashionNet : public nn::Module {
public:
    FashionNet();
    std::string type_name() const override { return "FashionNet"; }
    Tensor forward(const Tensor& images) override;  // [B, 1, 28, 28] -> logits [B, 10]

private:
    Tensor stage(const std::string& conv, const std::string& norm, const Tensor& x);
};

}  // namespace kasmina::train
