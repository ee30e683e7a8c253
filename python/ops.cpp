// The differentiable functions of autograd/ops.h (and convolution, normalization, attention) under
// their C++ names, plus the autograd controls: backward over several roots and the grad mode.
#include "python/bindings.h"

namespace kasmina::python {
namespace {

using Unary = Tensor (*)(const Tensor&);
using Binary = Tensor (*)(const Tensor&, const Tensor&);
using Reduce = Tensor (*)(const Tensor&, const std::vector<int64_t>&, bool);

Reduction parse_reduction(const std::string& name) {
    if (name == "mean") return Reduction::mean;
    if (name == "sum") return Reduction::sum;
    if (name == "none") return Reduction::none;
    raise<Error>("reduction", "expected 'mean', 'sum' or 'none', got '", name, "'");
}

// Optional tensor arguments arrive as None.
Tensor or_undefined(const std::optional<Tensor>& tensor) { return tensor.value_or(Tensor()); }

}  // namespace

void bind_ops(py::module_& m) {
    for (const auto& [name, op] : {std::pair<const char*, Unary>{"neg", &neg}, {"exp", &exp}, {"log", &log},
                                   {"sqrt", &sqrt}, {"rsqrt", &rsqrt}, {"abs", &abs}, {"relu", &relu},
                                   {"sigmoid", &sigmoid}, {"tanh", &tanh}, {"sign", &sign}})
        m.def(name, op, py::arg("input"));
    for (const auto& [name, op] : {std::pair<const char*, Binary>{"add", &add}, {"sub", &sub}, {"mul", &mul},
                                   {"div", &div}, {"maximum", &maximum}, {"minimum", &minimum}, {"eq", &eq},
                                   {"ne", &ne}, {"lt", &lt}, {"le", &le}, {"gt", &gt}, {"ge", &ge},
                                   {"matmul", &matmul}})
        m.def(name, op, py::arg("input"), py::arg("other"));
    for (const auto& [name, op] : {std::pair<const char*, Reduce>{"sum", &sum}, {"mean", &mean}, {"amax", &amax},
                                   {"amin", &amin}}) {
        m.def(name, op, py::arg("input"), py::arg("dims") = std::vector<int64_t>{}, py::arg("keepdim") = false);
    }
    m.def("pow", py::overload_cast<const Tensor&, const Tensor&>(&pow), py::arg("input"), py::arg("exponent"));
    m.def("pow", py::overload_cast<const Tensor&, double>(&pow), py::arg("input"), py::arg("exponent"));
    m.def("gelu", &gelu, py::arg("input"), py::arg("approximate") = "none");
    m.def("clamp", &clamp, py::arg("input"), py::arg("min") = py::none(), py::arg("max") = py::none());
    m.def("where", &where, py::arg("condition"), py::arg("input"), py::arg("other"));
    m.def("masked_fill", &masked_fill, py::arg("input"), py::arg("mask"), py::arg("value"));
    m.def("var", &var, py::arg("input"), py::arg("dims") = std::vector<int64_t>{}, py::arg("unbiased") = true,
          py::arg("keepdim") = false);
    m.def("max", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) -> py::object {
        if (!dim) return py::cast(max(x));
        return py::cast(max(x, *dim, keepdim));
    }, py::arg("input"), py::arg("dim") = py::none(), py::arg("keepdim") = false);
    m.def("argmax", &argmax, py::arg("input"), py::arg("dim"), py::arg("keepdim") = false);
    m.def("logsumexp", &logsumexp, py::arg("input"), py::arg("dims"), py::arg("keepdim") = false);
    m.def("linear", [](const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
        return linear(x, weight, or_undefined(bias));
    }, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none());
    m.def("softmax", &softmax, py::arg("input"), py::arg("dim"));
    m.def("log_softmax", &log_softmax, py::arg("input"), py::arg("dim"));
    m.def("cat", &cat, py::arg("tensors"), py::arg("dim") = 0);
    m.def("stack", &stack, py::arg("tensors"), py::arg("dim") = 0);
    m.def("split", &split, py::arg("input"), py::arg("split_size"), py::arg("dim") = 0);
    m.def("index_select", &index_select, py::arg("input"), py::arg("dim"), py::arg("index"));
    m.def("gather", &gather, py::arg("input"), py::arg("dim"), py::arg("index"));
    m.def("embedding", &embedding, py::arg("weight"), py::arg("indices"));
    m.def("one_hot", &one_hot, py::arg("indices"), py::arg("num_classes") = -1);
    m.def("cross_entropy", [](const Tensor& logits, const Tensor& target, const std::string& reduction,
                              double label_smoothing) {
        return cross_entropy(logits, target, parse_reduction(reduction), label_smoothing);
    }, py::arg("input"), py::arg("target"), py::arg("reduction") = "mean", py::arg("label_smoothing") = 0.0);
    m.def("mse_loss", [](const Tensor& input, const Tensor& target, const std::string& reduction) {
        return mse_loss(input, target, parse_reduction(reduction));
    }, py::arg("input"), py::arg("target"), py::arg("reduction") = "mean");
    m.def("dropout", [](const Tensor& x, double p, bool training) { return dropout(x, p, training); },
          py::arg("input"), py::arg("p") = 0.5, py::arg("training") = true);
    m.def("conv2d", [](const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, const py::object& stride,
                       const py::object& padding, const py::object& dilation, int64_t groups) {
        return conv2d(x, weight, or_undefined(bias),
                      {int_pair(stride, "conv2d stride"), int_pair(padding, "conv2d padding"),
                       int_pair(dilation, "conv2d dilation"), groups});
    }, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
       py::arg("dilation") = 1, py::arg("groups") = 1);
    m.def("layer_norm", [](const Tensor& x, const py::object& normalized_shape, const std::optional<Tensor>& weight,
                           const std::optional<Tensor>& bias, double eps) {
        return layer_norm(x, int_or_shape(normalized_shape), or_undefined(weight), or_undefined(bias), eps);
    }, py::arg("input"), py::arg("normalized_shape"), py::arg("weight") = py::none(), py::arg("bias") = py::none(),
       py::arg("eps") = 1e-5);
    m.def("scaled_dot_product_attention", [](const Tensor& q, const Tensor& k, const Tensor& v,
                                             const std::optional<Tensor>& mask, bool is_causal) {
        return scaled_dot_product_attention(q, k, v, or_undefined(mask), is_causal);
    }, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("attn_mask") = py::none(),
       py::arg("is_causal") = false);

    // ---- autograd and random controls ----------------------------------------------------------------
    m.def("backward", [](const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
        autograd::backward(roots, grads, retain_graph);
    }, py::arg("tensors"), py::arg("grad_tensors") = std::vector<Tensor>{}, py::arg("retain_graph") = false,
       "Runs backward from several roots at once (undefined gradients: ones, for one-element roots).");
    m.def("is_grad_enabled", &GradMode::is_enabled);
    m.def("set_grad_enabled", &GradMode::set_enabled, py::arg("enabled"));
    m.def("manual_seed", &manual_seed, py::arg("seed"), "Seeds the default generator (init, dropout, rand/randn).");
    m.def("cuda_is_available", &cuda_is_available);
    m.def("cuda_device_count", &cuda_device_count);
    m.def("synchronize", [](const std::string& device) { synchronize(parse_device(device)); }, py::arg("device") = "cuda");
}

}  // namespace kasmina::python
