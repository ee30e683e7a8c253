// Zero-copy exchange with other frameworks through DLPack: Tensor.__dlpack__ / __dlpack_device__
// hand out a "dltensor" capsule viewing the tensor's storage (kept alive until the consumer's
// deleter runs); kasmina.from_dlpack adopts a producer's memory (torch.Tensor or a capsule) the same way.
#include "python/dlpack_abi.h"

#include <vector>

#include "python/bindings.h"

namespace kasmina::python {
namespace {

using namespace dlpack;

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

// bool travels as uint8 (DLPack 0.6 has no bool; PyTorch 1.13 sends torch.bool that way too).
DLDataType dl_dtype(DType dtype) {
    switch (dtype) {
        case DType::f32: return {kDLFloat, 32, 1};
        case DType::f64: return {kDLFloat, 64, 1};
        case DType::i64: return {kDLInt, 64, 1};
        case DType::i32: return {kDLInt, 32, 1};
        case DType::u8: case DType::boolean: return {kDLUInt, 8, 1};
    }
    raise<DTypeError>("__dlpack__", "unknown dtype");
}

DType kasmina_dtype(DLDataType dtype) {
    if (dtype.lanes == 1) {
        if (dtype.code == kDLFloat && dtype.bits == 32) return DType::f32;
        if (dtype.code == kDLFloat && dtype.bits == 64) return DType::f64;
        if (dtype.code == kDLInt && dtype.bits == 64) return DType::i64;
        if (dtype.code == kDLInt && dtype.bits == 32) return DType::i32;
        if (dtype.code == kDLUInt && dtype.bits == 8) return DType::u8;
        if (dtype.code == kDLBool && dtype.bits == 8) return DType::boolean;
    }
    raise<DTypeError>("from_dlpack", "DLPack dtype (code ", int(dtype.code), ", bits ", int(dtype.bits), ", lanes ",
                      dtype.lanes, ") has no kasmina dtype; expected float32/64, int32/64, uint8 or bool");
}

DLDevice dl_device(Device device) {
    return device.is_cpu() ? DLDevice{kDLCPU, 0} : DLDevice{kDLCUDA, device.index};
}

Device kasmina_device(DLDevice device) {
    if (device.device_type == kDLCPU) return Device::cpu();
    if (device.device_type == kDLCUDA) return Device::cuda(device.device_id);
    raise<DeviceError>("from_dlpack", "DLPack device type ", device.device_type, " is neither CPU (1) nor CUDA (2)");
}

// What a capsule we produced owns: the tensor (so its storage lives) and the shape/stride arrays.
struct ExportedTensor {
    Tensor tensor;
    std::vector<int64_t> shape, strides;
    DLManagedTensor managed;
};

void delete_exported(DLManagedTensor* managed) { delete static_cast<ExportedTensor*>(managed->manager_ctx); }

// A capsule nobody consumed still owns its tensor.
void release_unconsumed_capsule(PyObject* capsule) {
    if (PyCapsule_IsValid(capsule, kCapsuleName) == 0) return;  // consumed (renamed): the consumer deletes
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
    if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
}

py::capsule to_dlpack(const Tensor& tensor, const py::object& stream) {
    if (!tensor.defined()) raise<Error>("__dlpack__", "the tensor is undefined");
    // Work queued on the tensor's device must be finished before another framework's stream reads it.
    if (tensor.device().is_cuda()) synchronize(tensor.device());
    auto exported = std::make_unique<ExportedTensor>();
    exported->tensor = tensor.detach();
    exported->shape = tensor.shape();
    exported->strides = tensor.strides();
    DLTensor& dl = exported->managed.dl_tensor;
    dl.data = tensor.raw_data();
    dl.device = dl_device(tensor.device());
    dl.ndim = static_cast<int32_t>(tensor.dim());
    dl.dtype = dl_dtype(tensor.dtype());
    dl.shape = exported->shape.data();
    dl.strides = exported->strides.data();
    dl.byte_offset = 0;
    exported->managed.manager_ctx = exported.get();
    exported->managed.deleter = &delete_exported;
    DLManagedTensor* managed = &exported.release()->managed;
    return py::capsule(managed, kCapsuleName, &release_unconsumed_capsule);
}

Tensor from_dlpack(const py::object& source) {
    py::object capsule = py::hasattr(source, "__dlpack__") ? source.attr("__dlpack__")() : source;
    if (PyCapsule_IsValid(capsule.ptr(), kCapsuleName) == 0)
        raise<Error>("from_dlpack", "expected an object with __dlpack__ or an unconsumed 'dltensor' capsule, got ",
                     py::str(py::type::of(source)).cast<std::string>());
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kCapsuleName));
    const DLTensor& dl = managed->dl_tensor;
    const DType dtype = kasmina_dtype(dl.dtype);
    const Device device = kasmina_device(dl.device);
    Shape shape(dl.shape, dl.shape + dl.ndim), strides(dl.ndim);
    int64_t extent = 1;  // elements from the first to one past the last
    for (int64_t d = dl.ndim - 1, compact = 1; d >= 0; --d) {
        strides[d] = dl.strides != nullptr ? dl.strides[d] : compact;
        compact *= shape[d];
        if (strides[d] < 0) raise<ShapeError>("from_dlpack", "negative stride ", strides[d], " in dim ", d);
    }
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 0) extent = 0;
        if (extent != 0) extent += (shape[d] - 1) * strides[d];
    }
    PyCapsule_SetName(capsule.ptr(), kUsedCapsuleName);  // ours now: the producer's deleter runs with the storage
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(static_cast<char*>(dl.data) + dl.byte_offset,
                                              static_cast<size_t>(extent) * dtype_size(dtype), device, [managed]() {
                                                  py::gil_scoped_acquire gil;  // producers may be Python objects
                                                  if (managed->deleter != nullptr) managed->deleter(managed);
                                              });
    impl->shape = std::move(shape);
    impl->strides = std::move(strides);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
}

}  // namespace

void bind_dlpack(py::module_& m) {
    auto tensor = py::reinterpret_borrow<py::class_<Tensor>>(m.attr("Tensor"));
    tensor.def("__dlpack__", &to_dlpack, py::arg("stream") = py::none(),
               "A DLPack capsule viewing this tensor's memory (no copy).");
    tensor.def("__dlpack_device__", [](const Tensor& t) {
        const DLDevice device = dl_device(t.device());
        return py::make_tuple(device.device_type, device.device_id);
    });
    m.def("from_dlpack", &from_dlpack, py::arg("source"),
          "A tensor sharing the memory of a DLPack producer (a torch.Tensor, or a capsule from to_dlpack).");
    m.def("to_dlpack", [](const Tensor& t) { return to_dlpack(t, py::none()); }, py::arg("tensor"));
}

}  // namespace kasmina::python
