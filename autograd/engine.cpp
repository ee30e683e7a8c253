#include "autograd/engine.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/node.h"
#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

namespace kasmina::autograd {
namespace {

struct LaterFirst {
    bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// Adds `gradient` into slot `slot` of `buffer` (allocating the buffer lazily).
void accumulate(std::vector<Tensor>& buffer, size_t slot, const Tensor& gradient) {
    if (!gradient.defined()) return;
    if (!buffer[slot].defined()) {
        buffer[slot] = gradient;
        return;
    }
    buffer[slot] = kernels::binary(kernels::BinaryOp::add, buffer[slot], gradient);
}

}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
    if (!grads.empty() && grads.size() != roots.size())
        raise<AutogradError>("backward", "got ", grads.size(), " gradients for ", roots.size(), " roots");
    NoGradGuard no_grad;

    std::unordered_map<Node*, std::vector<Tensor>> buffers;
    std::unordered_map<Node*, int> dependencies;
    std::vector<std::shared_ptr<Node>> root_nodes;

    for (size_t i = 0; i < roots.size(); ++i) {
        const Tensor& root = roots[i];
        if (!root.defined() || !root.requires_grad())
            raise<AutogradError>("backward", "tensor ", root.describe(), " does not require grad and has no grad_fn");
        Tensor gradient = grads.empty() ? Tensor() : grads[i];
        if (!gradient.defined()) {
            if (root.numel() != 1)
                raise<AutogradError>("backward", "gradient can be implicit only for one-element outputs, got ",
                                     root.describe(), "; pass a gradient of the same shape");
            gradient = Tensor::ones(root.shape(), root.options());
        } else if (gradient.shape() != root.shape() || gradient.dtype() != root.dtype() ||
                   gradient.device() != root.device()) {
            raise<ShapeError>("backward", "gradient ", gradient.describe(), " does not match output ", root.describe());
        }
        const Edge edge = gradient_edge(root);
        auto& buffer = buffers[edge.function.get()];
        buffer.resize(edge.function->outputs.size());
        accumulate(buffer, edge.input_nr, gradient);
        root_nodes.push_back(edge.function);
    }

    // Count, for every reachable node, how many edges point at it.
    std::vector<Node*> stack;
    std::unordered_set<Node*> seen;
    for (const auto& node : root_nodes)
        if (seen.insert(node.get()).second) stack.push_back(node.get());
    while (!stack.empty()) {
        Node* node = stack.back();
        stack.pop_back();
        for (const Edge& edge : node->next_edges) {
            if (!edge.valid()) continue;
            ++dependencies[edge.function.get()];
            if (seen.insert(edge.function.get()).second) stack.push_back(edge.function.get());
        }
    }

    std::priority_queue<Node*, std::vector<Node*>, LaterFirst> ready;
    std::unordered_set<Node*> queued;
    for (const auto& node : root_nodes)
        if (dependencies[node.get()] == 0 && queued.insert(node.get()).second) ready.push(node.get());

    while (!ready.empty()) {
        Node* node = ready.top();
        ready.pop();
        std::vector<Tensor> grad_outputs = std::move(buffers[node]);
        buffers.erase(node);
        grad_outputs.resize(node->outputs.size());
        bool any = false;
        for (size_t slot = 0; slot < grad_outputs.size(); ++slot) {
            if (grad_outputs[slot].defined()) {
                any = true;
                continue;
            }
            const OutputMeta& meta = node->outputs[slot];
            if (is_floating(meta.dtype)) grad_outputs[slot] = Tensor::zeros(meta.shape, {.dtype = meta.dtype, .device = meta.device});
        }
        std::vector<Tensor> grad_inputs;
        if (any) grad_inputs = node->apply(grad_outputs);
        if (!retain_graph) node->release_saved();
        for (size_t i = 0; i < node->next_edges.size(); ++i) {
            const Edge& edge = node->next_edges[i];
            if (!edge.valid()) continue;
            Node* next = edge.function.get();
            if (i < grad_inputs.size() && grad_inputs[i].defined()) {
                auto& buffer = buffers[next];
                buffer.resize(next->outputs.size());
                const OutputMeta& meta = next->outputs[edge.input_nr];
                if (grad_inputs[i].shape() != meta.shape)
                    raise<ShapeError>(node->name().c_str(), "backward produced gradient ", shape_str(grad_inputs[i].shape()),
                                      " for an input of shape ", shape_str(meta.shape));
                accumulate(buffer, edge.input_nr, grad_inputs[i]);
            }
            if (--dependencies[next] == 0 && queued.insert(next).second) ready.push(next);
        }
    }
}

}  // namespace kasmina::autograd
