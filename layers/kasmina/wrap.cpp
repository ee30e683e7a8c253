#include "layers/kasmina/wrap.h"

#include <algorithm>
#include <functional>

namespace kasmina::morph {
namespace {

// The Kasmina variant of `module`, or null when its type is not supported.
std::shared_ptr<nn::Module> make_variant(const nn::Module& module, const KasminaOptions& options) {
    if (auto* linear = dynamic_cast<const nn::Linear*>(&module)) return std::make_shared<KasminaLayer>(*linear, options);
    if (auto* conv = dynamic_cast<const nn::Conv2d*>(&module)) return std::make_shared<KasminaConv2dLayer>(*conv, options);
    if (auto* attention = dynamic_cast<const nn::MultiheadAttention*>(&module))
        return std::make_shared<KasminaAttentionLayer>(*attention, options);
    if (auto* norm = dynamic_cast<const nn::LayerNorm*>(&module)) return std::make_shared<KasminaLayerNormLayer>(*norm, options);
    if (auto* norm1d = dynamic_cast<const nn::BatchNorm1d*>(&module)) return std::make_shared<Kasmina1dBatchNormLayer>(*norm1d, options);
    if (auto* norm2d = dynamic_cast<const nn::BatchNorm2d*>(&module)) return std::make_shared<Kasmina2dBatchNormLayer>(*norm2d, options);
    return nullptr;
}

KasminaLayerBase* as_kasmina(const std::shared_ptr<nn::Module>& module) { return dynamic_cast<KasminaLayerBase*>(module.get()); }

// Walks children of `parent`, replacing targets in place; records layers and unsupported leaves.
void wrap_children(nn::Module& parent, const std::string& prefix, const WrapOptions& options, const KasminaOptions& layer_options,
                   std::map<std::string, KasminaLayerBase*>& layers, std::vector<std::string>& order,
                   std::vector<std::string>& unsupported) {
    for (const auto& [name, child] : parent.named_children()) {
        const std::string path = prefix.empty() ? name : prefix + "." + name;
        if (KasminaLayerBase* existing = as_kasmina(child)) {
            layers[path] = existing;
            order.push_back(path);
            continue;
        }
        if (options.targets.count(child->type_name())) {
            if (std::shared_ptr<nn::Module> variant = make_variant(*child, layer_options)) {
                parent.replace_child(name, variant);
                layers[path] = as_kasmina(variant);
                order.push_back(path);
                continue;
            }
        }
        if (child->named_children().empty()) unsupported.push_back(path + " (" + child->type_name() + ")");
        else wrap_children(*child, path, options, layer_options, layers, order, unsupported);
    }
}

}  // namespace

MorphableModel::MorphableModel(std::shared_ptr<nn::Module> root, std::map<std::string, KasminaLayerBase*> layers,
                               std::vector<std::string> unsupported, std::shared_ptr<KernelCache> cache)
    : root_(std::move(root)), layers_(std::move(layers)), unsupported_(std::move(unsupported)), cache_(std::move(cache)) {
    for (const auto& [name, module] : root_->named_modules())
        if (layers_.count(name)) order_.push_back(name);
    if (layers_.count("")) order_.insert(order_.begin(), "");
}

std::vector<std::string> MorphableModel::kasmina_layers() const { return order_; }

KasminaLayerBase& MorphableModel::layer(const std::string& name) const {
    const auto found = layers_.find(name);
    if (found == layers_.end()) {
        std::string known;
        for (const auto& entry : order_) known += (known.empty() ? "" : ", ") + entry;
        raise<Error>("MorphableModel", "no Kasmina layer named '", name, "' (layers: ", known, ")");
    }
    return *found->second;
}

void MorphableModel::load_kernel(const std::string& name, int seed, uint64_t id, const LoadOptions& options) {
    layer(name).load_kernel(seed, id, options);
}
void MorphableModel::unload_kernel(const std::string& name, int seed) { layer(name).unload_kernel(seed); }
void MorphableModel::set_seed_alpha(const std::string& name, int seed, double alpha) { layer(name).set_seed_alpha(seed, alpha); }
void MorphableModel::ramp_alpha(const std::string& name, int seed, double target, int64_t steps) {
    layer(name).ramp_alpha(seed, target, steps);
}
void MorphableModel::fossilize(const std::string& name, int seed) { layer(name).fossilize(seed); }

ModelStats MorphableModel::model_stats() const {
    ModelStats stats;
    for (const std::string& name : order_) {
        const std::vector<SeedReport> reports = layers_.at(name)->layer_stats();
        ++stats.layers;
        for (const SeedReport& report : reports) {
            ++stats.seeds;
            ++stats.seeds_by_lifecycle[report.lifecycle];
            stats.kernel_parameters += report.parameter_count;
        }
        stats.per_layer[name] = reports;
    }
    if (cache_) stats.cache = cache_->stats();
    return stats;
}

TensorMap MorphableModel::seed_state() const {
    TensorMap state;
    for (const std::string& name : order_)
        for (auto& [field, tensor] : layers_.at(name)->seeds().state_tensors()) state.emplace(name + "/" + field, tensor);
    return state;
}

void MorphableModel::restore_seed_state(const TensorMap& state) {
    for (const std::string& name : order_) {
        TensorMap fields;
        const std::string prefix = name + "/";
        for (const auto& [key, tensor] : state)
            if (key.rfind(prefix, 0) == 0) fields.emplace(key.substr(prefix.size()), tensor);
        if (fields.empty()) raise<ArtifactError>("restore_seed_state", "no seed state for layer '", name, "'");
        layers_.at(name)->seeds().restore(fields);
    }
}

std::shared_ptr<nn::Module> MorphableModel::unwrap() {
    std::function<void(nn::Module&, const std::string&)> visit = [&](nn::Module& parent, const std::string& prefix) {
        for (const auto& [name, child] : parent.named_children()) {
            const std::string path = prefix.empty() ? name : prefix + "." + name;
            if (KasminaLayerBase* kasmina = as_kasmina(child)) {
                bool keeps_fossils = false;
                for (const SeedReport& report : kasmina->layer_stats()) {
                    if (report.lifecycle == SeedLifecycle::fossilized) keeps_fossils = true;
                    else if (report.lifecycle != SeedLifecycle::dormant) kasmina->unload_kernel(report.seed);
                }
                if (!keeps_fossils) {
                    parent.replace_child(name, kasmina->make_plain());
                    layers_.erase(path);
                }
                continue;
            }
            visit(*child, path);
        }
    };
    visit(*root_, "");
    order_.erase(std::remove_if(order_.begin(), order_.end(), [&](const std::string& name) { return !layers_.count(name); }),
                 order_.end());
    return root_;
}

MorphableModel wrap(std::shared_ptr<nn::Module> model, const WrapOptions& options) {
    if (!model) raise<Error>("wrap", "model is null");
    // Building variants draws initial weights that are then overwritten: draw them from a scratch generator,
    // so the shared stream is neither consumed nor rewound (another thread may be drawing from it).
    Generator scratch;
    const ScopedDefaultGenerator scratch_stream(scratch);
    const KasminaOptions layer_options{options.num_seeds, options.cache};
    std::map<std::string, KasminaLayerBase*> layers;
    std::vector<std::string> order, unsupported;
    std::shared_ptr<nn::Module> root = model;
    if (!as_kasmina(model) && options.targets.count(model->type_name())) {
        if (std::shared_ptr<nn::Module> variant = make_variant(*model, layer_options)) {
            root = variant;
            layers[""] = as_kasmina(variant);
        }
    } else if (KasminaLayerBase* existing = as_kasmina(model)) {
        layers[""] = existing;
    }
    if (layers.empty()) wrap_children(*root, "", options, layer_options, layers, order, unsupported);
    MorphableModel morphable(root, std::move(layers), std::move(unsupported), options.cache);
    if (options.telemetry)
        for (const std::string& name : morphable.kasmina_layers())
            morphable.layer(name).set_telemetry(options.telemetry, name.empty() ? "model" : name, options.telemetry_interval);
    return morphable;
}

}  // namespace kasmina::morph
