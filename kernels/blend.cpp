// Checks and output allocation for the seed blend, above the backends.
#include "kernels/blend.h"

#include "kernels/backend.h"
#include "kernels/cpu/cpu_blend.h"
#include "kernels/kernels.h"

namespace kasmina::kernels {
namespace {

void check_operands(const char* op, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                    const std::vector<double>& coefficients, const std::vector<Tensor>& guards) {
    if (!guards.empty() && guards.size() != kernel_outputs.size())
        raise<ShapeError>(op, "expected no guards or one per kernel output (", kernel_outputs.size(), "), got ", guards.size());
    for (size_t i = 0; i < guards.size(); ++i) {
        const Tensor& guard = guards[i];
        if (!guard.defined()) continue;
        if (guard.dtype() != DType::boolean || guard.numel() != 1 || guard.device() != d.device())
            raise<ShapeError>(op, "guard ", i, " must be a one-element bool tensor on ", d.device().str(), ", got ",
                              guard.describe());
    }
    if (coefficients.size() != kernel_outputs.size() + 1)
        raise<ShapeError>(op, "expected ", kernel_outputs.size() + 1, " coefficients for ", kernel_outputs.size(),
                          " kernel outputs, got ", coefficients.size());
    if (!is_floating(d.dtype())) raise<DTypeError>(op, "expected a floating tensor, got ", d.describe());
    for (size_t i = 0; i < kernel_outputs.size(); ++i) {
        const Tensor& k = kernel_outputs[i];
        common_device(op, {&d, &k});
        check_same_dtype(op, d, k);
        if (k.shape() != d.shape())
            raise<ShapeError>(op, "kernel output ", i, " has shape ", shape_str(k.shape()), ", the layer output ",
                              shape_str(d.shape()), " (a seed kernel must produce the layer's output shape)");
    }
    select_backend(d.device(), op);
}

std::vector<Tensor> dense(const std::vector<Tensor>& tensors) {
    std::vector<Tensor> result;
    for (const Tensor& t : tensors) result.push_back(t.is_contiguous() ? t : t.detach().contiguous());
    return result;
}

Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : t.detach().contiguous(); }

}  // namespace

Tensor blend(const Tensor& d, const std::vector<Tensor>& kernel_outputs, const std::vector<double>& coefficients,
             const std::vector<Tensor>& guards) {
    check_operands("blend_seeds", d, kernel_outputs, coefficients, guards);
    Tensor out = Tensor::empty(d.shape(), d.options());
    KASMINA_BACKEND(d.device(), blend, dense(d), dense(kernel_outputs), coefficients, guards, out);
    return out;
}

BlendBackward blend_backward(const Tensor& grad, const Tensor& d, const std::vector<Tensor>& kernel_outputs,
                             const std::vector<double>& coefficients, bool need_grad_d, bool need_dots,
                             const std::vector<Tensor>& guards) {
    check_operands("blend_seeds_backward", d, kernel_outputs, coefficients, guards);
    BlendBackward result;
    if (need_grad_d) result.grad_d = Tensor::empty(d.shape(), d.options());
    for (size_t i = 0; i < kernel_outputs.size(); ++i) result.grad_kernels.push_back(Tensor::empty(d.shape(), d.options()));
    result.grad_dot_kernels.assign(kernel_outputs.size(), 0.0);
    KASMINA_BACKEND(d.device(), blend_backward, dense(grad), dense(d), dense(kernel_outputs), coefficients, guards, result,
                    need_dots);
    return result;
}

}  // namespace kasmina::kernels
