// The Python module `kasmina._kasmina` (pybind11): the pieces each binding file contributes, and the
// conversions they share (shapes, dtypes, devices and int-or-pair arguments given the Python way).
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>

#include "kasmina.h"

namespace kasmina::python {

namespace py = pybind11;

void bind_tensor(py::module_& module);     // Tensor, factories, NumPy buffers (tensor.cpp)
void bind_ops(py::module_& module);        // differentiable functions, autograd controls (ops.cpp)
void bind_dlpack(py::module_& module);     // __dlpack__ and from_dlpack (dlpack.cpp)
void bind_layers(py::module_& module);     // Module, the standard layers, optimizers (layers.cpp)
void bind_morph(py::module_& module);      // kernels, store, cache, wrap(), telemetry (morph.cpp)

// "cpu", "cuda", "cuda:1"
inline Device parse_device(const std::string& text) { return Device::parse(text); }

// A Python int or a pair (kernel_size=3 or (3, 5)); `what` names the argument in errors.
inline std::array<int64_t, 2> int_pair(const py::object& value, const char* what) {
    if (py::isinstance<py::int_>(value)) {
        const auto scalar = value.cast<int64_t>();
        return {scalar, scalar};
    }
    const auto values = value.cast<std::vector<int64_t>>();
    if (values.size() != 2) raise<ShapeError>(what, "expected an int or a pair of ints, got ", values.size(), " values");
    return {values[0], values[1]};
}

// A Python int or a sequence of ints (normalized_shape=8 or (4, 8)).
inline Shape int_or_shape(const py::object& value) {
    if (py::isinstance<py::int_>(value)) return {value.cast<int64_t>()};
    return value.cast<Shape>();
}

}  // namespace kasmina::python
