// kasmina.Tensor in Python: metadata, views, conversions, operators, and the NumPy bridge without
// copies (the buffer protocol out, kasmina.from_numpy in; both share the storage and keep it alive).
#include <pybind11/numpy.h>
#include <pybind11/operators.h>

#include <functional>
#include <sstream>
#include <string_view>

#include "python/bindings.h"

namespace kasmina::python {
namespace {

// The struct-module format character NumPy and memoryview use for each dtype.
std::string buffer_format(DType dtype) {
    switch (dtype) {
        case DType::f32: return py::format_descriptor<float>::format();
        case DType::f64: return py::format_descriptor<double>::format();
        case DType::i64: return py::format_descriptor<int64_t>::format();
        case DType::i32: return py::format_descriptor<int32_t>::format();
        case DType::u8: return py::format_descriptor<uint8_t>::format();
        case DType::boolean: return "?";
    }
    raise<DTypeError>("buffer", "unknown dtype");
}

// The dtype of a buffer's format (native byte order only), e.g. "f" -> float32, "<q" -> int64.
DType dtype_of_buffer(const py::buffer_info& info) {
    std::string_view format = info.format;
    if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<')) format.remove_prefix(1);
    if (format.size() == 1) {
        switch (format[0]) {
            case 'f': return DType::f32;
            case 'd': return DType::f64;
            case 'B': return DType::u8;
            case '?': return DType::boolean;
            case 'i': case 'l': case 'q':
                if (info.itemsize == 8) return DType::i64;
                if (info.itemsize == 4) return DType::i32;
                break;
            default: break;
        }
    }
    raise<DTypeError>("from_numpy", "buffer format '", info.format, "' (item size ", info.itemsize,
                      ") has no kasmina dtype; expected float32, float64, int64, int32, uint8 or bool");
}

py::buffer_info tensor_buffer(const Tensor& tensor) {
    if (!tensor.defined()) raise<Error>("buffer", "the tensor is undefined");
    if (!tensor.device().is_cpu())
        raise<DeviceError>("buffer", "tensor is ", tensor.describe(), "; NumPy needs a cpu tensor (use .to('cpu'))");
    const auto itemsize = static_cast<py::ssize_t>(dtype_size(tensor.dtype()));
    std::vector<py::ssize_t> shape(tensor.shape().begin(), tensor.shape().end());
    std::vector<py::ssize_t> strides;
    for (const int64_t stride : tensor.strides()) strides.push_back(stride * itemsize);
    return py::buffer_info(tensor.raw_data(), itemsize, buffer_format(tensor.dtype()), tensor.dim(), shape, strides);
}

// np.asarray(tensor): a NumPy array over the tensor's buffer (no copy); it holds the tensor.
py::object numpy_view(const py::object& tensor) { return py::module_::import("numpy").attr("asarray")(tensor); }

}  // namespace

// A tensor viewing a buffer's memory; the buffer (and its owner) stays alive as long as the storage.
Tensor from_buffer(const py::buffer& buffer) {
    auto info = std::make_shared<py::buffer_info>(buffer.request());
    if (info->readonly)
        raise<Error>("from_numpy", "the buffer is read-only and kasmina tensors are writable; pass a writable array "
                                   "(np.array(a)) or copy with kasmina.tensor(a)");
    const DType dtype = dtype_of_buffer(*info);
    Shape shape(info->shape.begin(), info->shape.end()), strides;
    int64_t extent = 1;  // elements from the first to one past the last
    for (size_t d = 0; d < shape.size(); ++d) {
        if (info->strides[d] < 0 || info->strides[d] % info->itemsize != 0)
            raise<ShapeError>("from_numpy", "strides (bytes) ", make_message(info->strides[d]), " of dim ", d,
                              " are negative or not a multiple of the item size ", info->itemsize,
                              "; pass np.ascontiguousarray(a)");
        strides.push_back(info->strides[d] / info->itemsize);
        if (shape[d] == 0) extent = 0;
        if (extent != 0) extent += (shape[d] - 1) * strides.back();
    }
    auto owner = std::make_shared<py::object>(py::reinterpret_borrow<py::object>(buffer));
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(info->ptr, static_cast<size_t>(extent) * info->itemsize, Device::cpu(),
                                              [info, owner]() mutable {
                                                  py::gil_scoped_acquire gil;
                                                  info.reset();
                                                  owner.reset();
                                              });
    impl->shape = std::move(shape);
    impl->strides = std::move(strides);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
}

void bind_tensor(py::module_& m) {
    py::enum_<DType>(m, "dtype", "Element types (kasmina.float32, kasmina.int64, ...).")
        .value("float32", DType::f32)
        .value("float64", DType::f64)
        .value("int64", DType::i64)
        .value("int32", DType::i32)
        .value("uint8", DType::u8)
        .value("bool", DType::boolean)
        .export_values();

    py::class_<Tensor> tensor(m, "Tensor", py::buffer_protocol(),
                              "A view onto shared storage with autograd metadata (see runtime/tensor.h).");
    tensor.def_buffer(&tensor_buffer)
        .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); })
        .def_property_readonly("strides", [](const Tensor& t) { return py::tuple(py::cast(t.strides())); })
        .def_property_readonly("dtype", &Tensor::dtype)
        .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
        .def_property_readonly("ndim", &Tensor::dim)
        .def("dim", &Tensor::dim)
        .def("numel", &Tensor::numel)
        .def("size", [](const Tensor& t, int64_t dim) { return t.size(dim); })
        .def("is_contiguous", &Tensor::is_contiguous)
        .def_property("requires_grad", &Tensor::requires_grad,
                      [](Tensor& t, bool value) { t.set_requires_grad(value); })
        .def("requires_grad_", [](Tensor& t, bool value) { return t.set_requires_grad(value); }, py::arg("requires_grad") = true)
        .def_property("grad", [](const Tensor& t) -> py::object {
                          const Tensor grad = t.grad();
                          return grad.defined() ? py::cast(grad) : py::none();
                      },
                      [](Tensor& t, const std::optional<Tensor>& grad) { t.set_grad(grad.value_or(Tensor())); })
        .def_property_readonly("is_leaf", &Tensor::is_leaf)
        .def_property_readonly("version", &Tensor::version)
        .def("backward", [](const Tensor& t, const std::optional<Tensor>& gradient, bool retain_graph) {
                 t.backward(gradient.value_or(Tensor()), retain_graph);
             },
             py::arg("gradient") = py::none(), py::arg("retain_graph") = false)
        .def("item", [](const Tensor& t) -> py::object {
                 if (is_floating(t.dtype())) return py::float_(t.item());
                 if (t.dtype() == DType::boolean) return py::bool_(t.item() != 0.0);
                 return py::int_(t.item<int64_t>());
             })
        .def("numpy", &numpy_view, "A NumPy array sharing this tensor's memory (cpu tensors).")
        .def("tolist", [](const py::object& self) { return numpy_view(self).attr("tolist")(); })
        .def("to", [](const Tensor& t, const std::string& device) { return t.to(parse_device(device)); }, py::arg("device"))
        .def("to", [](const Tensor& t, DType dtype) { return t.to(dtype); }, py::arg("dtype"))
        .def("cpu", [](const Tensor& t) { return t.to(Device::cpu()); })
        .def("contiguous", &Tensor::contiguous)
        .def("clone", &Tensor::clone)
        .def("detach", &Tensor::detach)
        .def("view", [](const Tensor& t, const Shape& shape) { return t.view(shape); }, py::arg("shape"))
        .def("reshape", [](const Tensor& t, const Shape& shape) { return t.reshape(shape); }, py::arg("shape"))
        .def("transpose", &Tensor::transpose, py::arg("dim0"), py::arg("dim1"))
        .def("t", &Tensor::t)
        .def_property_readonly("T", &Tensor::t)
        .def("permute", &Tensor::permute, py::arg("dims"))
        .def("narrow", &Tensor::narrow, py::arg("dim"), py::arg("start"), py::arg("length"))
        .def("slice", &Tensor::slice, py::arg("dim"), py::arg("start"), py::arg("end"), py::arg("step") = 1)
        .def("select", &Tensor::select, py::arg("dim"), py::arg("index"))
        .def("unsqueeze", &Tensor::unsqueeze, py::arg("dim"))
        .def("squeeze", [](const Tensor& t, std::optional<int64_t> dim) { return dim ? t.squeeze(*dim) : t.squeeze(); },
             py::arg("dim") = py::none())
        .def("expand", &Tensor::expand, py::arg("shape"))
        .def("flatten", &Tensor::flatten, py::arg("start_dim") = 0, py::arg("end_dim") = -1)
        .def("fill_", &Tensor::fill_, py::arg("value"))
        .def("zero_", &Tensor::zero_)
        .def("copy_", &Tensor::copy_, py::arg("source"))
        .def("same_storage", &Tensor::same_storage)
        .def("data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()); })
        .def("__len__", [](const Tensor& t) { return t.size(0); })
        .def("__repr__", [](const Tensor& t) {
            std::ostringstream stream;
            stream << t;
            return stream.str();
        })
        .def(py::self + py::self).def(py::self - py::self).def(py::self * py::self).def(py::self / py::self)
        .def(py::self + double()).def(py::self - double()).def(py::self * double()).def(py::self / double())
        .def(double() + py::self).def(double() - py::self).def(double() * py::self).def(double() / py::self)
        .def(-py::self)
        .def("__matmul__", [](const Tensor& a, const Tensor& b) { return matmul(a, b); })
        .def("__pow__", [](const Tensor& a, double exponent) { return pow(a, exponent); });

    // Factories: shape as a sequence; dtype, device and requires_grad as keywords (torch style).
    auto options = [](DType dtype, const std::string& device) {
        return TensorOptions{.dtype = dtype, .device = parse_device(device)};
    };
    auto with_grad = [](Tensor t, bool requires_grad) { return requires_grad ? t.set_requires_grad(true) : t; };
    using Factory = std::function<Tensor(const Shape&, TensorOptions)>;
    const std::pair<const char*, Factory> factories[] = {
        {"empty", [](const Shape& shape, TensorOptions o) { return Tensor::empty(shape, o); }},
        {"zeros", [](const Shape& shape, TensorOptions o) { return Tensor::zeros(shape, o); }},
        {"ones", [](const Shape& shape, TensorOptions o) { return Tensor::ones(shape, o); }},
        {"rand", [](const Shape& shape, TensorOptions o) { return Tensor::rand(shape, o); }},
        {"randn", [](const Shape& shape, TensorOptions o) { return Tensor::randn(shape, o); }}};
    for (const auto& [name, factory] : factories)
        m.def(name, [=](const Shape& shape, DType dtype, const std::string& device, bool requires_grad) {
            return with_grad(factory(shape, options(dtype, device)), requires_grad);
        }, py::arg("shape"), py::kw_only(), py::arg("dtype") = DType::f32, py::arg("device") = "cpu",
           py::arg("requires_grad") = false);
    m.def("full", [=](const Shape& shape, double value, DType dtype, const std::string& device, bool requires_grad) {
        return with_grad(Tensor::full(shape, value, options(dtype, device)), requires_grad);
    }, py::arg("shape"), py::arg("value"), py::kw_only(), py::arg("dtype") = DType::f32, py::arg("device") = "cpu",
       py::arg("requires_grad") = false);
    m.def("arange", [=](double start, std::optional<double> end, double step, DType dtype, const std::string& device) {
        if (!end) return Tensor::arange(0.0, start, step, options(dtype, device));
        return Tensor::arange(start, *end, step, options(dtype, device));
    }, py::arg("start"), py::arg("end") = py::none(), py::arg("step") = 1.0, py::kw_only(), py::arg("dtype") = DType::i64,
       py::arg("device") = "cpu");

    m.def("from_numpy", &from_buffer, py::arg("array"),
          "A tensor sharing the memory of a NumPy array (or any buffer); the array stays alive with it.");
    // A copy of any array-like (nested lists, NumPy arrays of any layout), like torch.tensor.
    m.def("tensor", [](const py::object& data, std::optional<DType> dtype, const std::string& device, bool requires_grad) {
        py::object numpy = py::module_::import("numpy");
        py::object array = numpy.attr("array")(data);
        if (dtype) {
            array = array.attr("astype")(py::str(*dtype == DType::boolean ? "bool" : dtype_name(*dtype)));
        } else if (py::str(array.attr("dtype").attr("kind")).cast<std::string>() == "f") {
            array = array.attr("astype")("float32");  // Python floats become float32, as in torch
        }
        array = numpy.attr("ascontiguousarray")(array);
        Tensor copy = from_buffer(array).clone().to(parse_device(device));
        return requires_grad ? copy.set_requires_grad(true) : copy;
    }, py::arg("data"), py::kw_only(), py::arg("dtype") = py::none(), py::arg("device") = "cpu",
       py::arg("requires_grad") = false);
}

}  // namespace kasmina::python
