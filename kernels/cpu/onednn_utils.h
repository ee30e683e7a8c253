// oneDNN plumbing for the CPU backend: the engine, a per-thread stream, memory descriptors built
// from tensors (any strides), and a cache of primitives keyed by op and geometry so a shape seen
// before reuses its primitive without re-creating the descriptor.
#pragma once

#include <functional>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/tensor.h"

namespace kasmina::kernels::cpu::onednn {

dnnl::engine& engine();
dnnl::stream& stream();  // one per thread

dnnl::memory::data_type data_type(DType dtype, const char* op);
// Descriptor with the tensor's shape and strides (a 0-d tensor is described as [1]).
dnnl::memory::desc describe(const Tensor& tensor, const char* op);
dnnl::memory::desc describe(const Shape& shape, const Shape& strides, DType dtype, const char* op);
dnnl::memory wrap(const dnnl::memory::desc& desc, const Tensor& tensor);

// Key text from an op name and descriptor geometry (shape + strides + dtype of each operand).
std::string geometry_key(const char* op, std::initializer_list<const Tensor*> tensors, const std::string& extra = "");

// The cached primitive for `key`, built by `make` on first use. Thread-safe.
dnnl::primitive cached_primitive(const std::string& key, const std::function<dnnl::primitive()>& make);

void eltwise_forward(dnnl::algorithm algorithm, float alpha, float beta, const Tensor& x, const Tensor& out);
// out = grad * f'(...) where `saved` is the input (src algorithms) or output (*_use_dst_for_bwd algorithms).
void eltwise_backward(dnnl::algorithm algorithm, float alpha, float beta, const Tensor& grad, const Tensor& saved,
                      const Tensor& out);
bool uses_dst(dnnl::algorithm algorithm);

}  // namespace kasmina::kernels::cpu::onednn
