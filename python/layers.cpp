// kasmina.nn and kasmina.optim in Python: Module (structure, mode, device, state dict), the standard
// layers with PyTorch's constructor arguments, Sequential, and the optimizers and schedules.
#include <sstream>

#include "python/bindings.h"

namespace kasmina::python {
namespace {

template <typename Layer>
using ModuleClass = py::class_<Layer, nn::Module, std::shared_ptr<Layer>>;

// `weight`/`bias`-style members as read-only properties (None when undefined); write through copy_().
template <typename Layer>
void tensor_properties(ModuleClass<Layer>& cls, std::initializer_list<std::pair<const char*, Tensor Layer::*>> members) {
    for (const auto& [name, member] : members)
        cls.def_property_readonly(name, [member](const Layer& layer) -> py::object {
            const Tensor& tensor = layer.*member;
            return tensor.defined() ? py::cast(tensor) : py::none();
        });
}

std::string module_repr(const nn::Module& module) {
    std::ostringstream stream;
    module.print(stream);
    return stream.str();
}

}  // namespace

void bind_layers(py::module_& m) {
    py::module_ nn = m.def_submodule("nn", "Modules with PyTorch's parameters, defaults and behaviour.");
    py::class_<nn::Module, std::shared_ptr<nn::Module>>(nn, "Module", "The base of every layer (layers/module.h).")
        .def("forward", py::overload_cast<const Tensor&>(&nn::Module::forward), py::arg("input"))
        .def("__call__", py::overload_cast<const Tensor&>(&nn::Module::forward), py::arg("input"))
        .def_property_readonly("type_name", &nn::Module::type_name)
        .def("parameters", &nn::Module::parameters, py::arg("recurse") = true)
        .def("named_parameters", &nn::Module::named_parameters, py::arg("recurse") = true)
        .def("named_buffers", &nn::Module::named_buffers, py::arg("recurse") = true)
        .def("named_children", &nn::Module::named_children)
        .def("named_modules", [](nn::Module& module) { return module.named_modules(); })
        .def("child", &nn::Module::child, py::arg("name"))
        .def("train", [](nn::Module& module, bool on) { module.train(on); }, py::arg("mode") = true)
        .def("eval", &nn::Module::eval)
        .def_property_readonly("training", &nn::Module::is_training)
        .def("to", [](nn::Module& module, const std::string& device) { module.to(parse_device(device)); }, py::arg("device"))
        .def("to", [](nn::Module& module, DType dtype) { module.to(dtype); }, py::arg("dtype"))
        .def("zero_grad", &nn::Module::zero_grad)
        .def("state_dict", &nn::Module::state_dict, "Parameters and buffers by dotted name (aliases, not copies).")
        .def("load_state_dict", &nn::Module::load_state_dict, py::arg("state_dict"), py::arg("strict") = true)
        .def("save", &nn::Module::save, py::arg("path"), "Writes the state dict as safetensors.")
        .def("load", &nn::Module::load, py::arg("path"), py::arg("strict") = true)
        .def("__repr__", &module_repr);

    ModuleClass<nn::Linear> linear(nn, "Linear");
    linear.def(py::init<int64_t, int64_t, bool>(), py::arg("in_features"), py::arg("out_features"), py::arg("bias") = true)
        .def_property_readonly("in_features", &nn::Linear::in_features)
        .def_property_readonly("out_features", &nn::Linear::out_features);
    tensor_properties(linear, {{"weight", &nn::Linear::weight}, {"bias", &nn::Linear::bias}});

    ModuleClass<nn::Conv2d> conv(nn, "Conv2d");
    conv.def(py::init([](int64_t in_channels, int64_t out_channels, const py::object& kernel_size, const py::object& stride,
                         const py::object& padding, const py::object& dilation, int64_t groups, bool bias) {
                 return std::make_shared<nn::Conv2d>(
                     in_channels, out_channels, int_pair(kernel_size, "Conv2d kernel_size"),
                     nn::Conv2dOptions{int_pair(stride, "Conv2d stride"), int_pair(padding, "Conv2d padding"),
                                       int_pair(dilation, "Conv2d dilation"), groups, bias});
             }),
             py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"), py::arg("stride") = 1,
             py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("bias") = true)
        .def_property_readonly("in_channels", &nn::Conv2d::in_channels)
        .def_property_readonly("out_channels", &nn::Conv2d::out_channels);
    tensor_properties(conv, {{"weight", &nn::Conv2d::weight}, {"bias", &nn::Conv2d::bias}});

    ModuleClass<nn::LayerNorm> layer_norm(nn, "LayerNorm");
    layer_norm.def(py::init([](const py::object& normalized_shape, double eps, bool elementwise_affine, bool bias) {
                       return std::make_shared<nn::LayerNorm>(int_or_shape(normalized_shape),
                                                              nn::LayerNormOptions{eps, elementwise_affine, bias});
                   }),
                   py::arg("normalized_shape"), py::arg("eps") = 1e-5, py::arg("elementwise_affine") = true,
                   py::arg("bias") = true)
        .def_property_readonly("normalized_shape", &nn::LayerNorm::normalized_shape);
    tensor_properties(layer_norm, {{"weight", &nn::LayerNorm::weight}, {"bias", &nn::LayerNorm::bias}});

    ModuleClass<nn::BatchNorm> batch_norm(nn, "BatchNorm");
    batch_norm.def_property_readonly("num_features", &nn::BatchNorm::num_features);
    tensor_properties(batch_norm, {{"weight", &nn::BatchNorm::weight}, {"bias", &nn::BatchNorm::bias},
                                   {"running_mean", &nn::BatchNorm::running_mean},
                                   {"running_var", &nn::BatchNorm::running_var},
                                   {"num_batches_tracked", &nn::BatchNorm::num_batches_tracked}});
    const auto batch_norm_init = [](auto tag) {
        using Layer = typename decltype(tag)::type;
        return py::init([](int64_t num_features, double eps, std::optional<double> momentum, bool affine,
                           bool track_running_stats) {
            return std::make_shared<Layer>(num_features, nn::BatchNormOptions{eps, momentum, affine, track_running_stats});
        });
    };
    const auto batch_norm_args = std::make_tuple(py::arg("num_features"), py::arg("eps") = 1e-5, py::arg("momentum") = 0.1,
                                                 py::arg("affine") = true, py::arg("track_running_stats") = true);
    std::apply([&](auto... args) {
        ModuleClass<nn::BatchNorm1d>(nn, "BatchNorm1d").def(batch_norm_init(std::type_identity<nn::BatchNorm1d>()), args...);
        ModuleClass<nn::BatchNorm2d>(nn, "BatchNorm2d").def(batch_norm_init(std::type_identity<nn::BatchNorm2d>()), args...);
    }, batch_norm_args);

    ModuleClass<nn::MultiheadAttention>(nn, "MultiheadAttention")
        .def(py::init([](int64_t embed_dim, int64_t num_heads, double dropout, bool bias, bool batch_first,
                         std::optional<int64_t> kdim, std::optional<int64_t> vdim) {
                 return std::make_shared<nn::MultiheadAttention>(
                     embed_dim, num_heads,
                     nn::MultiheadAttentionOptions{dropout, bias, batch_first, kdim.value_or(0), vdim.value_or(0)});
             }),
             py::arg("embed_dim"), py::arg("num_heads"), py::arg("dropout") = 0.0, py::arg("bias") = true,
             py::arg("batch_first") = false, py::arg("kdim") = py::none(), py::arg("vdim") = py::none())
        .def("__call__", [](nn::MultiheadAttention& attention, const Tensor& query, const Tensor& key, const Tensor& value,
                            const std::optional<Tensor>& key_padding_mask, bool need_weights,
                            const std::optional<Tensor>& attn_mask, bool average_attn_weights, bool is_causal) {
                 const auto [output, weights] = attention.forward(
                     query, key, value,
                     {key_padding_mask.value_or(Tensor()), need_weights, attn_mask.value_or(Tensor()),
                      average_attn_weights, is_causal});
                 return py::make_tuple(output, weights.defined() ? py::cast(weights) : py::none());
             },
             py::arg("query"), py::arg("key"), py::arg("value"), py::arg("key_padding_mask") = py::none(),
             py::arg("need_weights") = true, py::arg("attn_mask") = py::none(), py::arg("average_attn_weights") = true,
             py::arg("is_causal") = false)
        .def("__call__", py::overload_cast<const Tensor&>(&nn::MultiheadAttention::forward), py::arg("input"))
        .def_property_readonly("embed_dim", &nn::MultiheadAttention::embed_dim)
        .def_property_readonly("num_heads", &nn::MultiheadAttention::num_heads)
        .def_readonly("in_proj_weight", &nn::MultiheadAttention::in_proj_weight)
        .def_readonly("in_proj_bias", &nn::MultiheadAttention::in_proj_bias)
        .def_readonly("out_proj", &nn::MultiheadAttention::out_proj);

    ModuleClass<nn::ReLU>(nn, "ReLU").def(py::init<>());
    ModuleClass<nn::Tanh>(nn, "Tanh").def(py::init<>());
    ModuleClass<nn::Sigmoid>(nn, "Sigmoid").def(py::init<>());
    ModuleClass<nn::Identity>(nn, "Identity").def(py::init<>());
    ModuleClass<nn::GELU>(nn, "GELU").def(py::init<std::string>(), py::arg("approximate") = "none");
    ModuleClass<nn::Dropout>(nn, "Dropout").def(py::init([](double p) { return std::make_shared<nn::Dropout>(p); }),
                                                py::arg("p") = 0.5);
    ModuleClass<nn::Flatten>(nn, "Flatten").def(py::init<int64_t, int64_t>(), py::arg("start_dim") = 1, py::arg("end_dim") = -1);
    ModuleClass<nn::Sequential>(nn, "Sequential")
        .def(py::init([](const py::args& modules) {
            auto sequential = std::make_shared<nn::Sequential>();
            for (const py::handle module : modules) sequential->push_back(module.cast<std::shared_ptr<nn::Module>>());
            return sequential;
        }))
        .def("append", &nn::Sequential::push_back, py::arg("module"))
        .def("__len__", &nn::Sequential::size)
        .def("__getitem__", &nn::Sequential::operator[], py::arg("index"));

    // ---- optimizers and schedules -----------------------------------------------------------------------
    py::module_ optim = m.def_submodule("optim", "Optimizers with PyTorch's update rules, and learning-rate schedules.");
    py::class_<optim::Optimizer>(optim, "Optimizer")
        .def("step", &optim::Optimizer::step)
        .def("zero_grad", &optim::Optimizer::zero_grad)
        .def_property("lr", &optim::Optimizer::learning_rate, &optim::Optimizer::set_learning_rate)
        .def_property_readonly("parameters", &optim::Optimizer::parameters)
        .def("add_parameters", &optim::Optimizer::add_parameters, py::arg("parameters"))
        .def("set_parameters", &optim::Optimizer::set_parameters, py::arg("parameters"),
             "Replaces the parameter list; tensors already present keep their state.")
        .def("state_dict", &optim::Optimizer::state_dict)
        .def("load_state_dict", &optim::Optimizer::load_state_dict, py::arg("state_dict"));
    py::class_<optim::SGD, optim::Optimizer>(optim, "SGD")
        .def(py::init([](std::vector<Tensor> parameters, double lr, double momentum, double dampening,
                         double weight_decay, bool nesterov) {
                 return std::make_unique<optim::SGD>(std::move(parameters),
                                                     optim::SGDOptions{lr, momentum, dampening, weight_decay, nesterov});
             }),
             py::arg("params"), py::arg("lr") = 0.01, py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
             py::arg("weight_decay") = 0.0, py::arg("nesterov") = false);
    py::class_<optim::AdamW, optim::Optimizer>(optim, "AdamW")
        .def(py::init([](std::vector<Tensor> parameters, double lr, std::pair<double, double> betas, double eps,
                         double weight_decay) {
                 return std::make_unique<optim::AdamW>(
                     std::move(parameters), optim::AdamWOptions{lr, betas.first, betas.second, eps, weight_decay});
             }),
             py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::make_pair(0.9, 0.999),
             py::arg("eps") = 1e-8, py::arg("weight_decay") = 1e-2);
    py::class_<optim::LRScheduler>(optim, "LRScheduler")
        .def("step", &optim::LRScheduler::step)
        .def_property_readonly("epoch", &optim::LRScheduler::epoch);
    py::class_<optim::StepLR, optim::LRScheduler>(optim, "StepLR")
        .def(py::init<optim::Optimizer&, int64_t, double>(), py::arg("optimizer"), py::arg("step_size"),
             py::arg("gamma") = 0.1, py::keep_alive<1, 2>());
    py::class_<optim::CosineAnnealingLR, optim::LRScheduler>(optim, "CosineAnnealingLR")
        .def(py::init<optim::Optimizer&, int64_t, double>(), py::arg("optimizer"), py::arg("T_max"),
             py::arg("eta_min") = 0.0, py::keep_alive<1, 2>());
}

}  // namespace kasmina::python
