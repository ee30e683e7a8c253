// Numerical gradient checking: compares the analytical Jacobian (from backward) of a function of
// float64 tensors with central finite differences, element by element.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace kasmina {

struct GradcheckOptions {
    double eps = 1e-6;
    double atol = 1e-5;
    double rtol = 1e-3;
};

struct GradcheckResult {
    bool passed = true;
    double max_abs_error = 0.0;
    std::string message;  // the first mismatch: input, element, output element, both values
    explicit operator bool() const { return passed; }
};

using GradcheckFunction = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs that require grad must be float64 CPU leaves (any strides); the others are passed through.
GradcheckResult gradcheck(const GradcheckFunction& function, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace kasmina
