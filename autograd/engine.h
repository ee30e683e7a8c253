// The backward engine: runs the recorded graph from one or more roots in reverse creation order
// (a valid topological order), summing gradients that meet at a node, and accumulating into the
// .grad of leaves. Frees saved tensors afterwards unless retain_graph is set.
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace kasmina::autograd {

// roots[i] receives gradient grads[i] (undefined: ones, allowed only for one-element roots).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads = {}, bool retain_graph = false);

}  // namespace kasmina::autograd
