#include "kernels/cpu/onednn_utils.h"

#include <sstream>
#include <unordered_map>

namespace kasmina::kernels::cpu::onednn {

dnnl::engine& engine() {
    static dnnl::engine instance(dnnl::engine::kind::cpu, 0);
    return instance;
}

dnnl::stream& stream() {
    thread_local dnnl::stream instance(engine());
    return instance;
}

dnnl::memory::data_type data_type(DType dtype, const char* op) {
    switch (dtype) {
        case DType::f32: return dnnl::memory::data_type::f32;
        case DType::i32: return dnnl::memory::data_type::s32;
        case DType::u8: return dnnl::memory::data_type::u8;
        default: break;
    }
    raise<DTypeError>(op, "oneDNN path does not take ", dtype_name(dtype));
}

dnnl::memory::desc describe(const Shape& shape, const Shape& strides, DType dtype, const char* op) {
    dnnl::memory::dims dims(shape.begin(), shape.end());
    dnnl::memory::dims steps(strides.begin(), strides.end());
    if (dims.empty()) {
        dims = {1};
        steps = {1};
    }
    return dnnl::memory::desc(dims, data_type(dtype, op), steps);
}

dnnl::memory::desc describe(const Tensor& tensor, const char* op) {
    return describe(tensor.shape(), tensor.strides(), tensor.dtype(), op);
}

dnnl::memory wrap(const dnnl::memory::desc& desc, const Tensor& tensor) {
    return dnnl::memory(desc, engine(), tensor.raw_data());
}

std::string geometry_key(const char* op, std::initializer_list<const Tensor*> tensors, const std::string& extra) {
    std::ostringstream key;
    key << op << '|' << extra;
    for (const Tensor* tensor : tensors) {
        key << '|';
        if (tensor == nullptr || !tensor->defined()) {
            key << '-';
            continue;
        }
        key << static_cast<int>(tensor->dtype()) << shape_str(tensor->shape()) << shape_str(tensor->strides());
    }
    return key.str();
}

// One cache per thread: with oneDNN's default build (DNNL_ENABLE_CONCURRENT_EXEC=OFF) a primitive's
// library-managed scratchpad is shared, so a primitive must run on the thread that created it, and no
// primitive may run on two threads at once. A process-wide cache handed one primitive to two training
// threads and corrupted their results (found by the two-trainer concurrency test under poisoned
// allocations). oneDNN's own primitive cache keeps re-creation per thread cheap.
dnnl::primitive cached_primitive(const std::string& key, const std::function<dnnl::primitive()>& make) {
    thread_local std::unordered_map<std::string, dnnl::primitive> cache;
    auto found = cache.find(key);
    if (found != cache.end()) return found->second;
    if (cache.size() > 4096) cache.clear();  // bound memory for workloads with ever-changing shapes
    return cache.emplace(key, make()).first->second;
}

void eltwise_forward(dnnl::algorithm algorithm, float alpha, float beta, const Tensor& x, const Tensor& out) {
    const auto desc = describe(x, "eltwise");
    const std::string key = geometry_key("eltwise", {&x}, std::to_string(static_cast<int>(algorithm)) + "/" +
                                                              std::to_string(alpha) + "/" + std::to_string(beta));
    dnnl::primitive primitive = cached_primitive(key, [&] {
        const dnnl::eltwise_forward::desc op_desc(dnnl::prop_kind::forward_inference, algorithm, desc, alpha, beta);
        return dnnl::eltwise_forward(dnnl::eltwise_forward::primitive_desc(op_desc, engine()));
    });
    primitive.execute(stream(), {{DNNL_ARG_SRC, wrap(desc, x)}, {DNNL_ARG_DST, wrap(describe(out, "eltwise"), out)}});
    stream().wait();
}

bool uses_dst(dnnl::algorithm algorithm) {
    switch (algorithm) {
        case dnnl::algorithm::eltwise_tanh_use_dst_for_bwd:
        case dnnl::algorithm::eltwise_logistic_use_dst_for_bwd:
        case dnnl::algorithm::eltwise_exp_use_dst_for_bwd:
        case dnnl::algorithm::eltwise_sqrt_use_dst_for_bwd:
        case dnnl::algorithm::eltwise_relu_use_dst_for_bwd: return true;
        default: return false;
    }
}

void eltwise_backward(dnnl::algorithm algorithm, float alpha, float beta, const Tensor& grad, const Tensor& saved,
                      const Tensor& out) {
    const auto desc = describe(saved, "eltwise_backward");
    const std::string key = geometry_key("eltwise_backward", {&grad, &saved, &out},
                                         std::to_string(static_cast<int>(algorithm)) + "/" + std::to_string(alpha) + "/" +
                                             std::to_string(beta));
    dnnl::primitive primitive = cached_primitive(key, [&] {
        const dnnl::eltwise_forward::desc forward(dnnl::prop_kind::forward_training, algorithm, desc, alpha, beta);
        const dnnl::eltwise_forward::primitive_desc hint(forward, engine());
        const dnnl::eltwise_backward::desc backward(algorithm, describe(grad, "eltwise_backward"), desc, alpha, beta);
        return dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(backward, engine(), hint));
    });
    primitive.execute(stream(), {{uses_dst(algorithm) ? DNNL_ARG_DST : DNNL_ARG_SRC, wrap(desc, saved)},
                                 {DNNL_ARG_DIFF_DST, wrap(describe(grad, "eltwise_backward"), grad)},
                                 {DNNL_ARG_DIFF_SRC, wrap(describe(out, "eltwise_backward"), out)}});
    stream().wait();
}

}  // namespace kasmina::kernels::cpu::onednn
