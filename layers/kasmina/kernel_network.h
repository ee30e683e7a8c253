// KernelNetwork: runs a kernel artifact's op list natively with autograd. A trainable network owns
// copies of the artifact's weights as leaf tensors that require grad (the layer exposes them as
// parameters); a frozen one shares the artifact's tensors (no copy).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "layers/kasmina/artifact.h"

namespace kasmina::morph {

class KernelNetwork {
public:
    // `artifact` must be validated (parse_artifact / validate_artifact did so).
    KernelNetwork(const KernelArtifact& artifact, bool trainable);

    // Runs the op list on `input` (the layer's kernel input; see KernelSignature for shapes).
    Tensor forward(const Tensor& input) const;

    // Moves or converts the weights: a trainable network's own weights in place (handles stay valid),
    // shared (frozen) ones by copy, leaving the cache's tensors as they are.
    void to(Device device);
    void to(DType dtype);
    // Weights by their artifact names ("w0", "b0", ...), in name order.
    std::vector<std::pair<std::string, Tensor>> named_parameters() const;
    const KernelSignature& signature() const { return signature_; }
    const std::vector<KernelOp>& ops() const { return ops_; }
    // The weight an op names ("" gives an undefined tensor; an unknown name raises ArtifactError).
    Tensor weight(const std::string& name) const;

private:
    void move_weight(Tensor& weight, Device device, DType dtype) const;

    KernelSignature signature_;
    std::vector<KernelOp> ops_;
    std::vector<std::pair<std::string, Tensor>> weights_;
    bool owns_weights_ = true;  // trainable: copies of the artifact's tensors; frozen: the cache's own
};

}  // namespace kasmina::morph
