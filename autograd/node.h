// The recorded graph: each differentiable op's output points at a Node that knows how to turn
// gradients of the op's outputs into gradients of its inputs, and at the edges to those inputs'
// own nodes (or to the AccumulateGrad of a leaf).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace kasmina::autograd {

class Node;

struct Edge {
    std::shared_ptr<Node> function;
    uint32_t input_nr = 0;  // which output slot of `function` the gradient flows into
    bool valid() const { return function != nullptr; }
};

// Shape, dtype and device of a forward output, to build zeros when a gradient is absent.
struct OutputMeta {
    Shape shape;
    DType dtype = DType::f32;
    Device device;
};

class Node {
public:
    Node();
    virtual ~Node() = default;
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    virtual std::string name() const = 0;
    // grad_outputs: one per forward output (zeros filled in where absent). Returns one gradient per
    // forward input, undefined where the input needs none.
    virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) = 0;
    // Frees saved tensors once the graph has been run without retain_graph.
    virtual void release_saved() {}

    std::vector<Edge> next_edges;
    std::vector<OutputMeta> outputs;
    uint64_t sequence_nr;  // creation order: later nodes run first
};

// Adds incoming gradients into a leaf tensor's .grad.
class AccumulateGrad final : public Node {
public:
    explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf);
    std::string name() const override { return "AccumulateGrad"; }
    std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;

private:
    std::shared_ptr<TensorImpl> leaf_;
};

// A tensor kept for backward, remembering the storage version when it was saved: unpacking after
// an in-place modification raises AutogradError instead of computing a wrong gradient.
class SavedTensor {
public:
    SavedTensor() = default;
    explicit SavedTensor(const Tensor& tensor);
    Tensor unpack(const char* op) const;

private:
    Tensor data_;
    uint64_t version_ = 0;
};

// A node whose backward is a closure (the common case: ops are defined as forward + backward lambda).
using BackwardFunction = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

class FunctionNode final : public Node {
public:
    FunctionNode(std::string name, BackwardFunction backward);
    std::string name() const override { return name_; }
    std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
    void release_saved() override { backward_ = nullptr; }

private:
    std::string name_;
    BackwardFunction backward_;
};

// True if grad mode is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches `backward` as the grad_fn of `outputs` when any input requires grad (in grad mode).
// Returns the outputs (unchanged when nothing is recorded).
std::vector<Tensor> record(const char* name, std::vector<Tensor> outputs, const std::vector<Tensor>& inputs,
                           BackwardFunction backward);
Tensor record(const char* name, Tensor output, const std::vector<Tensor>& inputs, BackwardFunction backward);

// The edge a gradient for `tensor` must flow along (its grad_fn slot, or its leaf accumulator).
Edge gradient_edge(const Tensor& tensor);

}  // namespace kasmina::autograd
