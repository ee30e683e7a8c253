// The seed-lifecycle changes a controller makes (load, unload, alpha, ramp, fossilize), behind one
// interface: LocalSeedCommands applies them to a model in this process; dist::DistributedSeedCommands
// applies them at the same point on every rank of a data-parallel job.
#pragma once

#include <cstdint>
#include <string>

#include "layers/kasmina/wrap.h"

namespace kasmina::morph {

class SeedCommands {
public:
    virtual ~SeedCommands() = default;
    // Raises ArtifactError when the kernel is refused (the seed is then as it was).
    virtual void load_kernel(const std::string& layer, int seed, uint64_t id, const LoadOptions& options = {}) = 0;
    virtual void unload_kernel(const std::string& layer, int seed) = 0;
    virtual void set_seed_alpha(const std::string& layer, int seed, double alpha) = 0;
    virtual void ramp_alpha(const std::string& layer, int seed, double target, int64_t steps) = 0;
    virtual void fossilize(const std::string& layer, int seed) = 0;
};

class LocalSeedCommands final : public SeedCommands {
public:
    explicit LocalSeedCommands(MorphableModel& model) : model_(model) {}
    void load_kernel(const std::string& layer, int seed, uint64_t id, const LoadOptions& options = {}) override {
        model_.load_kernel(layer, seed, id, options);
    }
    void unload_kernel(const std::string& layer, int seed) override { model_.unload_kernel(layer, seed); }
    void set_seed_alpha(const std::string& layer, int seed, double alpha) override { model_.set_seed_alpha(layer, seed, alpha); }
    void ramp_alpha(const std::string& layer, int seed, double target, int64_t steps) override {
        model_.ramp_alpha(layer, seed, target, steps);
    }
    void fossilize(const std::string& layer, int seed) override { model_.fossilize(layer, seed); }

private:
    MorphableModel& model_;
};

}  // namespace kasmina::morph
