// CPU loops of the seed blend (kernels/blend.h); operands contiguous and of one shape.
#pragma once

#include "kernels/blend.h"

namespace kasmina::kernels::cpu {

void blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
           const Tensor& out);
void blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                    const std::vector<double>& coefficients, BlendBackward& result, bool need_dots);

}  // namespace kasmina::kernels::cpu
