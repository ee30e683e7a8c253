#include "autograd/blend.h"

#include <algorithm>
#include <numeric>

#include "autograd/node.h"
#include "kernels/blend.h"

namespace kasmina {

std::vector<double> blend_coefficients(const std::vector<double>& alphas) {
    const double total = std::accumulate(alphas.begin(), alphas.end(), 0.0);
    std::vector<double> coefficients(alphas.size() + 1, 0.0);
    if (total <= 0.0) {
        coefficients[0] = 1.0;
        return coefficients;
    }
    const double blend = std::min(total, 1.0);
    coefficients[0] = 1.0 - blend;
    for (size_t i = 0; i < alphas.size(); ++i) coefficients[i + 1] = blend * alphas[i] / total;
    return coefficients;
}

// out [*] = c0 d [*] + sum_i c_i k_i [*]
// grad_d = c0 grad; grad_k_i = c_i grad;
// grad_a_i = sum(grad * (k_i - d))               when S <= 1 (A = S)
//          = (sum(grad * k_i) - sum(grad * out)) / S   when S > 1 (A = 1)
Tensor blend_seeds(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const Tensor& alphas,
                   const std::vector<Tensor>& guards) {
    if (!alphas.defined() || alphas.dim() != 1 || alphas.numel() != static_cast<int64_t>(kernel_outputs.size()))
        raise<ShapeError>("blend_seeds", "alphas must be 1-D with one value per kernel output (", kernel_outputs.size(),
                          "), got ", alphas.describe());
    if (!alphas.device().is_cpu()) raise<DeviceError>("blend_seeds", "alphas are a host tensor, got ", alphas.describe());
    const std::vector<double> alpha_values = alphas.to_vector<double>();
    for (double a : alpha_values)
        if (!(a >= 0.0)) raise<Error>("blend_seeds", "alphas must be non-negative, got ", a);
    const std::vector<double> coefficients = blend_coefficients(alpha_values);
    Tensor out = kernels::blend(d, kernel_outputs, coefficients, guards);

    std::vector<Tensor> inputs{d, alphas};
    inputs.insert(inputs.end(), kernel_outputs.begin(), kernel_outputs.end());
    if (!autograd::needs_grad(inputs)) return out;
    const bool need_d = d.requires_grad(), need_alphas = alphas.requires_grad();
    const autograd::SavedTensor saved_d(need_alphas ? d : Tensor());
    std::vector<autograd::SavedTensor> saved_kernels;
    for (const Tensor& k : kernel_outputs) saved_kernels.emplace_back(need_alphas ? k : Tensor());
    const double total = std::accumulate(alpha_values.begin(), alpha_values.end(), 0.0);
    const DType alpha_dtype = alphas.dtype();
    return autograd::record("blend_seeds", out, inputs, [=](const std::vector<Tensor>& g) {
        // Without alpha gradients the saved values are not needed: grad stands in (never read).
        std::vector<Tensor> kernels_now;
        for (const auto& saved : saved_kernels) kernels_now.push_back(need_alphas ? saved.unpack("blend_seeds") : g[0]);
        const Tensor d_now = need_alphas ? saved_d.unpack("blend_seeds") : g[0];
        kernels::BlendBackward backward =
            kernels::blend_backward(g[0], d_now, kernels_now, coefficients, need_d, need_alphas, guards);
        Tensor grad_alphas;
        if (need_alphas) {
            std::vector<double> values(alpha_values.size(), 0.0);
            double grad_dot_out = 0.0;
            for (size_t i = 0; i < alpha_values.size(); ++i) grad_dot_out += alpha_values[i] / total * backward.grad_dot_kernels[i];
            for (size_t i = 0; i < alpha_values.size(); ++i)
                values[i] = total <= 1.0 ? backward.grad_dot_kernels[i] - backward.grad_dot_d
                                         : (backward.grad_dot_kernels[i] - grad_dot_out) / total;
            grad_alphas = Tensor::from_vector<double>(values, {static_cast<int64_t>(values.size())}).to(alpha_dtype);
        }
        std::vector<Tensor> grads{backward.grad_d, grad_alphas};
        for (Tensor& k : backward.grad_kernels) grads.push_back(k);
        return grads;
    });
}

}  // namespace kasmina
