// Softmax and log-softmax on the CPU: oneDNN primitives for float32 forward, loops over the
// [outer, n, inner] geometry for float64 and for the backward passes.
#include <cmath>
#include <limits>

#include "kernels/axis_split.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/onednn_utils.h"

namespace kasmina::kernels::cpu {
namespace {

template <typename T>
void softmax_loop(const T* x, T* y, AxisSplit g, bool log) {
#pragma omp parallel for collapse(2) schedule(static) if (g.outer * g.n * g.inner > 32768)
    for (int64_t o = 0; o < g.outer; ++o) {
        for (int64_t i = 0; i < g.inner; ++i) {
            const T* in = x + o * g.n * g.inner + i;
            T* out = y + o * g.n * g.inner + i;
            T peak = -std::numeric_limits<T>::infinity();
            for (int64_t k = 0; k < g.n; ++k) peak = std::max(peak, in[k * g.inner]);
            if (std::isinf(peak) && peak < 0) peak = 0;  // a row of -inf: exp gives 0, result NaN like PyTorch
            double total = 0;
            for (int64_t k = 0; k < g.n; ++k) total += std::exp(static_cast<double>(in[k * g.inner] - peak));
            const double log_total = std::log(total);
            for (int64_t k = 0; k < g.n; ++k) {
                const double shifted = static_cast<double>(in[k * g.inner] - peak);
                out[k * g.inner] = static_cast<T>(log ? shifted - log_total : std::exp(shifted) / total);
            }
        }
    }
}

template <typename T>
void softmax_backward_loop(const T* grad, const T* y, T* out, AxisSplit g, bool log) {
#pragma omp parallel for collapse(2) schedule(static) if (g.outer * g.n * g.inner > 32768)
    for (int64_t o = 0; o < g.outer; ++o) {
        for (int64_t i = 0; i < g.inner; ++i) {
            const int64_t base = o * g.n * g.inner + i;
            double total = 0;
            for (int64_t k = 0; k < g.n; ++k) {
                const int64_t at = base + k * g.inner;
                total += log ? static_cast<double>(grad[at]) : static_cast<double>(grad[at]) * y[at];
            }
            for (int64_t k = 0; k < g.n; ++k) {
                const int64_t at = base + k * g.inner;
                out[at] = log ? static_cast<T>(grad[at] - std::exp(static_cast<double>(y[at])) * total)
                              : static_cast<T>(y[at] * (grad[at] - total));
            }
        }
    }
}

}  // namespace

void softmax(const Tensor& x, int64_t dim, bool log, const Tensor& out) {
    if (x.numel() == 0) return;
    if (x.dtype() == DType::f32) {
        const auto desc = onednn::describe(x, "softmax");
        const std::string key = onednn::geometry_key(log ? "log_softmax" : "softmax", {&x}, std::to_string(dim));
        dnnl::primitive primitive = onednn::cached_primitive(key, [&]() -> dnnl::primitive {
            if (log) {
                const dnnl::logsoftmax_forward::desc op(dnnl::prop_kind::forward_inference, desc, static_cast<int>(dim));
                return dnnl::logsoftmax_forward(dnnl::logsoftmax_forward::primitive_desc(op, onednn::engine()));
            }
            const dnnl::softmax_forward::desc op(dnnl::prop_kind::forward_inference, desc, static_cast<int>(dim));
            return dnnl::softmax_forward(dnnl::softmax_forward::primitive_desc(op, onednn::engine()));
        });
        primitive.execute(onednn::stream(), {{DNNL_ARG_SRC, onednn::wrap(desc, x)}, {DNNL_ARG_DST, onednn::wrap(desc, out)}});
        onednn::stream().wait();
        return;
    }
    dispatch_floating(x.dtype(), "softmax", [&]<typename T>() {
        softmax_loop(static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), split_at(x.shape(), dim), log);
    });
}

void softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim, bool log, const Tensor& out) {
    if (y.numel() == 0) return;
    if (y.dtype() == DType::f32) {
        const auto desc = onednn::describe(y, "softmax_backward");
        const std::string key = onednn::geometry_key(log ? "log_softmax_backward" : "softmax_backward", {&y}, std::to_string(dim));
        const int axis = static_cast<int>(dim);
        dnnl::primitive primitive = onednn::cached_primitive(key, [&]() -> dnnl::primitive {
            if (log) {
                const dnnl::logsoftmax_forward::primitive_desc hint(
                    dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_training, desc, axis), onednn::engine());
                return dnnl::logsoftmax_backward(dnnl::logsoftmax_backward::primitive_desc(
                    dnnl::logsoftmax_backward::desc(desc, desc, axis), onednn::engine(), hint));
            }
            const dnnl::softmax_forward::primitive_desc hint(
                dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, desc, axis), onednn::engine());
            return dnnl::softmax_backward(
                dnnl::softmax_backward::primitive_desc(dnnl::softmax_backward::desc(desc, desc, axis), onednn::engine(), hint));
        });
        primitive.execute(onednn::stream(), {{DNNL_ARG_DST, onednn::wrap(desc, y)},
                                             {DNNL_ARG_DIFF_DST, onednn::wrap(desc, grad)},
                                             {DNNL_ARG_DIFF_SRC, onednn::wrap(desc, out)}});
        onednn::stream().wait();
        return;
    }
    dispatch_floating(y.dtype(), "softmax_backward", [&]<typename T>() {
        softmax_backward_loop(static_cast<const T*>(grad.raw_data()), static_cast<const T*>(y.raw_data()),
                              static_cast<T*>(out.raw_data()), split_at(y.shape(), dim), log);
    });
}

}  // namespace kasmina::kernels::cpu
