#include "layers/linear.h"

#include "autograd/ops.h"
#include "layers/init.h"

namespace kasmina::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias)
    : in_features_(in_features), out_features_(out_features) {
    if (in_features < 0 || out_features < 0)
        raise<ShapeError>("Linear", "features must be non-negative, got in=", in_features, " out=", out_features);
    weight = register_parameter("weight", init::kaiming_uniform_default({out_features, in_features}, in_features));
    if (has_bias) bias = register_parameter("bias", init::kaiming_uniform_default({out_features}, in_features));
}

std::string Linear::extra_repr() const {
    return make_message("in_features=", in_features_, ", out_features=", out_features_, ", bias=", py_bool(bias.defined()));
}

Tensor Linear::forward(const Tensor& input) {
    if (input.dim() < 1 || input.size(-1) != in_features_)
        raise<ShapeError>("Linear", "expected input [*, ", in_features_, "], got ", shape_str(input.shape()));
    return linear(input, weight, bias);
}

}  // namespace kasmina::nn
