#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/engine.h"
#include "runtime/grad_mode.h"

namespace kasmina {
namespace {

// Pointer to element `linear` (row-major over the shape) of a strided float64 tensor.
double* element(const Tensor& tensor, int64_t linear) {
    int64_t offset = 0;
    for (int64_t d = tensor.dim() - 1; d >= 0; --d) {
        offset += (linear % tensor.size(d)) * tensor.stride(d);
        linear /= tensor.size(d);
    }
    return static_cast<double*>(tensor.raw_data()) + offset;
}

std::vector<double> evaluate(const GradcheckFunction& function, const std::vector<Tensor>& inputs) {
    NoGradGuard no_grad;
    return function(inputs).to_vector<double>();
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFunction& function, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
    for (const Tensor& input : inputs) {
        if (!input.requires_grad()) continue;
        if (input.dtype() != DType::f64 || !input.device().is_cpu() || !input.is_leaf())
            raise<DTypeError>("gradcheck", "inputs that require grad must be float64 CPU leaves, got ", input.describe());
    }
    GradcheckResult result;
    const Tensor output = function(inputs);
    if (!output.requires_grad()) {
        result.passed = false;
        result.message = "the function's output does not require grad";
        return result;
    }
    const int64_t outputs = output.numel();

    // Analytical Jacobian, row by row: backward of a one-hot gradient per output element.
    std::vector<std::vector<std::vector<double>>> analytical(inputs.size());  // [input][out][in]
    for (int64_t j = 0; j < outputs; ++j) {
        for (const Tensor& input : inputs)
            if (input.requires_grad()) const_cast<Tensor&>(input).set_grad(Tensor());
        Tensor seed = Tensor::zeros(output.shape(), output.options());
        *element(seed, j) = 1.0;
        autograd::backward({output}, {seed}, /*retain_graph=*/true);
        for (size_t i = 0; i < inputs.size(); ++i) {
            if (!inputs[i].requires_grad()) continue;
            const Tensor grad = inputs[i].grad();
            analytical[i].push_back(grad.defined() ? grad.to_vector<double>() : std::vector<double>(inputs[i].numel(), 0.0));
        }
    }
    for (const Tensor& input : inputs)
        if (input.requires_grad()) const_cast<Tensor&>(input).set_grad(Tensor());

    // Numerical Jacobian, column by column: central differences around each input element.
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].requires_grad()) continue;
        for (int64_t k = 0; k < inputs[i].numel(); ++k) {
            double* value = element(inputs[i], k);
            const double original = *value;
            *value = original + options.eps;
            const std::vector<double> plus = evaluate(function, inputs);
            *value = original - options.eps;
            const std::vector<double> minus = evaluate(function, inputs);
            *value = original;
            for (int64_t j = 0; j < outputs; ++j) {
                const double numerical = (plus[j] - minus[j]) / (2.0 * options.eps);
                const double analytic = analytical[i][j][k];
                const double error = std::abs(numerical - analytic);
                result.max_abs_error = std::max(result.max_abs_error, error);
                if ((error > options.atol + options.rtol * std::abs(numerical) || std::isnan(analytic) != std::isnan(numerical)) &&
                    result.passed) {
                    result.passed = false;
                    std::ostringstream message;
                    message << "input " << i << " element " << k << ", output element " << j << ": analytical " << analytic
                            << " vs numerical " << numerical;
                    result.message = message.str();
                }
            }
        }
    }
    return result;
}

}  // namespace kasmina
