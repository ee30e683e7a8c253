#include "layers/kasmina/seed_bank.h"

#include <chrono>
#include <cmath>
#include <cstdlib>

#include "autograd/blend.h"
#include "autograd/ops.h"
#include "layers/kasmina/fused_bottlenecks.h"
#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

namespace kasmina::morph {

SeedBank::SeedBank(int num_seeds, KernelSignature signature, std::shared_ptr<KernelCache> cache)
    : num_seeds_(num_seeds), signature_(std::move(signature)), cache_(std::move(cache)), state_(num_seeds) {
    const char* fuse = std::getenv("KASMINA_FUSE_SEEDS");
    const std::string setting = fuse ? fuse : "";
    fusion_.store(setting == "1" ? Fusion::on : setting == "0" ? Fusion::off : Fusion::automatic, std::memory_order_relaxed);
    networks_.resize(num_seeds);
    cached_.resize(num_seeds);
    ramps_.resize(num_seeds);
}

void SeedBank::set_device(Device device) {
    std::lock_guard lock(mutex_);
    device_ = device;
    for (auto& network : networks_)
        if (network) network->to(device);
}

void SeedBank::set_dtype(DType dtype) {
    std::lock_guard lock(mutex_);
    dtype_ = dtype;
    for (auto& network : networks_)
        if (network) network->to(dtype);
}

void SeedBank::refresh_counters() {
    blending_count_.store(static_cast<int>(state_.blending_seeds().size()), std::memory_order_relaxed);
    bool pending = false;
    for (const auto& ramp : ramps_) pending = pending || ramp.has_value();
    ramps_pending_.store(pending, std::memory_order_relaxed);
}

void SeedBank::load_kernel(int seed, uint64_t id, const LoadOptions& options) {
    settle_checks();
    if (!cache_) raise<Error>("load_kernel", "this layer has no kernel cache (wrap() with a cache)");
    Device device;
    DType dtype;
    std::optional<SeedState> before;  // the seed as it was, for a refusal to put back
    {
        std::lock_guard lock(mutex_);
        before = state_;
        state_.transition(seed, SeedLifecycle::loading, step_);  // raises for illegal sources
        device = device_;
        dtype = dtype_;
    }
    // Read, validate and build outside the lock; the seed is LOADING, so forward ignores it.
    std::shared_ptr<const CachedKernel> cached;
    std::shared_ptr<KernelNetwork> network;
    try {
        cached = cache_->get(id, device);
        check_compatible(cached->artifact, signature_);
        network = std::make_shared<KernelNetwork>(cached->artifact, options.trainable);
        network->to(device);
        network->to(dtype);
    } catch (const std::exception& error) {
        std::lock_guard lock(mutex_);
        state_.copy_seed_from(*before, seed);
        refresh_counters();
        throw ArtifactError(make_message("load_kernel: seed ", seed, " refused kernel ", format_kernel_id(id), ": ", error.what()));
    }
    std::lock_guard lock(mutex_);
    networks_[seed] = network;
    cached_[seed] = cached;
    ramps_[seed].reset();
    state_.set_kernel_id(seed, id);
    state_.set_alpha(seed, options.alpha.value_or(cached->artifact.suggested_alpha));
    state_.transition(seed, SeedLifecycle::active, step_);
    state_.record_success(seed);
    refresh_counters();
}

void SeedBank::unload_kernel(int seed) {
    settle_checks();
    std::lock_guard lock(mutex_);
    if (state_.lifecycle(seed) == SeedLifecycle::fossilized)
        raise<Error>("unload_kernel", "seed ", seed, " is FOSSILIZED; its kernel is part of the layer now");
    state_.reset(seed, step_);
    networks_[seed].reset();
    cached_[seed].reset();
    ramps_[seed].reset();
    refresh_counters();
}

void SeedBank::revert_load(int seed, const SeedState& before) {
    settle_checks();
    std::lock_guard lock(mutex_);
    if (before.lifecycle(seed) != SeedLifecycle::dormant)
        raise<Error>("revert_load", "seed ", seed, " was ", lifecycle_name(before.lifecycle(seed)), " before the load; only a load into "
                     "a DORMANT seed can be reverted");
    state_.copy_seed_from(before, seed);
    networks_[seed].reset();
    cached_[seed].reset();
    ramps_[seed].reset();
    refresh_counters();
}

void SeedBank::set_seed_alpha(int seed, double alpha) {
    std::lock_guard lock(mutex_);
    if (state_.lifecycle(seed) == SeedLifecycle::fossilized)
        raise<Error>("set_seed_alpha", "seed ", seed, " is FOSSILIZED; its alpha is fixed");
    ramps_[seed].reset();
    state_.set_alpha(seed, alpha);
    refresh_counters();
}

void SeedBank::ramp_alpha(int seed, double target, int64_t steps) {
    std::lock_guard lock(mutex_);
    const SeedLifecycle lifecycle = state_.lifecycle(seed);
    if (lifecycle != SeedLifecycle::active)
        raise<Error>("ramp_alpha", "seed ", seed, " is ", lifecycle_name(lifecycle), "; only ACTIVE seeds ramp");
    if (steps <= 0) {
        state_.set_alpha(seed, target);
        ramps_[seed].reset();
    } else {
        ramps_[seed] = Ramp{state_.alpha(seed), std::clamp(target, 0.0, 1.0), steps, 0};
    }
    refresh_counters();
}

void SeedBank::fossilize(int seed) {
    settle_checks();
    std::lock_guard lock(mutex_);
    state_.transition(seed, SeedLifecycle::fossilized, step_);
    ramps_[seed].reset();
    NoGradGuard no_grad;
    for (auto& [name, tensor] : networks_[seed]->named_parameters()) tensor.set_requires_grad(false);
    refresh_counters();
}

void SeedBank::freeze_kernel(int seed) {
    std::lock_guard lock(mutex_);
    if (!networks_.at(seed)) raise<Error>("freeze_kernel", "seed ", seed, " has no kernel");
    for (auto& [name, tensor] : networks_[seed]->named_parameters()) tensor.set_requires_grad(false);
}

void SeedBank::reactivate(int seed) {
    settle_checks();
    std::lock_guard lock(mutex_);
    state_.transition(seed, SeedLifecycle::active, step_);
    state_.record_success(seed);
    refresh_counters();
}

void SeedBank::begin_forward(bool training) {
    if (!training) return;
    const int64_t step = step_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (step % kSettleInterval == 0) poll_checks();
    if (!ramps_pending_.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    for (int seed = 0; seed < num_seeds_; ++seed) {
        auto& ramp = ramps_[seed];
        if (!ramp) continue;
        ++ramp->done;
        const double progress = static_cast<double>(ramp->done) / static_cast<double>(ramp->steps);
        state_.set_alpha(seed, ramp->start + (ramp->target - ramp->start) * std::min(progress, 1.0));
        if (ramp->done >= ramp->steps) ramp.reset();
    }
    refresh_counters();
}

int64_t SeedBank::step() const { return step_.load(std::memory_order_relaxed); }

std::vector<BlendingSeed> SeedBank::snapshot() const {
    std::lock_guard lock(mutex_);
    std::vector<BlendingSeed> seeds;
    for (int seed : state_.blending_seeds())
        seeds.push_back({seed, networks_[seed], state_.alpha(seed), cached_[seed]->artifact.signature.target_heads});
    return seeds;
}

// CPU outputs are checked at once (the check is one pass over memory already in cache). CUDA outputs
// are not read back: a device-side select replaces a non-finite output by `fallback` (the layer's own
// path), and the finiteness flag is queued and settled into the seed state later (settle_checks()).
Tensor SeedBank::run_kernel(const BlendingSeed& seed, const Shape& expected_shape, const Tensor& fallback,
                            const std::function<Tensor(KernelNetwork&)>& run) {
    const Checked checked = run_checked({seed}, expected_shape, [&] { return run(*seed.network); });
    return checked.guard.defined() ? where(checked.guard, checked.output, fallback) : checked.output;
}

SeedBank::Checked SeedBank::run_checked(const std::vector<BlendingSeed>& seeds, const Shape& expected_shape,
                                        const std::function<Tensor()>& compute) {
    const auto start = std::chrono::steady_clock::now();
    Tensor output, finite_flag;
    bool ok = false;
    try {
        output = compute();
        if (output.shape() == expected_shape) {
            NoGradGuard no_grad;
            if (output.device().is_cpu()) {
                ok = kernels::finite_flag(output.detach()).item<bool>();  // one read pass (sum(k * 0) was a fifth of the forward)
            } else {
                finite_flag = kernels::finite_flag(output.detach());  // stays on the device
                ok = true;
            }
        }
    } catch (const std::exception&) {
        ok = false;
    }
    const bool group = seeds.size() > 1;
    if (!ok && group) return {};  // the members run one by one: that finds and records the failing seed
    const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    PendingCheck check;
    std::lock_guard lock(mutex_);
    const Checked result = ok ? Checked{output, finite_flag} : Checked{};
    for (const BlendingSeed& seed : seeds)
        if (networks_[seed.seed] != seed.network) return result;  // unloaded meanwhile: no bookkeeping
    for (const BlendingSeed& seed : seeds) {
        state_.record_latency(seed.seed, static_cast<uint64_t>(elapsed.count()));
        check.seeds.push_back(seed.seed);
        check.networks.push_back(seed.network);
    }
    if (ok && finite_flag.defined()) {
        check.finite = finite_flag;
        pending_checks_.push_back(std::move(check));
        return result;
    }
    if (ok) {
        for (const BlendingSeed& seed : seeds) state_.record_success(seed.seed);
        return result;
    }
    if (state_.record_failure(seeds[0].seed, step_)) refresh_counters();
    return result;
}

void SeedBank::record_checks(const std::vector<PendingCheck>& checks, const std::vector<double>& finite) {
    for (size_t i = 0; i < checks.size(); ++i) {
        const PendingCheck& check = checks[i];
        bool current = true;  // not unloaded or replaced since
        for (size_t j = 0; j < check.seeds.size(); ++j) current = current && networks_[check.seeds[j]] == check.networks[j];
        if (!current) continue;
        if (finite[i] != 0.0) {
            for (int seed : check.seeds) state_.record_success(seed);
        } else if (check.seeds.size() == 1) {
            if (state_.record_failure(check.seeds[0], step_)) refresh_counters();
        } else {
            suspended_group_ = check.networks;  // its members run one by one and find the failing seed
            suspended_at_step_ = step_;
        }
    }
}

Tensor SeedBank::stacked_flags(const std::vector<PendingCheck>& checks) {
    std::vector<Tensor> flags;
    for (const auto& check : checks) flags.push_back(check.finite.reshape({1}));
    return cat(flags, 0);
}

void SeedBank::poll_checks() {
    std::lock_guard readback_lock(readback_mutex_);
    if (readback_.pending()) {
        if (!readback_.ready()) return;  // still on its way: look again at the next interval
        const std::vector<double> finite = readback_.take();
        std::lock_guard lock(mutex_);
        record_checks(in_flight_, finite);
        in_flight_.clear();
    }
    {
        std::lock_guard lock(mutex_);
        in_flight_.swap(pending_checks_);
    }
    if (in_flight_.empty()) return;
    NoGradGuard no_grad;
    readback_.start(stacked_flags(in_flight_));
}

void SeedBank::settle_checks() {
    std::lock_guard readback_lock(readback_mutex_);
    std::vector<PendingCheck> checks;
    std::vector<double> finite;
    if (readback_.pending()) finite = readback_.take();  // the one sync
    checks.swap(in_flight_);
    std::vector<PendingCheck> pending;
    {
        std::lock_guard lock(mutex_);
        pending.swap(pending_checks_);
    }
    if (!pending.empty()) {
        NoGradGuard no_grad;
        readback_.start(stacked_flags(pending));
        for (double flag : readback_.take()) finite.push_back(flag);
        checks.insert(checks.end(), pending.begin(), pending.end());
    }
    if (checks.empty()) return;
    std::lock_guard lock(mutex_);
    record_checks(checks, finite);
}

std::vector<std::vector<size_t>> SeedBank::fusion_groups(const std::vector<BlendingSeed>& seeds, Device device) const {
    std::vector<std::vector<size_t>> groups;
    const Fusion setting = fusion();
    if (setting == Fusion::off || (setting == Fusion::automatic && !device.is_cuda())) return groups;
    if (signature_.kind != KernelKind::linear && signature_.kind != KernelKind::conv2d) return groups;
    std::vector<std::optional<BottleneckForm>> forms;
    for (const BlendingSeed& seed : seeds) forms.push_back(bottleneck_form(*seed.network));
    std::vector<bool> grouped(seeds.size(), false);
    for (size_t i = 0; i < seeds.size(); ++i) {
        if (!forms[i] || grouped[i]) continue;
        std::vector<size_t> group{i};
        for (size_t j = i + 1; j < seeds.size(); ++j)
            if (!grouped[j] && forms[j] == forms[i]) group.push_back(j);
        double total = 0.0;
        std::vector<std::shared_ptr<KernelNetwork>> networks;
        for (size_t member : group) {
            total += seeds[member].alpha;
            networks.push_back(seeds[member].network);
        }
        if (group.size() < 2 || !(total > 0.0)) continue;
        {
            std::lock_guard lock(mutex_);
            if (networks == suspended_group_ && step_ - suspended_at_step_ < kFusionRetrySteps) continue;
        }
        for (size_t member : group) grouped[member] = true;
        groups.push_back(std::move(group));
    }
    return groups;
}

// A fused group enters the blend as one output, sum_i (a_i / a_G) k_i, with alpha a_G = sum_i a_i:
// its coefficient A a_G / S times that output is sum_i (A a_i / S) k_i, the per-seed blend's terms.
Tensor SeedBank::blend(const Tensor& d, const Tensor& kernel_input) {
    const std::vector<BlendingSeed> seeds = snapshot();
    std::vector<Tensor> outputs, guards;  // a guard is the device-side check of its output (undefined on the CPU)
    std::vector<double> alphas;
    std::vector<bool> done(seeds.size(), false);
    for (const std::vector<size_t>& group : fusion_groups(seeds, kernel_input.device())) {
        std::vector<BlendingSeed> members;
        std::vector<const KernelNetwork*> networks;
        double total = 0.0;
        for (size_t member : group) {
            members.push_back(seeds[member]);
            networks.push_back(seeds[member].network.get());
            total += seeds[member].alpha;
        }
        std::vector<double> shares;
        for (const BlendingSeed& member : members) shares.push_back(member.alpha / total);
        const Checked k = run_checked(members, d.shape(), [&] { return run_fused_bottlenecks(networks, shares, kernel_input, &fused_weights_); });
        if (!k.output.defined()) continue;
        fused_group_runs_.fetch_add(1, std::memory_order_relaxed);
        outputs.push_back(k.output);
        guards.push_back(k.guard);
        alphas.push_back(total);
        for (size_t member : group) done[member] = true;
    }
    for (size_t i = 0; i < seeds.size(); ++i) {
        if (done[i]) continue;
        const Checked k = run_checked({seeds[i]}, d.shape(), [&] { return seeds[i].network->forward(kernel_input); });
        if (!k.output.defined()) continue;  // this step falls back to the layer's own path for that seed
        outputs.push_back(k.output);
        guards.push_back(k.guard);
        alphas.push_back(seeds[i].alpha);
    }
    if (outputs.empty()) return d;
    // The guards select d for an output found non-finite on the device, inside the blend's one pass.
    return blend_seeds(d, outputs, Tensor::from_vector<double>(alphas, {static_cast<int64_t>(alphas.size())}), guards);
}

std::vector<SeedReport> SeedBank::reports() const {
    std::lock_guard lock(mutex_);
    std::vector<SeedReport> reports;
    for (int seed = 0; seed < num_seeds_; ++seed)
        reports.push_back({seed, state_.lifecycle(seed), state_.kernel_id(seed), state_.alpha(seed), state_.health(seed),
                           state_.last_update_step(seed), state_.latency_us(seed), state_.consecutive_errors(seed),
                           state_.fallback(seed), cached_[seed] ? cached_[seed]->artifact.parameter_count : 0});
    return reports;
}

std::vector<std::pair<std::string, Tensor>> SeedBank::kernel_parameters() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::string, Tensor>> parameters;
    for (int seed = 0; seed < num_seeds_; ++seed) {
        if (!networks_[seed]) continue;
        for (auto& [name, tensor] : networks_[seed]->named_parameters())
            parameters.emplace_back("seeds." + std::to_string(seed) + "." + name, tensor);
    }
    return parameters;
}

SeedState SeedBank::state_copy() const {
    std::lock_guard lock(mutex_);
    return state_;
}

TensorMap SeedBank::state_tensors() const {
    std::lock_guard lock(mutex_);
    TensorMap tensors = state_.to_tensors();
    tensors.emplace("step", Tensor::scalar(static_cast<double>(step_.load()), {.dtype = DType::i64}));
    // Pending alpha ramps (ramp_steps 0: none), so a resumed run ramps on exactly as it would have.
    std::vector<double> start(num_seeds_, 0.0), target(num_seeds_, 0.0);
    std::vector<int64_t> steps(num_seeds_, 0), done(num_seeds_, 0);
    for (int seed = 0; seed < num_seeds_; ++seed)
        if (const auto& ramp = ramps_[seed]) {
            start[seed] = ramp->start;
            target[seed] = ramp->target;
            steps[seed] = ramp->steps;
            done[seed] = ramp->done;
        }
    const Shape shape{num_seeds_};
    tensors.emplace("ramp_start", Tensor::from_vector(start, shape));
    tensors.emplace("ramp_target", Tensor::from_vector(target, shape));
    tensors.emplace("ramp_steps", Tensor::from_vector(steps, shape));
    tensors.emplace("ramp_done", Tensor::from_vector(done, shape));
    return tensors;
}

void SeedBank::restore(const TensorMap& tensors) {
    SeedState restored(num_seeds_);
    restored.load_tensors(tensors);  // validates; raises before anything changes
    const auto step_entry = tensors.find("step");
    // Ramps are optional (checkpoints written before they were saved have none).
    std::vector<std::optional<Ramp>> ramps(num_seeds_);
    if (tensors.count("ramp_steps")) {
        const auto field = [&](const char* name) {
            const auto found = tensors.find(name);
            if (found == tensors.end() || found->second.shape() != Shape{num_seeds_})
                raise<ArtifactError>("restore", "seed state field '", name, "' is missing or not of shape [", num_seeds_, "]");
            return found->second.to_vector<double>();
        };
        const std::vector<double> start = field("ramp_start"), target = field("ramp_target"), steps = field("ramp_steps"),
                                  done = field("ramp_done");
        for (int seed = 0; seed < num_seeds_; ++seed)
            if (steps[seed] > 0)
                ramps[seed] = Ramp{start[seed], target[seed], static_cast<int64_t>(steps[seed]), static_cast<int64_t>(done[seed])};
    }
    std::vector<std::shared_ptr<const CachedKernel>> cached(num_seeds_);
    std::vector<std::shared_ptr<KernelNetwork>> networks(num_seeds_);
    for (int seed = 0; seed < num_seeds_; ++seed) {
        const SeedLifecycle lifecycle = restored.lifecycle(seed);
        if (lifecycle == SeedLifecycle::dormant || lifecycle == SeedLifecycle::loading) continue;
        if (!cache_) raise<Error>("restore", "seed ", seed, " holds a kernel but the layer has no cache");
        cached[seed] = cache_->get(restored.kernel_id(seed), device_);
        check_compatible(cached[seed]->artifact, signature_);
        networks[seed] = std::make_shared<KernelNetwork>(cached[seed]->artifact, lifecycle != SeedLifecycle::fossilized);
        networks[seed]->to(device_);
        networks[seed]->to(dtype_);
    }
    std::lock_guard lock(mutex_);
    for (int seed = 0; seed < num_seeds_; ++seed)
        if (restored.lifecycle(seed) == SeedLifecycle::loading) restored.reset(seed, restored.last_update_step(seed));
    state_ = restored;
    networks_ = networks;
    cached_ = cached;
    ramps_ = ramps;
    if (step_entry != tensors.end()) step_ = static_cast<int64_t>(step_entry->second.item());
    refresh_counters();
}

}  // namespace kasmina::morph
