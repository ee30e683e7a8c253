// wrap(): turns a model into a morphable one by replacing each supported standard layer (Linear,
// Conv2d, MultiheadAttention, LayerNorm, BatchNorm1d, BatchNorm2d; the target set is an option) with
// its Kasmina variant, weights and buffers copied; unsupported layers are left alone and reported.
// The returned MorphableModel holds the morphogenetic controls addressed by dotted layer name.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "layers/kasmina/kasmina_layers.h"

namespace kasmina::morph {

struct WrapOptions {
    std::set<std::string> targets{"Linear", "Conv2d", "MultiheadAttention", "LayerNorm", "BatchNorm1d", "BatchNorm2d"};
    int num_seeds = 4;
    std::shared_ptr<KernelCache> cache;  // shared by every layer; required to load kernels
    std::shared_ptr<TelemetrySink> telemetry;
    int64_t telemetry_interval = 1;
};

struct ModelStats {
    int layers = 0;
    int seeds = 0;
    std::map<SeedLifecycle, int> seeds_by_lifecycle;
    int64_t kernel_parameters = 0;
    CacheStats cache;
    std::map<std::string, std::vector<SeedReport>> per_layer;
};

class MorphableModel {
public:
    MorphableModel(std::shared_ptr<nn::Module> root, std::map<std::string, KasminaLayerBase*> layers,
                   std::vector<std::string> unsupported, std::shared_ptr<KernelCache> cache);

    const std::shared_ptr<nn::Module>& module() const { return root_; }
    Tensor forward(const Tensor& input) { return root_->forward(input); }
    std::vector<std::string> kasmina_layers() const;  // dotted names, in model order
    KasminaLayerBase& layer(const std::string& name) const;  // raises Error naming the known layers
    // Leaf modules left as they were ("name (Type)"), for the caller to review.
    const std::vector<std::string>& unsupported() const { return unsupported_; }
    const std::shared_ptr<KernelCache>& cache() const { return cache_; }

    void load_kernel(const std::string& layer, int seed, uint64_t id, const LoadOptions& options = {});
    void unload_kernel(const std::string& layer, int seed);
    void set_seed_alpha(const std::string& layer, int seed, double alpha);
    void ramp_alpha(const std::string& layer, int seed, double target, int64_t steps);
    void fossilize(const std::string& layer, int seed);
    ModelStats model_stats() const;

    // Checkpoint support: every layer's seed state as "<layer>.<field>" tensors, and its inverse.
    TensorMap seed_state() const;
    void restore_seed_state(const TensorMap& state);

    // Replaces Kasmina layers without fossilized seeds by plain standard layers (same weights);
    // layers with fossilized seeds keep them (their other seeds are unloaded). Returns the root.
    std::shared_ptr<nn::Module> unwrap();

private:
    std::shared_ptr<nn::Module> root_;
    std::map<std::string, KasminaLayerBase*> layers_;
    std::vector<std::string> order_;
    std::vector<std::string> unsupported_;
    std::shared_ptr<KernelCache> cache_;
};

MorphableModel wrap(std::shared_ptr<nn::Module> model, const WrapOptions& options = {});

}  // namespace kasmina::morph
