// Training checkpoints: one safetensors file holding a model's weights and buffers ("model/..."), its
// optimizer's state ("optimizer/..."), the seeds' state with kernel ids ("seed_state/..."), the
// optimizer's parameter order and the caller's string metadata. Parsing checks the layout before
// anything is touched; restoring is all-or-nothing (on any error the model, its seeds and the
// optimizer are left exactly as they were).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "layers/kasmina/wrap.h"
#include "layers/module.h"
#include "layers/optim.h"
#include "runtime/safetensors.h"

namespace kasmina::morph {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct TrainingCheckpoint {
    TensorMap model;       // state_dict() of the root module
    TensorMap optimizer;   // the optimizer's state_dict()
    TensorMap seed_state;  // MorphableModel::seed_state(); empty for a model without seeds
    std::vector<std::string> parameter_order;  // the optimizer's parameters by dotted name
    MetadataMap metadata;  // the caller's entries (names starting with "kasmina." are reserved)
};

// Bounds a checkpoint file must keep, checked before anything of the declared size is allocated.
struct CheckpointLimits {
    uint64_t max_file_bytes = 8ull << 30;
    uint64_t max_header_bytes = 64ull << 20;
};

// Captures the state of `root`, `optimizer` (whose parameters are `parameters`, in order, by name)
// and, when given, the seeds of `model`. Tensors are aliases; serialize before training on.
TrainingCheckpoint capture_checkpoint(const nn::Module& root, const optim::Optimizer& optimizer,
                                      const NamedTensors& parameters, const MorphableModel* model,
                                      MetadataMap metadata = {});

std::vector<uint8_t> serialize_checkpoint(const TrainingCheckpoint& checkpoint);
void save_checkpoint(const std::string& path, const TrainingCheckpoint& checkpoint);  // atomic (temp + rename)

// Parses a checkpoint's bytes; raises ArtifactError naming `source` and the problem for a malformed
// file: not safetensors, a tensor outside the three sections, a missing or malformed parameter order.
TrainingCheckpoint parse_checkpoint(const uint8_t* bytes, size_t size, const std::string& source,
                                    const CheckpointLimits& limits = {});
TrainingCheckpoint load_checkpoint(const std::string& path, const CheckpointLimits& limits = {});

// Restores seeds (kernels reloaded through the model's cache), weights and buffers (strictly), the
// optimizer's parameter list in the saved order and its state. Returns the optimizer's parameters
// by name. All or nothing: on any error everything is put back as it was and the error rethrown.
NamedTensors restore_checkpoint(const TrainingCheckpoint& checkpoint, nn::Module& root, optim::Optimizer& optimizer,
                                MorphableModel* model);

}  // namespace kasmina::morph
