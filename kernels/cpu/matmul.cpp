// Matrix products on the CPU: oneDNN matmul for float32 (weights may be transposed through
// strides, bias fused), a blocked loop for float64 (gradient checks) and integers.
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/onednn_utils.h"

namespace kasmina::kernels::cpu {
namespace {

// out[b] = a[b] @ b[b] (+ bias) for any strides, accumulating in T (float64 path).
template <typename T>
void loop_matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
    const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    const T* pbias = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
    T* po = static_cast<T*>(out.raw_data());
    const int64_t sa0 = a.stride(0), sa1 = a.stride(1), sa2 = a.stride(2);
    const int64_t sb0 = b.stride(0), sb1 = b.stride(1), sb2 = b.stride(2);
    const int64_t bias_stride = pbias ? bias.stride(0) : 0;
#pragma omp parallel for collapse(2) schedule(static) if (batch * m * n * k > 65536)
    for (int64_t batch_index = 0; batch_index < batch; ++batch_index) {
        for (int64_t i = 0; i < m; ++i) {
            T* row = po + (batch_index * m + i) * n;
            for (int64_t j = 0; j < n; ++j) row[j] = pbias ? pbias[j * bias_stride] : T(0);
            for (int64_t p = 0; p < k; ++p) {
                const T left = pa[batch_index * sa0 + i * sa1 + p * sa2];
                const T* right = pb + batch_index * sb0 + p * sb1;
                for (int64_t j = 0; j < n; ++j) row[j] += left * right[j * sb2];
            }
        }
    }
}

// oneDNN accepts strided operands, but each matrix must be row- or column-major inside.
bool onednn_layout(const Tensor& t) {
    const int64_t rows = t.size(-2), cols = t.size(-1);
    return (t.stride(-1) == 1 || cols == 1) || (t.stride(-2) == 1 || rows == 1);
}

void onednn_matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
    const auto a_desc = onednn::describe(a, "matmul");
    const auto b_desc = onednn::describe(b, "matmul");
    const auto out_desc = onednn::describe(out, "matmul");
    std::optional<dnnl::memory::desc> bias_desc;
    Shape bias_shape(out.dim(), 1), bias_strides(out.dim(), 0);
    if (bias.defined()) {
        bias_shape.back() = out.size(-1);
        bias_strides.back() = bias.stride(0);
        bias_desc = onednn::describe(bias_shape, bias_strides, DType::f32, "matmul");
    }
    const std::string key = onednn::geometry_key("matmul", {&a, &b, &bias, &out});
    dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const dnnl::matmul::desc desc = bias_desc ? dnnl::matmul::desc(a_desc, b_desc, *bias_desc, out_desc)
                                                  : dnnl::matmul::desc(a_desc, b_desc, out_desc);
        return dnnl::matmul(dnnl::matmul::primitive_desc(desc, onednn::engine()));
    });
    std::unordered_map<int, dnnl::memory> arguments{{DNNL_ARG_SRC, onednn::wrap(a_desc, a)},
                                                    {DNNL_ARG_WEIGHTS, onednn::wrap(b_desc, b)},
                                                    {DNNL_ARG_DST, onednn::wrap(out_desc, out)}};
    if (bias_desc) arguments.emplace(DNNL_ARG_BIAS, onednn::wrap(*bias_desc, bias));
    primitive.execute(onednn::stream(), arguments);
    onednn::stream().wait();
}

}  // namespace

void batched_matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
    if (a.numel() == 0 || b.numel() == 0 || out.numel() == 0) {
        if (out.numel() > 0) Tensor(out).fill_(0.0);
        return;
    }
    if (a.dtype() == DType::f32) {
        // Operands that are not row- or column-major inside (e.g. broadcast gradients) are made dense.
        auto dense = [](const Tensor& t) {
            if (onednn_layout(t)) return t;
            Tensor copy = Tensor::empty(t.shape(), t.options());
            copy_into(copy, t);
            return copy;
        };
        onednn_matmul(dense(a), dense(b), Tensor(), out);
        return;
    }
    dispatch_numeric(a.dtype(), "matmul", [&]<typename T>() { loop_matmul<T>(a, b, Tensor(), out); });
}

void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
    // weight^T as a [K, N] view: strides swapped, no copy.
    const Tensor weight_t = detail::make_view(weight, {weight.size(1), weight.size(0)}, {weight.stride(1), weight.stride(0)},
                                              weight.offset());
    if (x.numel() == 0 || out.numel() == 0) {
        if (out.numel() > 0) copy_into(out, bias.defined() ? bias : Tensor::zeros({1}, {.dtype = out.dtype()}));
        return;
    }
    if (x.dtype() == DType::f32) {
        const Tensor weight_dense = onednn_layout(weight_t) ? weight_t : weight_t.contiguous();
        onednn_matmul(x, weight_dense, bias, out);
        return;
    }
    auto as_batch = [](const Tensor& t) {
        return detail::make_view(t, {1, t.size(0), t.size(1)}, {0, t.stride(0), t.stride(1)}, t.offset());
    };
    dispatch_floating(x.dtype(), "linear",
                      [&]<typename T>() { loop_matmul<T>(as_batch(x), as_batch(weight_t), bias, as_batch(out)); });
}

}  // namespace kasmina::kernels::cpu
