#include "runtime/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "runtime/grad_mode.h"
#include "runtime/strided_loop.h"
#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/stream.h"
#endif

namespace kasmina {

// ---- devices ----------------------------------------------------------------------------------

Device Device::parse(const std::string& text) {
    if (text == "cpu") return cpu();
    if (text == "cuda") return cuda(0);
    if (text.rfind("cuda:", 0) == 0) {
        try {
            size_t used = 0;
            const int index = std::stoi(text.substr(5), &used);
            if (used == text.size() - 5 && index >= 0) return cuda(index);
        } catch (const std::exception&) {
        }
    }
    raise<DeviceError>("Device::parse", "unknown device '", text, "' (expected cpu, cuda or cuda:N)");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

std::ostream& operator<<(std::ostream& stream, const Device& device) { return stream << device.str(); }

int cuda_device_count() {
#ifdef KASMINA_WITH_CUDA
    return cuda::device_count();
#else
    return 0;
#endif
}

void synchronize(Device device) {
    if (device.is_cpu()) return;
#ifdef KASMINA_WITH_CUDA
    cuda::synchronize(device.index);
#else
    raise<DeviceError>("synchronize", "device ", device.str(), " needs the CUDA backend, which this build lacks");
#endif
}

namespace {
thread_local bool grad_mode_enabled = true;

void check_device_usable(Device device, const char* op) {
    if (device.is_cuda() && device.index >= cuda_device_count())
        raise<DeviceError>(op, "device ", device.str(), " is not available (", cuda_device_count(),
                           " CUDA device(s) visible)");
}
}  // namespace

bool GradMode::is_enabled() { return grad_mode_enabled; }
void GradMode::set_enabled(bool enabled) { grad_mode_enabled = enabled; }

// ---- factories --------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, TensorOptions options) {
    for (int64_t size : shape)
        if (size < 0) raise<ShapeError>("empty", "negative dimension in shape ", shape_str(shape));
    check_device_usable(options.device, "empty");
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(options.dtype), options.device);
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = options.dtype;
    Tensor tensor(std::move(impl));
    if (options.requires_grad) tensor.set_requires_grad(true);
    return tensor;
}

Tensor Tensor::full(const Shape& shape, double value, TensorOptions options) {
    const bool wants_grad = options.requires_grad;
    options.requires_grad = false;
    Tensor tensor = empty(shape, options);
    {
        NoGradGuard no_grad;
        tensor.fill_(value);
    }
    if (wants_grad) tensor.set_requires_grad(true);
    return tensor;
}

Tensor Tensor::zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor Tensor::ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor Tensor::scalar(double value, TensorOptions options) { return full({}, value, options); }

Tensor Tensor::arange(double start, double end, double step, TensorOptions options) {
    if (step == 0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step))
        raise<ShapeError>("arange", "invalid range start=", start, " end=", end, " step=", step);
    const int64_t count = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
    Tensor host = empty({count}, {.dtype = options.dtype});
    dispatch_all(options.dtype, "arange", [&]<typename T>() {
        T* out = host.data<T>();
        for (int64_t i = 0; i < count; ++i) out[i] = static_cast<T>(start + static_cast<double>(i) * step);
    });
    Tensor result = host.to(options.device);
    if (options.requires_grad) result.set_requires_grad(true);
    return result;
}

Tensor Tensor::arange(int64_t end, TensorOptions options) {
    return arange(0.0, static_cast<double>(end), 1.0, options);
}

namespace {
template <typename Sample>
Tensor random_tensor(const Shape& shape, TensorOptions options, Generator* generator, const char* op, Sample sample) {
    Generator& source = generator != nullptr ? *generator : default_generator();
    const bool wants_grad = options.requires_grad;
    Tensor host = Tensor::empty(shape, {.dtype = options.dtype});
    const int64_t count = host.numel();
    const uint64_t seed = source.seed();
    const uint64_t first = source.reserve(static_cast<uint64_t>(count));
    dispatch_floating(options.dtype, op, [&]<typename T>() {
        T* out = host.data<T>();
#pragma omp parallel for schedule(static) if (count > 65536)
        for (int64_t i = 0; i < count; ++i) out[i] = static_cast<T>(sample(philox_at(seed, first + i)));
    });
    Tensor result = options.device.is_cpu() ? host : host.to(options.device);
    if (wants_grad) result.set_requires_grad(true);
    return result;
}
}  // namespace

Tensor Tensor::rand(const Shape& shape, TensorOptions options, Generator* generator) {
    return random_tensor(shape, options, generator, "rand", [](const PhiloxWords& w) { return uniform_from(w); });
}

Tensor Tensor::randn(const Shape& shape, TensorOptions options, Generator* generator) {
    return random_tensor(shape, options, generator, "randn", [](const PhiloxWords& w) { return normal_from(w); });
}

// ---- metadata ---------------------------------------------------------------------------------

void Tensor::check_defined(const char* op) const {
    if (!impl_) raise<Error>(op, "called on an undefined tensor");
}

const Shape& Tensor::shape() const {
    check_defined("shape");
    return impl_->shape;
}

int64_t Tensor::size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }

const Shape& Tensor::strides() const {
    check_defined("strides");
    return impl_->strides;
}

int64_t Tensor::stride(int64_t dim) const { return strides()[wrap_dim(dim, this->dim(), "stride")]; }

int64_t Tensor::offset() const {
    check_defined("offset");
    return impl_->offset;
}

DType Tensor::dtype() const {
    check_defined("dtype");
    return impl_->dtype;
}

Device Tensor::device() const {
    check_defined("device");
    return impl_->storage->device();
}

bool Tensor::is_contiguous() const {
    const Shape& sizes = shape();
    int64_t expected = 1;
    for (size_t i = sizes.size(); i-- > 0;) {
        if (sizes[i] == 1) continue;
        if (impl_->strides[i] != expected) return false;
        expected *= sizes[i];
    }
    return true;
}

std::string Tensor::describe() const {
    if (!impl_) return "undefined";
    return make_message(dtype_name(dtype()), shape_str(shape()), " on ", device().str());
}

void* Tensor::raw_data() const {
    check_defined("raw_data");
    return static_cast<char*>(impl_->storage->data()) + impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

bool Tensor::same_storage(const Tensor& other) const {
    return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

double Tensor::item() const {
    check_defined("item");
    if (numel() != 1)
        raise<ShapeError>("item", "expected a tensor with exactly one element, got ", describe());
    return to_vector<double>()[0];
}

// ---- autograd metadata ------------------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool requires_grad) {
    check_defined("set_requires_grad");
    if (requires_grad && !is_floating(dtype()))
        raise<DTypeError>("set_requires_grad", "only floating tensors can require grad, got ", describe());
    if (!is_leaf())
        raise<AutogradError>("set_requires_grad", "can only be changed on leaf tensors (this one has a grad_fn)");
    impl_->requires_grad = requires_grad;
    return *this;
}

Tensor Tensor::grad() const {
    check_defined("grad");
    return impl_->grad ? Tensor(impl_->grad) : Tensor();
}

void Tensor::set_grad(const Tensor& grad) {
    check_defined("set_grad");
    if (grad.defined() && (grad.shape() != shape() || grad.dtype() != dtype() || grad.device() != device()))
        raise<ShapeError>("set_grad", "gradient ", grad.describe(), " does not match tensor ", describe());
    impl_->grad = grad.impl_ptr();
}

bool Tensor::is_leaf() const { return impl_ && impl_->grad_fn == nullptr; }

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
    check_defined("grad_fn");
    return impl_->grad_fn;
}

uint64_t Tensor::version() const {
    check_defined("version");
    return impl_->storage->version();
}

Tensor Tensor::detach() const {
    check_defined("detach");
    return detail::make_view(*this, shape(), strides(), offset());
}

// ---- views and copies -------------------------------------------------------------------------

namespace detail {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = base.impl()->storage;
    impl->shape = std::move(shape);
    impl->strides = std::move(strides);
    impl->offset = offset;
    impl->dtype = base.dtype();
    return Tensor(std::move(impl));
}

void move_in_place(const Tensor& tensor, Device device, DType dtype) {
    if (!tensor.defined() || (tensor.device() == device && tensor.dtype() == dtype)) return;
    Tensor moved = Tensor::empty(tensor.shape(), {.dtype = dtype, .device = device});
    copy_into(moved, tensor);
    TensorImpl* impl = tensor.impl();
    impl->storage = moved.impl()->storage;
    impl->strides = moved.strides();
    impl->offset = 0;
    impl->dtype = dtype;
    if (impl->grad) move_in_place(Tensor(impl->grad), device, dtype);
}

void check_inplace_allowed(const Tensor& tensor, const char* op) {
    if (!tensor.defined()) raise<Error>(op, "called on an undefined tensor");
    if (GradMode::is_enabled() && tensor.requires_grad())
        raise<AutogradError>(op, "in-place write to a tensor that requires grad (", tensor.describe(),
                             ") while grad mode is on; wrap the update in NoGradGuard");
}

}  // namespace detail

namespace {

// CPU element-wise copy with conversion: destination and source share the iteration shape.
void cpu_strided_copy(const Tensor& destination, const Tensor& source, const Shape& source_strides) {
    dispatch_all(destination.dtype(), "copy", [&]<typename Out>() {
        dispatch_all(source.dtype(), "copy", [&]<typename In>() {
            Out* out = static_cast<Out*>(destination.raw_data());
            const In* in = static_cast<const In*>(source.raw_data());
            for_each_row<2>(destination.shape(), {destination.strides(), source_strides},
                            [&](const std::array<int64_t, 2>& offsets, int64_t count, const std::array<int64_t, 2>& inner) {
                                Out* o = out + offsets[0];
                                const In* s = in + offsets[1];
                                if (all_unit(inner)) {
                                    for (int64_t i = 0; i < count; ++i) o[i] = static_cast<Out>(s[i]);
                                } else if (inner[0] == 1 && inner[1] == 0) {
                                    // One value spread over a contiguous row (an expanded scalar, such as the
                                    // gradient of sum()): a fill, which vectorizes.
                                    std::fill_n(o, count, static_cast<Out>(*s));
                                } else {
                                    for (int64_t i = 0; i < count; ++i)
                                        o[i * inner[0]] = static_cast<Out>(s[i * inner[1]]);
                                }
                            });
        });
    });
}

}  // namespace

void copy_into(const Tensor& destination, const Tensor& source) {
    if (!source.defined()) return;
    const Shape target = broadcast_shapes(destination.shape(), source.shape(), "copy");
    if (target != destination.shape())
        raise<ShapeError>("copy", "source ", source.describe(), " does not broadcast to destination ",
                          destination.describe());
    const Shape source_strides = broadcast_strides(source.shape(), source.strides(), target);
    const Device to = destination.device();
    const Device from = source.device();
    if (to.is_cpu() && from.is_cpu()) {
        cpu_strided_copy(destination, source, source_strides);
        return;
    }
#ifdef KASMINA_WITH_CUDA
    if (to == from) {
        cuda::strided_copy(destination, detail::make_view(source, target, source_strides, source.offset()));
        return;
    }
    // Across devices: one transfer of a contiguous block of the source dtype and shape `target`, staged
    // through a buffer only on a side that is not such a block already.
    const auto is_block = [&](const Tensor& t) {
        return t.dtype() == source.dtype() && t.shape() == target && t.is_contiguous();
    };
    Tensor staged_source = source;
    if (!is_block(source)) {
        staged_source = Tensor::empty(target, {.dtype = source.dtype(), .device = from});
        copy_into(staged_source, source);
    }
    Tensor staged_destination =
        is_block(destination) ? destination : Tensor::empty(target, {.dtype = source.dtype(), .device = to});
    const size_t bytes = static_cast<size_t>(staged_source.numel()) * dtype_size(source.dtype());
    if (from.is_cpu())
        cuda::copy_bytes(staged_destination.raw_data(), staged_source.raw_data(), bytes, cuda::CopyKind::host_to_device, to.index);
    else if (to.is_cpu())
        cuda::copy_bytes(staged_destination.raw_data(), staged_source.raw_data(), bytes, cuda::CopyKind::device_to_host, from.index);
    else {  // between two GPUs, whose streams are not ordered with each other's: synchronous on both sides
        cuda::current_stream(from.index).synchronize();
        cuda::copy_bytes(staged_destination.raw_data(), staged_source.raw_data(), bytes, cuda::CopyKind::device_to_device, to.index);
        cuda::current_stream(to.index).synchronize();
    }
    if (!staged_destination.same_storage(destination)) copy_into(destination, staged_destination);
#else
    raise<DeviceError>("copy", "cannot copy ", source.describe(), " to ", destination.describe(),
                       ": this build of kasmina has no CUDA support");
#endif
}

Tensor& Tensor::fill_(double value) {
    detail::check_inplace_allowed(*this, "fill_");
    if (device().is_cpu()) {
        dispatch_all(dtype(), "fill_", [&]<typename T>() {
            T* out = static_cast<T*>(raw_data());
            const T typed = static_cast<T>(value);
            for_each_row<1>(shape(), {strides()},
                            [&](const std::array<int64_t, 1>& offsets, int64_t count, const std::array<int64_t, 1>& inner) {
                                T* o = out + offsets[0];
                                for (int64_t i = 0; i < count; ++i) o[i * inner[0]] = typed;
                            });
        });
    } else {
#ifdef KASMINA_WITH_CUDA
        cuda::fill(*this, value);
#endif
    }
    impl_->storage->bump_version();
    return *this;
}

Tensor& Tensor::copy_(const Tensor& source) {
    detail::check_inplace_allowed(*this, "copy_");
    if (!source.defined()) raise<Error>("copy_", "source tensor is undefined");
    copy_into(*this, source);
    impl_->storage->bump_version();
    return *this;
}

// ---- printing ---------------------------------------------------------------------------------

namespace {
void print_recursive(std::ostream& stream, const std::vector<double>& values, const Shape& shape, size_t dim,
                     int64_t& cursor, int indent, bool integral) {
    if (dim == shape.size()) {
        const double value = values[cursor++];
        if (integral)
            stream << static_cast<int64_t>(value);
        else
            stream << std::setprecision(6) << value;
        return;
    }
    stream << '[';
    const int64_t edge = 3;
    for (int64_t i = 0; i < shape[dim]; ++i) {
        if (shape[dim] > 2 * edge && i == edge) {
            stream << "...";
            // skip the middle elements
            const int64_t skipped = (shape[dim] - 2 * edge) * shape_numel(Shape(shape.begin() + dim + 1, shape.end()));
            cursor += skipped;
            i = shape[dim] - edge - 1;
            stream << (dim + 1 == shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
            continue;
        }
        print_recursive(stream, values, shape, dim + 1, cursor, indent + 1, integral);
        if (i + 1 < shape[dim]) stream << (dim + 1 == shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    stream << ']';
}
}  // namespace

std::ostream& operator<<(std::ostream& stream, const Tensor& tensor) {
    if (!tensor.defined()) return stream << "Tensor(undefined)";
    stream << "Tensor(";
    const std::vector<double> values = tensor.to_vector<double>();
    int64_t cursor = 0;
    print_recursive(stream, values, tensor.shape(), 0, cursor, 7, !is_floating(tensor.dtype()));
    stream << ", dtype=" << dtype_name(tensor.dtype()) << ", shape=" << shape_str(tensor.shape());
    if (!tensor.device().is_cpu()) stream << ", device=" << tensor.device();
    if (tensor.requires_grad()) stream << ", requires_grad";
    return stream << ')';
}

}  // namespace kasmina
