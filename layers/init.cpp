#include "layers/init.h"

#include <cmath>

#include "autograd/ops.h"
#include "runtime/grad_mode.h"

namespace kasmina::nn::init {

Tensor uniform(const Shape& shape, double low, double high, Generator* generator) {
    NoGradGuard no_grad;
    return Tensor::rand(shape, {}, generator) * (high - low) + low;
}

Tensor kaiming_uniform_default(const Shape& shape, int64_t fan_in, Generator* generator) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    return uniform(shape, -bound, bound, generator);
}

Tensor xavier_uniform(const Shape& shape, int64_t fan_in, int64_t fan_out, Generator* generator) {
    const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
    return uniform(shape, -bound, bound, generator);
}

}  // namespace kasmina::nn::init
