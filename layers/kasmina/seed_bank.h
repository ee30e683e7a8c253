// The seed slots of one Kasmina layer: seed state, the loaded kernel networks, alpha ramps, and the
// run-and-blend step every variant shares. Thread-safe: a controller thread may load, unload and
// ramp while a training thread runs forward; forward works on a snapshot taken under the lock.
// With no seed blending and no ramp pending, the layer's forward costs one relaxed atomic load.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "layers/kasmina/artifact.h"
#include "layers/kasmina/fused_bottlenecks.h"
#include "layers/kasmina/kernel_cache.h"
#include "layers/kasmina/kernel_network.h"
#include "layers/kasmina/seed_state.h"
#include "runtime/readback.h"

namespace kasmina::morph {

struct LoadOptions {
    std::optional<double> alpha;  // default: the artifact's suggested alpha
    bool trainable = true;        // kernel weights become trainable parameters of the layer
};

// One seed taking part in this forward.
struct BlendingSeed {
    int seed = 0;
    std::shared_ptr<KernelNetwork> network;
    double alpha = 0.0;
    std::vector<int64_t> target_heads;  // attention kernels only
};

struct SeedReport {
    int seed = 0;
    SeedLifecycle lifecycle = SeedLifecycle::dormant;
    uint64_t kernel_id = 0;
    double alpha = 0.0;
    double health = 0.0;
    int64_t last_update_step = 0;
    uint32_t latency_us = 0;
    uint32_t consecutive_errors = 0;
    bool fallback = false;
    int64_t parameter_count = 0;
};

class SeedBank {
public:
    SeedBank(int num_seeds, KernelSignature signature, std::shared_ptr<KernelCache> cache);

    int num_seeds() const { return num_seeds_; }
    const KernelSignature& signature() const { return signature_; }
    const std::shared_ptr<KernelCache>& cache() const { return cache_; }
    // Where loaded kernels run: existing kernels move, later loads follow (Module::to's hooks call these).
    void set_device(Device device);
    void set_dtype(DType dtype);

    // DORMANT (or ERROR_RECOVERY) -> LOADING -> ACTIVE with the artifact's suggested alpha. A refused
    // artifact (unreadable, invalid, incompatible) leaves the seed DORMANT and raises ArtifactError
    // with the reason; nothing else changes.
    void load_kernel(int seed, uint64_t id, const LoadOptions& options = {});
    void unload_kernel(int seed);                          // -> DORMANT, alpha 0
    // Undoes a successful load_kernel into a seed that was DORMANT: every field of `seed` as in `before`
    // (a state_copy() taken just before the load). For a load another rank refused.
    void revert_load(int seed, const SeedState& before);
    void set_seed_alpha(int seed, double alpha);           // clamped to [0, 1]
    void ramp_alpha(int seed, double target, int64_t steps);  // advanced by one each training step
    void fossilize(int seed);                              // ACTIVE -> FOSSILIZED: frozen weights, fixed alpha
    void freeze_kernel(int seed);                          // stop training a kernel's weights
    void reactivate(int seed);                             // ERROR_RECOVERY -> ACTIVE (clears errors)

    // Cheap check for the dormant fast path.
    bool idle() const { return blending_count_.load(std::memory_order_relaxed) == 0 && !ramps_pending_.load(std::memory_order_relaxed); }
    // Called once per forward: in training, advances the step counter and pending ramps.
    void begin_forward(bool training);
    int64_t step() const;
    std::vector<BlendingSeed> snapshot() const;
    // Runs one seed's kernel: returns its output, or an undefined tensor after recording a failure
    // (an exception, a non-finite value, or a shape other than `expected_shape`). On a GPU nothing is
    // read back: a non-finite output is replaced on the device by `fallback` (the original path) and
    // the failure is recorded when the queued checks settle.
    Tensor run_kernel(const BlendingSeed& seed, const Shape& expected_shape, const Tensor& fallback,
                      const std::function<Tensor(KernelNetwork&)>& run);
    // Reads back every queued device-side finiteness check and records successes and failures (one
    // sync). Runs before every control operation, so they act on settled state.
    void settle_checks();
    // The training loop's non-blocking counterpart, every kSettleInterval steps: records the checks whose
    // copy to the host has landed, and queues the copy of those pending since (into pinned memory,
    // behind the device's queue): the forward never waits for the device.
    void poll_checks();
    static constexpr int64_t kSettleInterval = 32;
    // The dense variants' whole step: run every blending seed on `kernel_input` and blend into d.
    // Seeds whose kernels are bottlenecks of one form run as one fused group (fused_bottlenecks.h)
    // when fusion is on; a group whose output is not finite hands its seeds back to the per-seed path,
    // which finds and records the failing one (on a GPU: from the next forward, until the group changes
    // or kFusionRetrySteps training steps have passed).
    Tensor blend(const Tensor& d, const Tensor& kernel_input);
    static constexpr int64_t kFusionRetrySteps = 1024;
    // automatic (the default): fused on a GPU, per seed on the CPU, where the fused projections measured
    // no faster (bench/NOTES.md). KASMINA_FUSE_SEEDS=1 or 0 in the environment sets on or off for new layers.
    enum class Fusion : uint8_t { automatic, on, off };
    void set_fusion(Fusion fusion) { fusion_.store(fusion, std::memory_order_relaxed); }
    Fusion fusion() const { return fusion_.load(std::memory_order_relaxed); }
    int64_t fused_group_runs() const { return fused_group_runs_.load(std::memory_order_relaxed); }  // fused outputs blended

    std::vector<SeedReport> reports() const;
    std::vector<std::pair<std::string, Tensor>> kernel_parameters() const;  // "seeds.<i>.<name>"
    SeedState state_copy() const;
    // Checkpoint support: seed state tensors; restore reloads each kernel by id from the cache.
    TensorMap state_tensors() const;
    void restore(const TensorMap& state_tensors);

private:
    struct Ramp {
        double start = 0.0, target = 0.0;
        int64_t steps = 0, done = 0;
    };
    void refresh_counters();  // under mutex_

    int num_seeds_;
    KernelSignature signature_;
    std::shared_ptr<KernelCache> cache_;
    Device device_;
    DType dtype_ = DType::f32;
    mutable std::mutex mutex_;
    SeedState state_;
    std::vector<std::shared_ptr<KernelNetwork>> networks_;
    std::vector<std::shared_ptr<const CachedKernel>> cached_;  // keeps cache entries alive while in use
    std::vector<std::optional<Ramp>> ramps_;
    struct PendingCheck {
        std::vector<int> seeds;                               // one seed, or the members of a fused group
        std::vector<std::shared_ptr<KernelNetwork>> networks;  // the kernels that produced the output
        Tensor finite;                                        // 0-d bool on the device
    };
    // Runs `compute` for `seeds` and checks its output as run_kernel does, but leaves a device-side
    // check as `guard` (a 0-d bool: false means fall back) for the blend to apply, instead of a select.
    // A failure of one seed is recorded; a fused group's is not (the output is undefined and its members
    // run one by one).
    struct Checked {
        Tensor output, guard;
    };
    Checked run_checked(const std::vector<BlendingSeed>& seeds, const Shape& expected_shape,
                        const std::function<Tensor()>& compute);
    // The fusable groups among `seeds` (indices into it, two or more each), by bottleneck form, for a
    // forward on `device`.
    std::vector<std::vector<size_t>> fusion_groups(const std::vector<BlendingSeed>& seeds, Device device) const;
    void record_checks(const std::vector<PendingCheck>& checks, const std::vector<double>& finite);  // under mutex_
    static Tensor stacked_flags(const std::vector<PendingCheck>& checks);  // one tensor: a single copy to the host
    std::vector<PendingCheck> pending_checks_;
    std::mutex readback_mutex_;             // guards the two below; taken before mutex_, never inside it
    std::vector<PendingCheck> in_flight_;  // the checks whose flags readback_ is copying
    Readback readback_;
    std::atomic<int> blending_count_{0};
    std::atomic<bool> ramps_pending_{false};
    std::atomic<int64_t> step_{0};  // training forwards seen
    std::atomic<Fusion> fusion_;
    std::atomic<int64_t> fused_group_runs_{0};
    FusedWeightsCache fused_weights_;  // the fused groups' weights between inference forwards
    // A fused group whose output was not finite, and when: it runs unfused while it is unchanged.
    std::vector<std::shared_ptr<KernelNetwork>> suspended_group_;  // under mutex_
    int64_t suspended_at_step_ = 0;                                 // under mutex_
};

}  // namespace kasmina::morph
