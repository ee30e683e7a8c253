// Parameter initialization with PyTorch's distributions (torch.nn.init), drawing from the
// counter-based generator so a seed reproduces the same model on CPU and GPU.
#pragma once

#include "runtime/random.h"
#include "runtime/tensor.h"

namespace kasmina::nn::init {

// Uniform in [low, high).
Tensor uniform(const Shape& shape, double low, double high, Generator* generator = nullptr);
// kaiming_uniform_(a = sqrt(5)) as nn.Linear / nn.Conv2d use it: bound = 1 / sqrt(fan_in).
Tensor kaiming_uniform_default(const Shape& shape, int64_t fan_in, Generator* generator = nullptr);
// xavier_uniform_: bound = sqrt(6 / (fan_in + fan_out)).
Tensor xavier_uniform(const Shape& shape, int64_t fan_in, int64_t fan_out, Generator* generator = nullptr);

}  // namespace kasmina::nn::init
