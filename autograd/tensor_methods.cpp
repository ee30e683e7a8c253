// The differentiable Tensor methods: views (share storage, gradient mapped back through the same
// geometry), conversions (to dtype / device, contiguous, clone) and backward().
#include <algorithm>
#include <functional>
#include <numeric>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "kernels/kernels.h"

namespace kasmina {

using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

Tensor view_of(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
    return detail::make_view(base, std::move(shape), std::move(strides), offset);
}

// Strides for viewing `tensor` as `shape` without a copy, if possible (PyTorch's rule: each group of
// merged/split dims must be contiguous within itself).
std::optional<Shape> view_strides(const Tensor& tensor, const Shape& shape) {
    const Shape& old_shape = tensor.shape();
    const Shape& old_strides = tensor.strides();
    Shape new_strides(shape.size());
    if (shape_numel(old_shape) == 0 || old_shape.empty()) return contiguous_strides(shape);
    int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
    int64_t chunk_base_stride = old_strides.back();
    int64_t tensor_numel = 1, view_numel = 1;
    for (int64_t tensor_d = static_cast<int64_t>(old_shape.size()) - 1; tensor_d >= 0; --tensor_d) {
        tensor_numel *= old_shape[tensor_d];
        if (tensor_d == 0 || (old_shape[tensor_d - 1] != 1 && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                new_strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                --view_d;
            }
            if (view_numel != tensor_numel) return std::nullopt;
            if (tensor_d > 0) {
                chunk_base_stride = old_strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    if (view_d != -1) return std::nullopt;
    return new_strides;
}

// `requested` with its -1 resolved; raises unless it holds exactly the elements of `input_shape`.
Shape infer_shape(const Shape& requested, const Shape& input_shape, const char* op) {
    const int64_t numel = shape_numel(input_shape);
    Shape shape = requested;
    int64_t known = 1, infer_at = -1;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == -1) {
            if (infer_at >= 0) raise<ShapeError>(op, "only one dimension can be -1 in ", shape_str(requested));
            infer_at = static_cast<int64_t>(i);
        } else if (shape[i] < 0) {
            raise<ShapeError>(op, "invalid size ", shape[i], " in ", shape_str(requested));
        } else {
            known *= shape[i];
        }
    }
    if (infer_at >= 0) {
        if (known == 0 || numel % known != 0)
            raise<ShapeError>(op, "shape ", shape_str(requested), " is invalid for input ", shape_str(input_shape), " of size ",
                              numel);
        shape[infer_at] = numel / known;
    }
    if (shape_numel(shape) != numel)
        raise<ShapeError>(op, "shape ", shape_str(requested), " is invalid for input ", shape_str(input_shape), " of size ",
                          numel, " (expected ", numel, " elements, got ", shape_numel(shape), ")");
    return shape;
}

// A view whose backward re-applies the inverse geometry: grad of a reshape is a reshape back.
Tensor reshape_view(const Tensor& self, const Shape& shape, const Shape& strides, const char* op) {
    Tensor out = view_of(self, shape, strides, self.offset());
    const Shape input_shape = self.shape();
    return record(op, out, {self}, [input_shape](const Grads& g) { return Grads{g[0].reshape(input_shape)}; });
}

// Gradient of a sub-view (slice/select/narrow): zeros of the input's shape with grad written into
// the same region, found by replaying the view op (`replay`) on the zeros.
using ViewReplay = std::function<Tensor(const Tensor&)>;

Tensor subview(const Tensor& self, Shape shape, Shape strides, int64_t offset, const char* op, ViewReplay replay) {
    Tensor out = view_of(self, std::move(shape), std::move(strides), offset);
    const Shape input_shape = self.shape();
    return record(op, out, {self}, [input_shape, replay](const Grads& g) {
        Tensor base = Tensor::zeros(input_shape, g[0].options());
        copy_into(replay(base), g[0]);
        return Grads{base};
    });
}

}  // namespace

Tensor Tensor::view(const Shape& requested) const {
    const Shape target = infer_shape(requested, shape(), "view");
    const std::optional<Shape> strides = view_strides(*this, target);
    if (!strides)
        raise<ShapeError>("view", "cannot view ", describe(), " as ", shape_str(target),
                          " without a copy (strides ", shape_str(this->strides()), "); use reshape()");
    return reshape_view(*this, target, *strides, "view");
}

Tensor Tensor::reshape(const Shape& requested) const {
    const Shape target = infer_shape(requested, shape(), "reshape");
    if (const std::optional<Shape> strides = view_strides(*this, target)) return reshape_view(*this, target, *strides, "reshape");
    return contiguous().view(target);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
    if (dim() == 0) return reshape({1});
    const int64_t start = wrap_dim(start_dim, shape(), "flatten"), end = wrap_dim(end_dim, shape(), "flatten");
    if (start > end) raise<ShapeError>("flatten", "start_dim ", start_dim, " comes after end_dim ", end_dim);
    Shape target(shape().begin(), shape().begin() + start);
    int64_t merged = 1;
    for (int64_t d = start; d <= end; ++d) merged *= size(d);
    target.push_back(merged);
    target.insert(target.end(), shape().begin() + end + 1, shape().end());
    return reshape(target);
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
    const int64_t a = wrap_dim(dim0, shape(), "transpose"), b = wrap_dim(dim1, shape(), "transpose");
    if (dim() == 0) return *this;
    std::vector<int64_t> order(dim());
    std::iota(order.begin(), order.end(), 0);
    std::swap(order[a], order[b]);
    return permute(order);
}

Tensor Tensor::t() const {
    if (dim() != 2) raise<ShapeError>("t", "expects a 2-D tensor, got ", shape_str(shape()));
    return transpose(0, 1);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
    if (static_cast<int64_t>(dims.size()) != dim())
        raise<ShapeError>("permute", "got ", dims.size(), " dims ", shape_str(dims), " for input ", shape_str(shape()), " (expected ",
                          dim(), " dims, a permutation of its rank)");
    std::vector<int64_t> order;
    std::vector<bool> used(dim(), false);
    Shape new_shape, new_strides;
    for (int64_t d : dims) {
        const int64_t wrapped = wrap_dim(d, shape(), "permute");
        if (used[wrapped])
            raise<ShapeError>("permute", "dimension ", wrapped, " repeated in ", shape_str(dims), " for input ", shape_str(shape()),
                              " (expected each dimension once)");
        used[wrapped] = true;
        order.push_back(wrapped);
        new_shape.push_back(size(wrapped));
        new_strides.push_back(stride(wrapped));
    }
    Tensor out = view_of(*this, new_shape, new_strides, offset());
    std::vector<int64_t> inverse(order.size());
    for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
    return record("permute", out, {*this}, [inverse](const Grads& g) { return Grads{g[0].permute(inverse)}; });
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
    if (dim() == 0) raise<ShapeError>("slice", "cannot slice a 0-d tensor");
    const int64_t d = wrap_dim(dim_, shape(), "slice");
    if (step <= 0) raise<ShapeError>("slice", "step must be positive, got ", step);
    const int64_t length = size(d);
    auto clamp_index = [length](int64_t index) {
        if (index < 0) index += length;
        return std::clamp<int64_t>(index, 0, length);
    };
    const int64_t first = clamp_index(start), last = std::max(first, clamp_index(end));
    Shape new_shape = shape(), new_strides = strides();
    new_shape[d] = (last - first + step - 1) / step;
    new_strides[d] = stride(d) * step;
    return subview(*this, new_shape, new_strides, offset() + first * stride(d), "slice",
                   [=](const Tensor& base) { return base.slice(d, first, last, step); });
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
    const int64_t d = wrap_dim(dim_, shape(), "narrow");
    if (start < 0) start += size(d);
    if (start < 0 || length < 0 || start + length > size(d))
        raise<ShapeError>("narrow", "range [", start, ", ", start + length, ") outside dimension ", d, " of size ", size(d),
                          " (tensor ", shape_str(shape()), ")");
    Shape new_shape = shape();
    new_shape[d] = length;
    return subview(*this, new_shape, strides(), offset() + start * stride(d), "narrow",
                   [=](const Tensor& base) { return base.narrow(d, start, length); });
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
    if (dim() == 0) raise<ShapeError>("select", "cannot select from a 0-d tensor");
    const int64_t d = wrap_dim(dim_, shape(), "select");
    if (index < -size(d) || index >= size(d))
        raise<ShapeError>("select", "index ", index, " out of range for dimension ", d, " of size ", size(d), " (tensor ",
                          shape_str(shape()), ")");
    if (index < 0) index += size(d);
    Shape new_shape = shape(), new_strides = strides();
    new_shape.erase(new_shape.begin() + d);
    new_strides.erase(new_strides.begin() + d);
    return subview(*this, new_shape, new_strides, offset() + index * stride(d), "select",
                   [=](const Tensor& base) { return base.select(d, index); });
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
    const int64_t d = wrap_dim(dim_, dim() + 1, "unsqueeze");
    Shape new_shape = shape(), new_strides = strides();
    const int64_t new_stride = d < dim() ? stride(d) * size(d) : 1;
    new_shape.insert(new_shape.begin() + d, 1);
    new_strides.insert(new_strides.begin() + d, new_stride);
    return reshape_view(*this, new_shape, new_strides, "unsqueeze");
}

Tensor Tensor::squeeze(int64_t dim_) const {
    if (dim() == 0) return *this;
    const int64_t d = wrap_dim(dim_, shape(), "squeeze");
    if (size(d) != 1) return *this;
    Shape new_shape = shape(), new_strides = strides();
    new_shape.erase(new_shape.begin() + d);
    new_strides.erase(new_strides.begin() + d);
    return reshape_view(*this, new_shape, new_strides, "squeeze");
}

Tensor Tensor::squeeze() const {
    Shape new_shape, new_strides;
    for (int64_t d = 0; d < dim(); ++d)
        if (size(d) != 1) {
            new_shape.push_back(size(d));
            new_strides.push_back(stride(d));
        }
    return reshape_view(*this, new_shape, new_strides, "squeeze");
}

Tensor Tensor::expand(const Shape& requested) const {
    if (requested.size() < shape().size())
        raise<ShapeError>("expand", "target ", shape_str(requested), " has fewer dimensions than ", shape_str(shape()));
    const size_t lead = requested.size() - shape().size();
    Shape new_shape(requested.size()), new_strides(requested.size(), 0);
    for (size_t i = 0; i < requested.size(); ++i) {
        if (i < lead) {
            if (requested[i] < 0) raise<ShapeError>("expand", "-1 is not allowed for a new leading dimension");
            new_shape[i] = requested[i];
            continue;
        }
        const int64_t current = shape()[i - lead];
        const int64_t wanted = requested[i] == -1 ? current : requested[i];
        if (current != wanted && current != 1)
            raise<ShapeError>("expand", "cannot expand ", shape_str(shape()), " to ", shape_str(requested), " (dimension ", i,
                              ": ", current, " vs ", wanted, ")");
        new_shape[i] = wanted;
        new_strides[i] = current == wanted ? strides()[i - lead] : 0;
    }
    Tensor out = view_of(*this, new_shape, new_strides, offset());
    const Shape input_shape = shape();
    return record("expand", out, {*this}, [input_shape](const Grads& g) { return Grads{kernels::sum_to(g[0], input_shape)}; });
}

// ---- conversions ---------------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
}

Tensor Tensor::clone() const {
    check_defined("clone");
    Tensor out = Tensor::empty(shape(), options());
    copy_into(out, *this);
    return record("clone", out, {*this}, [](const Grads& g) { return Grads{g[0]}; });
}

Tensor Tensor::to(Device target) const {
    check_defined("to");
    if (device() == target) return *this;
    Tensor out = Tensor::empty(shape(), {.dtype = dtype(), .device = target});
    copy_into(out, *this);
    const Device source = device();
    return record("to_device", out, {*this}, [source](const Grads& g) { return Grads{g[0].to(source)}; });
}

Tensor Tensor::to(DType target) const {
    check_defined("to");
    if (dtype() == target) return *this;
    Tensor out = Tensor::empty(shape(), {.dtype = target, .device = device()});
    copy_into(out, *this);
    if (!is_floating(target)) return out;
    const DType source = dtype();
    return record("to_dtype", out, {*this}, [source](const Grads& g) { return Grads{g[0].to(source)}; });
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
    check_defined("backward");
    autograd::backward({*this}, {gradient}, retain_graph);
}

}  // namespace kasmina
