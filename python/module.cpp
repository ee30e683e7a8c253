// The extension module kasmina._kasmina: the C++ exceptions as Python exceptions carrying the C++
// message (kasmina.Error and its subclasses), then each binding file's contribution.
#include "python/bindings.h"

namespace kasmina::python {
namespace {

void bind_errors(py::module_& m) {
    const auto base = py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
    py::register_exception<ShapeError>(m, "ShapeError", base);
    py::register_exception<DTypeError>(m, "DTypeError", base);
    py::register_exception<DeviceError>(m, "DeviceError", base);
    py::register_exception<ArtifactError>(m, "ArtifactError", base);
    py::register_exception<AutogradError>(m, "AutogradError", base);
}

}  // namespace
}  // namespace kasmina::python

PYBIND11_MODULE(_kasmina, m) {
    using namespace kasmina::python;
    m.doc() = "kasmina: a C++20 tensor runtime with autograd and the morphogenetic Kasmina layers";
    bind_errors(m);
    bind_tensor(m);
    bind_ops(m);
    bind_dlpack(m);
    bind_layers(m);
    bind_morph(m);
}
