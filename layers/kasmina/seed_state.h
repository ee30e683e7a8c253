// The state of one Kasmina layer's seed slots, as a structure of arrays with the host mirror that
// control decisions read (so forward never waits on a device) and, on request, a device copy for
// kernels. Enforces the lifecycle's legal transitions and the failure rule (3 consecutive
// failures -> fallback flag + ERROR_RECOVERY; a success clears both).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace kasmina::morph {

enum class SeedLifecycle : uint8_t { dormant = 0, loading = 1, active = 2, error_recovery = 3, fossilized = 4 };
const char* lifecycle_name(SeedLifecycle lifecycle);  // "DORMANT", "LOADING", ...

class SeedState {
public:
    static constexpr uint32_t kFailuresBeforeFallback = 3;
    static constexpr double kHealthMomentum = 0.1;

    explicit SeedState(int num_seeds);
    int size() const { return static_cast<int>(lifecycle_.size()); }

    SeedLifecycle lifecycle(int seed) const { return static_cast<SeedLifecycle>(lifecycle_.at(check(seed))); }
    uint64_t kernel_id(int seed) const { return kernel_id_.at(check(seed)); }
    float alpha(int seed) const { return alpha_.at(check(seed)); }
    float health(int seed) const { return health_.at(check(seed)); }
    int64_t last_update_step(int seed) const { return last_update_step_.at(check(seed)); }
    uint32_t latency_us(int seed) const { return latency_us_.at(check(seed)); }
    uint32_t consecutive_errors(int seed) const { return consecutive_errors_.at(check(seed)); }
    bool fallback(int seed) const { return fallback_.at(check(seed)) != 0; }

    static bool is_legal(SeedLifecycle from, SeedLifecycle to);
    // Moves a seed along a legal edge (raises Error naming both states otherwise).
    void transition(int seed, SeedLifecycle to, int64_t step);
    void set_kernel_id(int seed, uint64_t id) { kernel_id_.at(check(seed)) = id; }
    void set_alpha(int seed, double alpha);  // clamped to [0, 1]
    // Exponential moving average with factor 0.1; the first sample is taken as is.
    void record_health(int seed, double sample);
    void record_latency(int seed, uint64_t microseconds);  // saturates at UINT32_MAX
    // Counts a failure; returns true when it moved the seed to ERROR_RECOVERY (fallback set).
    bool record_failure(int seed, int64_t step);
    void record_success(int seed);
    // Returns a seed to DORMANT with alpha 0, no kernel, cleared errors (unload).
    void reset(int seed, int64_t step);
    // Sets every field of `seed` to its value in `other` (a refused load puts the seed back as it was).
    void copy_seed_from(const SeedState& other, int seed);

    // Seeds whose kernels take part in the blend (ACTIVE or FOSSILIZED, alpha > 0 not required).
    std::vector<int> blending_seeds() const;
    int count(SeedLifecycle lifecycle) const;

    // All fields as tensors (for checkpoints and for the device copy kernels read).
    TensorMap to_tensors() const;
    void load_tensors(const TensorMap& tensors);  // validates every field first; unchanged on error

private:
    int check(int seed) const;

    std::vector<uint8_t> lifecycle_;
    std::vector<uint64_t> kernel_id_;
    std::vector<float> alpha_;
    std::vector<float> health_;
    std::vector<uint8_t> health_seen_;
    std::vector<int64_t> last_update_step_;
    std::vector<uint32_t> latency_us_;
    std::vector<uint32_t> consecutive_errors_;
    std::vector<uint8_t> fallback_;
};

}  // namespace kasmina::morph
