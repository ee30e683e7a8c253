// Tensor: a view onto shared storage (shape + strides + offset + dtype + device) plus the autograd
// metadata the engine needs. Views share storage; `contiguous()` copies only when needed.
// Differentiable methods (views, to, contiguous, math) are implemented in autograd/; the rest here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/random.h"
#include "runtime/shape.h"
#include "runtime/storage.h"

namespace kasmina {

namespace autograd {
class Node;
}

struct TensorOptions {
    DType dtype = DType::f32;
    Device device = Device::cpu();
    bool requires_grad = false;
};

// The shared state behind a Tensor handle.
struct TensorImpl {
    std::shared_ptr<Storage> storage;
    Shape shape;
    Shape strides;
    int64_t offset = 0;  // in elements
    DType dtype = DType::f32;

    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;
    std::shared_ptr<autograd::Node> grad_fn;  // null for leaves
    uint32_t output_nr = 0;                   // which output of grad_fn this tensor is
    std::weak_ptr<autograd::Node> grad_accumulator;
    // Called, in registration order, each time a backward pass has accumulated into this leaf's grad
    // (autograd/hooks.h registers them).
    std::vector<std::pair<uint64_t, std::function<void(const std::shared_ptr<TensorImpl>&)>>> post_accumulate_hooks;
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // ---- factories -------------------------------------------------------------------------
    static Tensor empty(const Shape& shape, TensorOptions options = {});
    static Tensor zeros(const Shape& shape, TensorOptions options = {});
    static Tensor ones(const Shape& shape, TensorOptions options = {});
    static Tensor full(const Shape& shape, double value, TensorOptions options = {});
    static Tensor scalar(double value, TensorOptions options = {});
    // Values start, start + step, ... below end (like torch.arange).
    static Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {.dtype = DType::i64});
    static Tensor arange(int64_t end, TensorOptions options = {.dtype = DType::i64});
    // Uniform in [0, 1) and standard normal, from `generator` (the default generator when null).
    static Tensor rand(const Shape& shape, TensorOptions options = {}, Generator* generator = nullptr);
    static Tensor randn(const Shape& shape, TensorOptions options = {}, Generator* generator = nullptr);
    // Copies host values (row-major) into a new tensor of `shape` on `device`.
    template <typename T>
    static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());

    // ---- metadata ----------------------------------------------------------------------------
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const;
    int64_t size(int64_t dim) const;
    int64_t dim() const { return static_cast<int64_t>(shape().size()); }
    int64_t numel() const { return shape_numel(shape()); }
    const Shape& strides() const;
    int64_t stride(int64_t dim) const;
    int64_t offset() const;
    DType dtype() const;
    Device device() const;
    bool is_contiguous() const;
    TensorOptions options() const { return {dtype(), device(), false}; }
    std::string describe() const;  // "float32[2, 3] on cpu", for error messages

    // Pointer to the first element (storage + offset). data<T>() checks T and that the tensor is on the CPU.
    void* raw_data() const;
    template <typename T>
    T* data() const;

    // ---- host read-back ----------------------------------------------------------------------
    template <typename T>
    std::vector<T> to_vector() const;  // row-major copy of all elements, converted to T
    double item() const;               // the single element, as double; raises unless numel == 1
    template <typename T>
    T item() const {
        return static_cast<T>(item());
    }

    // ---- conversion (differentiable for floating dtypes; autograd/) ----------------------------
    Tensor to(Device device) const;
    Tensor to(DType dtype) const;
    Tensor contiguous() const;
    Tensor clone() const;
    Tensor detach() const;  // same storage, no autograd history (runtime)

    // ---- views, no copy (differentiable; autograd/) ---------------------------------------------
    Tensor view(const Shape& shape) const;     // requires compatible strides
    Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
    Tensor transpose(int64_t dim0, int64_t dim1) const;
    Tensor t() const;  // transpose of a 2-D tensor
    Tensor permute(const std::vector<int64_t>& dims) const;
    Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
    Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
    Tensor select(int64_t dim, int64_t index) const;
    Tensor unsqueeze(int64_t dim) const;
    Tensor squeeze(int64_t dim) const;
    Tensor squeeze() const;
    Tensor expand(const Shape& shape) const;  // -1 keeps a dimension
    Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

    // ---- autograd ----------------------------------------------------------------------------
    bool requires_grad() const;
    // Marks a leaf as requiring grad; raises for non-floating dtypes or non-leaves.
    Tensor& set_requires_grad(bool requires_grad);
    Tensor grad() const;
    void set_grad(const Tensor& grad);
    bool is_leaf() const;
    const std::shared_ptr<autograd::Node>& grad_fn() const;
    uint64_t version() const;
    // Runs the backward pass from this tensor (autograd/). Without `gradient`, requires numel == 1.
    void backward(const Tensor& gradient = {}, bool retain_graph = false) const;

    // ---- in-place writes (bump the version counter; raise on leaves that require grad
    // while grad mode is on) -----------------------------------------------------------------------
    Tensor& fill_(double value);
    Tensor& zero_() { return fill_(0.0); }
    Tensor& copy_(const Tensor& source);  // broadcasts source, converts dtype, crosses devices

    TensorImpl* impl() const { return impl_.get(); }
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same_storage(const Tensor& other) const;

private:
    void check_defined(const char* op) const;
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& stream, const Tensor& tensor);

// ---- building blocks for ops (no autograd) ------------------------------------------------------
namespace detail {

// A new handle onto `base`'s storage with the given geometry (no autograd history).
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);
// Raises (naming `op`) if writing to `tensor` in place would corrupt autograd (leaf requiring grad in grad mode).
void check_inplace_allowed(const Tensor& tensor, const char* op);
// Moves a tensor's data (and its gradient) to another device or dtype keeping its TensorImpl, so
// every handle (an optimizer's, a module's) sees the moved tensor.
void move_in_place(const Tensor& tensor, Device device, DType dtype);

}  // namespace detail

// Copies `source` into `destination` element by element (same shape after broadcasting source),
// converting dtypes and crossing devices. No autograd; does not bump versions.
void copy_into(const Tensor& destination, const Tensor& source);

// ---- template definitions ------------------------------------------------------------------------

template <typename T>
T* Tensor::data() const {
    check_defined("data");
    if (dtype() != dtype_of<T>())
        raise<DTypeError>("data", "tensor is ", dtype_name(dtype()), ", requested ", dtype_name(dtype_of<T>()));
    if (!device().is_cpu())
        raise<DeviceError>("data", "tensor is on ", device().str(), "; host pointers need a cpu tensor (use .to(cpu))");
    return static_cast<T*>(raw_data());
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
    if (static_cast<int64_t>(values.size()) != shape_numel(shape))
        raise<ShapeError>("from_vector", "got ", values.size(), " values for shape ", shape_str(shape), " (",
                          shape_numel(shape), " elements expected)");
    Tensor host = empty(shape, {.dtype = dtype_of<T>()});
    T* out = host.data<T>();
    for (size_t i = 0; i < values.size(); ++i) out[i] = values[i];
    if (device.is_cpu()) return host;
    Tensor result = empty(shape, {.dtype = dtype_of<T>(), .device = device});
    copy_into(result, host);
    return result;
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
    check_defined("to_vector");
    Tensor host = empty(shape(), {.dtype = dtype_of<T>()});
    copy_into(host, *this);
    const T* values = host.data<T>();
    return std::vector<T>(values, values + numel());
}

}  // namespace kasmina
