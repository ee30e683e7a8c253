// kernels:: entry points: validate operands, allocate outputs, prepare layouts shared by every
// backend (contiguous inputs, [outer, inner] reduction views), then call the device's backend.
#include <algorithm>
#include <numeric>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/kernels.h"

namespace kasmina::kernels {
namespace {

Tensor contiguous_copy(const Tensor& x) {
    if (x.is_contiguous()) return x;
    Tensor out = Tensor::empty(x.shape(), x.options());
    copy_into(out, x);
    return out;
}

Tensor permuted_view(const Tensor& x, const std::vector<int64_t>& order) {
    Shape shape, strides;
    for (int64_t d : order) {
        shape.push_back(x.size(d));
        strides.push_back(x.stride(d));
    }
    return detail::make_view(x, shape, strides, x.offset());
}

Tensor reshaped(const Tensor& contiguous, const Shape& shape) {
    return detail::make_view(contiguous, shape, contiguous_strides(shape), contiguous.offset());
}

void check_index_tensor(const char* op, const Tensor& index) {
    if (index.dtype() != DType::i64 && index.dtype() != DType::i32)
        raise<DTypeError>(op, "index must be int64 or int32, got ", index.describe());
}

// Every index value in [0, bound); `input` (when given) is the indexed tensor, named in the message.
void check_index_range(const char* op, const Tensor& index, int64_t bound, const char* what, const Tensor* input = nullptr) {
    for (int64_t value : index.to_vector<int64_t>())
        if (value < 0 || value >= bound)
            raise<ShapeError>(op, "index ", value, " out of range for ", what, " of size ", bound, " (expected in [0, ",
                              bound - 1, "]; ", input ? "input " + shape_str(input->shape()) + ", " : std::string(), "index ",
                              shape_str(index.shape()), ")");
}

}  // namespace

const char* unary_name(UnaryOp op) {
    static const char* names[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "sign"};
    return names[static_cast<int>(op)];
}

const char* binary_name(BinaryOp op) {
    static const char* names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
    return names[static_cast<int>(op)];
}

bool is_comparison(BinaryOp op) { return op >= BinaryOp::eq; }

Device common_device(const char* op, std::initializer_list<const Tensor*> tensors) {
    std::optional<Device> device;
    for (const Tensor* tensor : tensors) {
        if (tensor == nullptr || !tensor->defined()) continue;
        if (!device) device = tensor->device();
        else if (*device != tensor->device())
            raise<DeviceError>(op, "operands are on different devices: ", device->str(), " and ", tensor->device().str(),
                               " (", tensor->describe(), ")");
    }
    if (!device) raise<Error>(op, "no defined operand");
    return *device;
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
    if (a.dtype() != b.dtype())
        raise<DTypeError>(op, "operands have different dtypes: ", a.describe(), " and ", b.describe(),
                          " (convert one with .to(dtype))");
}

// ---- elementwise ------------------------------------------------------------------------------

Tensor unary(UnaryOp op, const Tensor& x) {
    const char* name = unary_name(op);
    select_backend(common_device(name, {&x}), name);
    const bool integer_ok = op == UnaryOp::neg || op == UnaryOp::abs || op == UnaryOp::relu || op == UnaryOp::sign;
    if (!is_floating(x.dtype()) && !(integer_ok && x.dtype() != DType::boolean))
        raise<DTypeError>(name, "expected a floating tensor, got ", x.describe());
    Tensor out = Tensor::empty(x.shape(), x.options());
    KASMINA_BACKEND(x.device(), unary, op, x, out);
    return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y) {
    select_backend(common_device(unary_name(op), {&grad, &x, &y}), unary_name(op));
    Tensor out = Tensor::empty(grad.shape(), grad.options());
    KASMINA_BACKEND(grad.device(), unary_backward, op, grad, x, y, out);
    return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
    const char* name = binary_name(op);
    select_backend(common_device(name, {&a, &b}), name);
    check_same_dtype(name, a, b);
    if ((op == BinaryOp::div || op == BinaryOp::pow) && !is_floating(a.dtype()))
        raise<DTypeError>(name, "expected floating operands, got ", a.describe(), " (convert with .to(float32))");
    if (a.dtype() == DType::boolean && !is_comparison(op))
        raise<DTypeError>(name, "arithmetic on bool tensors is not supported (", a.describe(), ")");
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
    Tensor out = Tensor::empty(shape, {.dtype = is_comparison(op) ? DType::boolean : a.dtype(), .device = a.device()});
    KASMINA_BACKEND(a.device(), binary, op, a, b, out);
    return out;
}

Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
    select_backend(common_device("clamp", {&x}), "clamp");
    if (!min && !max) raise<Error>("clamp", "at least one of min and max must be given");
    Tensor out = Tensor::empty(x.shape(), x.options());
    KASMINA_BACKEND(x.device(), clamp, x, min, max, out);
    return out;
}

Tensor clamp_backward(const Tensor& grad, const Tensor& x, std::optional<double> min, std::optional<double> max) {
    select_backend(common_device("clamp", {&grad, &x}), "clamp");
    Tensor out = Tensor::empty(grad.shape(), grad.options());
    KASMINA_BACKEND(grad.device(), clamp_backward, grad, x, min, max, out);
    return out;
}

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
    select_backend(common_device("where", {&condition, &a, &b}), "where");
    if (condition.dtype() != DType::boolean)
        raise<DTypeError>("where", "condition must be bool, got ", condition.describe());
    check_same_dtype("where", a, b);
    Shape shape;
    try {
        shape = broadcast_shapes(broadcast_shapes(condition.shape(), a.shape(), "where"), b.shape(), "where");
    } catch (const ShapeError&) {
        raise<ShapeError>("where", "condition ", shape_str(condition.shape()), ", input ", shape_str(a.shape()), " and other ",
                          shape_str(b.shape()), " do not broadcast to a common shape");
    }
    Tensor out = Tensor::empty(shape, a.options());
    KASMINA_BACKEND(a.device(), where, condition, a, b, out);
    return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
    if (mask.dtype() != DType::boolean)
        raise<DTypeError>("masked_fill", "mask must be bool, got ", mask.describe());
    const Shape shape = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
    if (shape != x.shape())
        raise<ShapeError>("masked_fill", "mask ", shape_str(mask.shape()), " must broadcast to input ", shape_str(x.shape()));
    return where(mask, Tensor::scalar(value, x.options()).to(x.device()), x);
}

void add_into(const Tensor& destination, const Tensor& source, double alpha) {
    select_backend(common_device("add_", {&destination, &source}), "add_");
    check_same_dtype("add_", destination, source);
    if (broadcast_shapes(destination.shape(), source.shape(), "add_") != destination.shape())
        raise<ShapeError>("add_", "source ", shape_str(source.shape()), " does not broadcast to ", shape_str(destination.shape()));
    KASMINA_BACKEND(destination.device(), add_into, destination, source, alpha);
}

// ---- reductions -------------------------------------------------------------------------------

std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t rank, const char* op) {
    std::vector<int64_t> result;
    if (dims.empty()) {
        result.resize(rank);
        std::iota(result.begin(), result.end(), 0);
        return result;
    }
    for (int64_t dim : dims) result.push_back(wrap_dim(dim, rank, op));
    std::sort(result.begin(), result.end());
    if (std::adjacent_find(result.begin(), result.end()) != result.end())
        raise<ShapeError>(op, "dimension listed twice in ", shape_str(dims));
    if (rank == 0) result.clear();
    return result;
}

namespace {

struct ReductionLayout {
    Tensor matrix;       // [outer, reduced] (rows) or [reduced, outer] (columns), contiguous
    bool columns = false;
    Shape keep_shape;    // output shape with keepdim
    Shape final_shape;   // output shape as requested
    int64_t reduced = 1;
};

ReductionLayout reduction_layout(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op,
                                 bool allow_columns) {
    const std::vector<int64_t> reduce = normalize_dims(dims, x.dim(), op);
    ReductionLayout layout;
    std::vector<int64_t> kept_dims;
    for (int64_t d = 0; d < x.dim(); ++d) {
        const bool reduced = std::binary_search(reduce.begin(), reduce.end(), d);
        layout.keep_shape.push_back(reduced ? 1 : x.size(d));
        if (!reduced) {
            layout.final_shape.push_back(x.size(d));
            kept_dims.push_back(d);
        } else {
            layout.reduced *= x.size(d);
        }
    }
    if (keepdim) layout.final_shape = layout.keep_shape;
    const int64_t outer = shape_numel(layout.keep_shape);
    // Leading reduced block of a contiguous tensor: reduce columns without a copy.
    const bool leading = !reduce.empty() && reduce.back() == static_cast<int64_t>(reduce.size()) - 1;
    if (allow_columns && leading && x.is_contiguous() && !kept_dims.empty()) {
        layout.columns = true;
        layout.matrix = reshaped(x, {layout.reduced, outer});
        return layout;
    }
    std::vector<int64_t> order = kept_dims;
    order.insert(order.end(), reduce.begin(), reduce.end());
    layout.matrix = reshaped(contiguous_copy(permuted_view(x, order)), {outer, layout.reduced});
    return layout;
}

}  // namespace

Tensor finite_flag(const Tensor& x) {
    if (!x.defined()) raise<Error>("finite_flag", "got an undefined tensor");
    Tensor out = Tensor::empty({}, {.dtype = DType::boolean, .device = x.device()});
    if (!is_floating(x.dtype())) {
        out.fill_(1.0);  // integers and bools are always finite
        return out;
    }
    KASMINA_BACKEND(x.device(), finite_flag, x.contiguous(), out);
    return out;
}

Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    const char* name = op == ReduceOp::sum ? "sum" : op == ReduceOp::mean ? "mean" : op == ReduceOp::max ? "max" : "min";
    select_backend(common_device(name, {&x}), name);
    if (op == ReduceOp::mean && !is_floating(x.dtype()))
        raise<DTypeError>(name, "expected a floating tensor, got ", x.describe());
    if (x.dtype() == DType::boolean) raise<DTypeError>(name, "bool tensors cannot be reduced (", x.describe(), ")");
    const ReductionLayout layout = reduction_layout(x, dims, keepdim, name, true);
    if (layout.reduced == 0 && (op == ReduceOp::max || op == ReduceOp::min))
        raise<ShapeError>(name, "cannot take ", name, " over an empty dimension of ", x.describe());
    Tensor out = Tensor::empty(layout.keep_shape, x.options());
    if (layout.reduced == 0) {
        out.fill_(op == ReduceOp::sum ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    } else if (out.numel() > 0) {
        if (layout.columns) KASMINA_BACKEND(x.device(), reduce_columns, op, layout.matrix, reshaped(out, {out.numel()}));
        else KASMINA_BACKEND(x.device(), reduce_rows, op, layout.matrix, reshaped(out, {out.numel()}));
    }
    return reshaped(out, layout.final_shape);
}

Tensor variance(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
    select_backend(common_device("var", {&x}), "var");
    if (!is_floating(x.dtype())) raise<DTypeError>("var", "expected a floating tensor, got ", x.describe());
    const ReductionLayout layout = reduction_layout(x, dims, keepdim, "var", false);
    Tensor out = Tensor::empty(layout.keep_shape, x.options());
    if (out.numel() > 0) KASMINA_BACKEND(x.device(), variance_rows, layout.matrix, correction, reshaped(out, {out.numel()}));
    return reshaped(out, layout.final_shape);
}

Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    select_backend(common_device("logsumexp", {&x}), "logsumexp");
    if (!is_floating(x.dtype())) raise<DTypeError>("logsumexp", "expected a floating tensor, got ", x.describe());
    const ReductionLayout layout = reduction_layout(x, dims, keepdim, "logsumexp", false);
    Tensor out = Tensor::empty(layout.keep_shape, x.options());
    if (layout.reduced == 0) out.fill_(-std::numeric_limits<double>::infinity());
    else if (out.numel() > 0) KASMINA_BACKEND(x.device(), logsumexp_rows, layout.matrix, reshaped(out, {out.numel()}));
    return reshaped(out, layout.final_shape);
}

std::pair<Tensor, Tensor> max_along(const Tensor& x, int64_t dim, bool keepdim) {
    select_backend(common_device("max", {&x}), "max");
    if (x.dtype() == DType::boolean) raise<DTypeError>("max", "bool tensors are not supported (", x.describe(), ")");
    const int64_t wrapped = wrap_dim(dim, x.shape(), "max");
    if (x.dim() > 0 && x.size(wrapped) == 0) raise<ShapeError>("max", "cannot take max over an empty dimension of ", x.describe());
    const ReductionLayout layout = reduction_layout(x, x.dim() == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{wrapped},
                                                    keepdim, "max", false);
    Tensor values = Tensor::empty(layout.keep_shape, x.options());
    Tensor indices = Tensor::empty(layout.keep_shape, {.dtype = DType::i64, .device = x.device()});
    if (values.numel() > 0)
        KASMINA_BACKEND(x.device(), max_rows, layout.matrix, reshaped(values, {values.numel()}), reshaped(indices, {indices.numel()}));
    return {reshaped(values, layout.final_shape), reshaped(indices, layout.final_shape)};
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
    if (grad.shape() == shape) return grad;
    const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
    if (lead < 0) raise<ShapeError>("sum_to", "cannot reduce ", shape_str(grad.shape()), " to ", shape_str(shape));
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < grad.dim(); ++d)
        if (d < lead || (shape[d - lead] == 1 && grad.size(d) != 1)) dims.push_back(d);
    if (dims.empty()) return reshaped(contiguous_copy(grad), shape);
    Tensor summed = reduce(ReduceOp::sum, grad, dims, true);
    return reshaped(summed, shape);
}

// ---- linear algebra -----------------------------------------------------------------------------

Tensor matmul(const Tensor& a, const Tensor& b) {
    select_backend(common_device("matmul", {&a, &b}), "matmul");
    check_same_dtype("matmul", a, b);
    if (a.dim() == 0 || b.dim() == 0)
        raise<ShapeError>("matmul", "both operands need at least 1 dimension, got ", shape_str(a.shape()), " and ",
                          shape_str(b.shape()));
    if (a.dtype() == DType::boolean) raise<DTypeError>("matmul", "bool operands are not supported");
    // Promote 1-D operands as NumPy does, then remove the added dims at the end.
    const Tensor left = a.dim() == 1 ? detail::make_view(a, {1, a.size(0)}, {0, a.stride(0)}, a.offset()) : a;
    const Tensor right = b.dim() == 1 ? detail::make_view(b, {b.size(0), 1}, {b.stride(0), 0}, b.offset()) : b;
    const int64_t m = left.size(-2), k = left.size(-1), k2 = right.size(-2), n = right.size(-1);
    if (k != k2)
        raise<ShapeError>("matmul", "inner dimensions differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()),
                          " (", k, " vs ", k2, ")");
    const Shape left_batch(left.shape().begin(), left.shape().end() - 2);
    const Shape right_batch(right.shape().begin(), right.shape().end() - 2);
    const Shape batch = broadcast_shapes(left_batch, right_batch, "matmul");
    const int64_t batch_count = shape_numel(batch);
    Shape out_shape = batch;
    out_shape.push_back(m);
    out_shape.push_back(n);

    Tensor out = Tensor::empty(out_shape, a.options());
    // Bring each operand to [batch_count, rows, cols]: a view when its batch dims collapse to one
    // non-zero stride (inner transposition is kept, oneDNN takes it), otherwise a dense copy.
    auto as_batched = [&](const Tensor& t, int64_t rows, int64_t cols) {
        Shape full = batch;
        full.push_back(rows);
        full.push_back(cols);
        const Shape strides = broadcast_strides(t.shape(), t.strides(), full);
        const Tensor expanded = detail::make_view(t, full, strides, t.offset());
        int64_t batch_stride = rows * cols;
        bool collapsible = true;
        int64_t expected = -1;
        for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
            if (batch[d] == 1) continue;
            if (strides[d] == 0 || (expected >= 0 && strides[d] != expected)) collapsible = false;
            if (expected < 0) batch_stride = strides[d];
            expected = strides[d] * batch[d];
        }
        if (collapsible)
            return detail::make_view(t, {batch_count, rows, cols}, {batch_stride, strides[strides.size() - 2], strides.back()},
                                     t.offset());
        return reshaped(contiguous_copy(expanded), {batch_count, rows, cols});
    };
    if (right.dim() == 2 && batch_count > 1) {
        // [B*M, K] @ [K, N] is one GEMM.
        const Tensor left_rows = reshaped(contiguous_copy(left), {1, batch_count * m, k});
        const Tensor right_one = detail::make_view(right, {1, k, n}, {k * n, right.stride(0), right.stride(1)}, right.offset());
        KASMINA_BACKEND(a.device(), batched_matmul, left_rows, right_one, reshaped(out, {1, batch_count * m, n}));
    } else {
        KASMINA_BACKEND(a.device(), batched_matmul, as_batched(left, m, k), as_batched(right, k, n), reshaped(out, {batch_count, m, n}));
    }
    Shape final_shape = batch;
    if (a.dim() > 1) final_shape.push_back(m);
    if (b.dim() > 1) final_shape.push_back(n);
    return reshaped(out, final_shape);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    select_backend(common_device("linear", {&x, &weight, &bias}), "linear");
    check_same_dtype("linear", x, weight);
    if (bias.defined()) check_same_dtype("linear", x, bias);
    if (weight.dim() != 2) raise<ShapeError>("linear", "weight must be 2-D [out, in], got ", shape_str(weight.shape()));
    if (x.dim() < 1 || x.size(-1) != weight.size(1))
        raise<ShapeError>("linear", "input ", shape_str(x.shape()), " does not match weight ", shape_str(weight.shape()),
                          " (expected last input dimension ", weight.size(1), ")");
    if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))
        raise<ShapeError>("linear", "bias ", shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()),
                          " (expected [", weight.size(0), "])");
    const int64_t rows = x.numel() / std::max<int64_t>(x.size(-1), 1);
    const Tensor x_dense = contiguous_copy(x);
    Shape out_shape = x.shape();
    out_shape.back() = weight.size(0);
    Tensor out = Tensor::empty(out_shape, x.options());
    KASMINA_BACKEND(x.device(), linear, reshaped(x_dense, {x.dim() == 0 ? 1 : rows, x.size(-1)}), weight, bias, reshaped(out, {rows, weight.size(0)}));
    return out;
}

// ---- softmax -----------------------------------------------------------------------------------

Tensor softmax(const Tensor& x, int64_t dim) {
    select_backend(common_device("softmax", {&x}), "softmax");
    if (!is_floating(x.dtype())) raise<DTypeError>("softmax", "expected a floating tensor, got ", x.describe());
    const int64_t wrapped = wrap_dim(dim, x.shape(), "softmax");
    const Tensor dense = contiguous_copy(x);
    Tensor out = Tensor::empty(x.shape(), x.options());
    KASMINA_BACKEND(x.device(), softmax, dense, x.dim() == 0 ? 0 : wrapped, false, out);
    return out;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
    select_backend(common_device("log_softmax", {&x}), "log_softmax");
    if (!is_floating(x.dtype())) raise<DTypeError>("log_softmax", "expected a floating tensor, got ", x.describe());
    const int64_t wrapped = wrap_dim(dim, x.shape(), "log_softmax");
    const Tensor dense = contiguous_copy(x);
    Tensor out = Tensor::empty(x.shape(), x.options());
    KASMINA_BACKEND(x.device(), softmax, dense, x.dim() == 0 ? 0 : wrapped, true, out);
    return out;
}

Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) {
    select_backend(common_device("softmax_backward", {&grad, &y}), "softmax_backward");
    Tensor out = Tensor::empty(y.shape(), y.options());
    KASMINA_BACKEND(y.device(), softmax_backward, contiguous_copy(grad), contiguous_copy(y), wrap_dim(dim, y.shape(), "softmax"), false, out);
    return out;
}

Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) {
    select_backend(common_device("log_softmax_backward", {&grad, &y}), "log_softmax_backward");
    Tensor out = Tensor::empty(y.shape(), y.options());
    KASMINA_BACKEND(y.device(), softmax_backward, contiguous_copy(grad), contiguous_copy(y), wrap_dim(dim, y.shape(), "log_softmax"), true, out);
    return out;
}

// ---- indexing and joining ----------------------------------------------------------------------

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
    if (tensors.empty()) raise<ShapeError>("cat", "expected at least one tensor");
    const Tensor& first = tensors.front();
    const int64_t wrapped = wrap_dim(dim, first.shape(), "cat");
    Shape out_shape = first.shape();
    out_shape[wrapped] = 0;
    for (const Tensor& t : tensors) {
        common_device("cat", {&first, &t});
        check_same_dtype("cat", first, t);
        bool matches = t.dim() == first.dim();
        for (int64_t d = 0; matches && d < t.dim(); ++d) matches = d == wrapped || t.size(d) == first.size(d);
        if (!matches)
            raise<ShapeError>("cat", "tensor ", shape_str(t.shape()), " does not match ", shape_str(first.shape()),
                              " outside dimension ", wrapped);
        out_shape[wrapped] += t.size(wrapped);
    }
    Tensor out = Tensor::empty(out_shape, first.options());
    int64_t start = 0;
    for (const Tensor& t : tensors) {
        Shape strides = out.strides();
        Shape shape = out_shape;
        shape[wrapped] = t.size(wrapped);
        copy_into(detail::make_view(out, shape, strides, start * out.stride(wrapped)), t);
        start += t.size(wrapped);
    }
    return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
    select_backend(common_device("index_select", {&x, &index}), "index_select");
    check_index_tensor("index_select", index);
    if (index.dim() > 1) raise<ShapeError>("index_select", "index must be 0-D or 1-D, got ", shape_str(index.shape()));
    const int64_t wrapped = wrap_dim(dim, x.shape(), "index_select");
    const int64_t bound = x.dim() == 0 ? 1 : x.size(wrapped);
    check_index_range("index_select", index, bound, "dimension", &x);
    Shape out_shape = x.shape();
    if (x.dim() > 0) out_shape[wrapped] = index.numel();
    Tensor out = Tensor::empty(out_shape, x.options());
    KASMINA_BACKEND(x.device(), index_select, contiguous_copy(x), wrapped, index, out);
    return out;
}

Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& source) {
    select_backend(common_device("index_add", {&index, &source}), "index_add");
    Tensor out = Tensor::zeros(shape, source.options());
    KASMINA_BACKEND(source.device(), index_add, out, wrap_dim(dim, static_cast<int64_t>(shape.size()), "index_add"), index, contiguous_copy(source));
    return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
    select_backend(common_device("gather", {&x, &index}), "gather");
    check_index_tensor("gather", index);
    const int64_t wrapped = wrap_dim(dim, x.shape(), "gather");
    if (index.dim() != x.dim())
        raise<ShapeError>("gather", "index ", shape_str(index.shape()), " must have the input's rank ", x.dim(), " (input ",
                          shape_str(x.shape()), ")");
    for (int64_t d = 0; d < x.dim(); ++d)
        if (d != wrapped && index.size(d) > x.size(d))
            raise<ShapeError>("gather", "index ", shape_str(index.shape()), " is larger than input ", shape_str(x.shape()),
                              " in dimension ", d);
    check_index_range("gather", index, x.dim() == 0 ? 1 : x.size(wrapped), "gathered dimension", &x);
    Tensor out = Tensor::empty(index.shape(), x.options());
    KASMINA_BACKEND(x.device(), gather, contiguous_copy(x), wrapped, contiguous_copy(index), out);
    return out;
}

Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& source) {
    select_backend(common_device("scatter_add", {&index, &source}), "scatter_add");
    Tensor out = Tensor::zeros(shape, source.options());
    KASMINA_BACKEND(source.device(), scatter_add, out, wrap_dim(dim, static_cast<int64_t>(shape.size()), "scatter_add"), contiguous_copy(index),
                     contiguous_copy(source));
    return out;
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
    select_backend(common_device("one_hot", {&indices}), "one_hot");
    if (indices.dtype() != DType::i64) raise<DTypeError>("one_hot", "indices must be int64, got ", indices.describe());
    if (num_classes < 0) {
        num_classes = 0;
        for (int64_t value : indices.to_vector<int64_t>()) num_classes = std::max(num_classes, value + 1);
    }
    check_index_range("one_hot", indices, num_classes, "num_classes");
    Shape out_shape = indices.shape();
    out_shape.push_back(num_classes);
    Tensor out = Tensor::zeros(out_shape, {.dtype = DType::i64, .device = indices.device()});
    KASMINA_BACKEND(indices.device(), one_hot, indices, out);
    return out;
}

Tensor dropout_mask(const Tensor& like, double p, Generator& generator) {
    select_backend(like.device(), "dropout");
    if (!(p >= 0.0 && p <= 1.0)) raise<Error>("dropout", "probability must be in [0, 1], got ", p);
    if (!is_floating(like.dtype())) raise<DTypeError>("dropout", "expected a floating tensor, got ", like.describe());
    Tensor mask = Tensor::empty(like.shape(), like.options());
    const uint64_t first = generator.reserve(static_cast<uint64_t>(mask.numel()));
    KASMINA_BACKEND(like.device(), dropout_mask, mask, p, generator.seed(), first);
    return mask;
}

}  // namespace kasmina::kernels
