#include "layers/kasmina/checkpoint.h"

#include <map>

#include "runtime/error.h"
#include "runtime/untrusted_json.h"

namespace kasmina::morph {
namespace {

constexpr const char* kParameterOrderKey = "kasmina.parameter_order";
constexpr std::pair<const char*, TensorMap TrainingCheckpoint::*> kSections[] = {
    {"model/", &TrainingCheckpoint::model},
    {"optimizer/", &TrainingCheckpoint::optimizer},
    {"seed_state/", &TrainingCheckpoint::seed_state},
};

[[noreturn]] void refuse(const std::string& source, const std::string& problem) {
    throw ArtifactError("checkpoint '" + source + "': " + problem);
}

// Deep copies, so a snapshot survives the in-place copies a restore makes.
TensorMap cloned(const TensorMap& tensors) {
    TensorMap copies;
    for (const auto& [name, tensor] : tensors) copies.emplace(name, tensor.clone());
    return copies;
}

// The optimizer's parameters by their names in `root` (identity match); unnamed ones keep "".
NamedTensors named_optimizer_parameters(const nn::Module& root, const optim::Optimizer& optimizer) {
    std::map<const TensorImpl*, std::string> names;
    for (const auto& [name, tensor] : root.named_parameters()) names.emplace(tensor.impl(), name);
    NamedTensors named;
    for (const Tensor& parameter : optimizer.parameters()) {
        const auto found = names.find(parameter.impl());
        named.emplace_back(found == names.end() ? std::string() : found->second, parameter);
    }
    return named;
}

// Sets the optimizer's parameters to `order` looked up by name in `root` (an empty name keeps the
// tensor given with it), then its state.
NamedTensors apply_optimizer(const NamedTensors& order, const TensorMap& state, nn::Module& root,
                             optim::Optimizer& optimizer) {
    std::map<std::string, Tensor> by_name;
    for (auto& [name, tensor] : root.named_parameters()) by_name.emplace(name, tensor);
    NamedTensors named;
    std::vector<Tensor> tensors;
    for (const auto& [name, fallback] : order) {
        Tensor tensor = fallback;
        if (!name.empty()) {
            const auto found = by_name.find(name);
            if (found == by_name.end())
                raise<ArtifactError>("restore_checkpoint", "the optimizer's parameter '", name, "' is not a parameter of the model");
            tensor = found->second;
        }
        named.emplace_back(name, tensor);
        tensors.push_back(tensor);
    }
    optimizer.set_parameters(tensors);
    optimizer.load_state_dict(state);
    return named;
}

}  // namespace

TrainingCheckpoint capture_checkpoint(const nn::Module& root, const optim::Optimizer& optimizer,
                                      const NamedTensors& parameters, const MorphableModel* model, MetadataMap metadata) {
    if (parameters.size() != optimizer.parameters().size())
        raise<Error>("capture_checkpoint", "got ", parameters.size(), " named parameters for an optimizer holding ",
                     optimizer.parameters().size());
    TrainingCheckpoint checkpoint;
    checkpoint.model = root.state_dict();
    checkpoint.optimizer = optimizer.state_dict();
    if (model) checkpoint.seed_state = model->seed_state();
    for (const auto& entry : parameters) checkpoint.parameter_order.push_back(entry.first);
    checkpoint.metadata = std::move(metadata);
    return checkpoint;
}

std::vector<uint8_t> serialize_checkpoint(const TrainingCheckpoint& checkpoint) {
    TensorMap tensors;
    for (const auto& [prefix, section] : kSections)
        for (const auto& [name, tensor] : checkpoint.*section) tensors.emplace(prefix + name, tensor);
    MetadataMap metadata = checkpoint.metadata;
    for (const auto& [key, value] : metadata)
        if (key.rfind("kasmina.", 0) == 0) raise<Error>("serialize_checkpoint", "metadata key '", key, "' is reserved");
    metadata[kParameterOrderKey] = nlohmann::json(checkpoint.parameter_order).dump();
    return serialize_safetensors(tensors, metadata);
}

void save_checkpoint(const std::string& path, const TrainingCheckpoint& checkpoint) {
    const std::vector<uint8_t> bytes = serialize_checkpoint(checkpoint);
    write_file_atomically(path, bytes);
}

TrainingCheckpoint parse_checkpoint(const uint8_t* bytes, size_t size, const std::string& source,
                                    const CheckpointLimits& limits) {
    SafetensorsLimits file_limits;
    file_limits.max_file_bytes = limits.max_file_bytes;
    file_limits.max_header_bytes = limits.max_header_bytes;
    SafetensorsContent content = parse_safetensors(bytes, size, source, file_limits);
    TrainingCheckpoint checkpoint;
    for (auto& [name, tensor] : content.tensors) {
        bool placed = false;
        for (const auto& [prefix, section] : kSections) {
            const std::string_view view(prefix);
            if (name.size() > view.size() && name.compare(0, view.size(), view) == 0) {
                (checkpoint.*section).emplace(name.substr(view.size()), std::move(tensor));
                placed = true;
                break;
            }
        }
        if (!placed) refuse(source, "tensor '" + name + "' is in none of the sections model/, optimizer/, seed_state/");
    }
    const auto order = content.metadata.find(kParameterOrderKey);
    if (order == content.metadata.end()) refuse(source, std::string("no \"") + kParameterOrderKey + "\" in its metadata");
    const std::string op = "checkpoint '" + source + "'";
    const nlohmann::json names = parse_untrusted_json(order->second, op.c_str(), kParameterOrderKey, {.max_depth = 2});
    if (!names.is_array()) refuse(source, std::string(kParameterOrderKey) + " must be a JSON array of names");
    for (const nlohmann::json& name : names) {
        if (!name.is_string()) refuse(source, std::string(kParameterOrderKey) + " must hold only strings, got " + name.dump());
        checkpoint.parameter_order.push_back(name.get<std::string>());
    }
    content.metadata.erase(order);
    checkpoint.metadata = std::move(content.metadata);
    return checkpoint;
}

TrainingCheckpoint load_checkpoint(const std::string& path, const CheckpointLimits& limits) {
    const std::vector<uint8_t> bytes = read_file_bytes(path, limits.max_file_bytes, "checkpoint");
    return parse_checkpoint(bytes.data(), bytes.size(), path, limits);
}

NamedTensors restore_checkpoint(const TrainingCheckpoint& checkpoint, nn::Module& root, optim::Optimizer& optimizer,
                                MorphableModel* model) {
    if (!checkpoint.seed_state.empty() && !model)
        raise<ArtifactError>("restore_checkpoint", "the checkpoint holds seed state but no morphable model was given");
    // The snapshot to put back: seeds first (they decide which kernel parameters exist), then the
    // weights (kernel weights included), then the optimizer by parameter name.
    const TensorMap seeds_before = model ? cloned(model->seed_state()) : TensorMap{};
    const TensorMap weights_before = cloned(root.state_dict());
    const TensorMap optimizer_before = cloned(optimizer.state_dict());
    const NamedTensors order_before = named_optimizer_parameters(root, optimizer);
    try {
        if (model && !checkpoint.seed_state.empty()) model->restore_seed_state(checkpoint.seed_state);
        root.load_state_dict(checkpoint.model, /*strict=*/true);
        NamedTensors order;
        for (const std::string& name : checkpoint.parameter_order) order.emplace_back(name, Tensor());
        return apply_optimizer(order, checkpoint.optimizer, root, optimizer);
    } catch (...) {
        if (model) model->restore_seed_state(seeds_before);
        root.load_state_dict(weights_before, /*strict=*/true);
        apply_optimizer(order_before, optimizer_before, root, optimizer);
        throw;
    }
}

}  // namespace kasmina::morph
