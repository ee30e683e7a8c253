#include "layers/kasmina/seed_state.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kasmina::morph {

const char* lifecycle_name(SeedLifecycle lifecycle) {
    switch (lifecycle) {
        case SeedLifecycle::dormant: return "DORMANT";
        case SeedLifecycle::loading: return "LOADING";
        case SeedLifecycle::active: return "ACTIVE";
        case SeedLifecycle::error_recovery: return "ERROR_RECOVERY";
        case SeedLifecycle::fossilized: return "FOSSILIZED";
    }
    return "UNKNOWN";
}

SeedState::SeedState(int num_seeds) {
    if (num_seeds <= 0 || num_seeds > 64) raise<Error>("SeedState", "num_seeds must be in [1, 64], got ", num_seeds);
    lifecycle_.assign(num_seeds, static_cast<uint8_t>(SeedLifecycle::dormant));
    kernel_id_.assign(num_seeds, 0);
    alpha_.assign(num_seeds, 0.f);
    health_.assign(num_seeds, 0.f);
    health_seen_.assign(num_seeds, 0);
    last_update_step_.assign(num_seeds, 0);
    latency_us_.assign(num_seeds, 0);
    consecutive_errors_.assign(num_seeds, 0);
    fallback_.assign(num_seeds, 0);
}

int SeedState::check(int seed) const {
    if (seed < 0 || seed >= static_cast<int>(lifecycle_.size()))
        raise<Error>("SeedState", "seed index ", seed, " out of range [0, ", lifecycle_.size(), ")");
    return seed;
}

bool SeedState::is_legal(SeedLifecycle from, SeedLifecycle to) {
    using L = SeedLifecycle;
    switch (from) {
        case L::dormant: return to == L::loading;
        case L::loading: return to == L::active || to == L::dormant;
        case L::active: return to == L::dormant || to == L::error_recovery || to == L::fossilized;
        case L::error_recovery: return to == L::active || to == L::dormant || to == L::loading;
        case L::fossilized: return false;
    }
    return false;
}

void SeedState::transition(int seed, SeedLifecycle to, int64_t step) {
    const SeedLifecycle from = lifecycle(seed);
    if (!is_legal(from, to))
        raise<Error>("SeedState", "seed ", seed, ": illegal transition ", lifecycle_name(from), " -> ", lifecycle_name(to));
    lifecycle_[seed] = static_cast<uint8_t>(to);
    last_update_step_[seed] = step;
}

void SeedState::set_alpha(int seed, double alpha) {
    alpha_.at(check(seed)) = static_cast<float>(std::clamp(std::isnan(alpha) ? 0.0 : alpha, 0.0, 1.0));
}

void SeedState::record_health(int seed, double sample) {
    check(seed);
    if (!health_seen_[seed]) {
        health_[seed] = static_cast<float>(sample);
        health_seen_[seed] = 1;
    } else {
        health_[seed] = static_cast<float>((1.0 - kHealthMomentum) * health_[seed] + kHealthMomentum * sample);
    }
}

void SeedState::record_latency(int seed, uint64_t microseconds) {
    latency_us_.at(check(seed)) =
        static_cast<uint32_t>(std::min<uint64_t>(microseconds, std::numeric_limits<uint32_t>::max()));
}

bool SeedState::record_failure(int seed, int64_t step) {
    check(seed);
    if (consecutive_errors_[seed] < std::numeric_limits<uint32_t>::max()) ++consecutive_errors_[seed];
    record_health(seed, 0.0);
    if (consecutive_errors_[seed] >= kFailuresBeforeFallback && lifecycle(seed) == SeedLifecycle::active) {
        fallback_[seed] = 1;
        transition(seed, SeedLifecycle::error_recovery, step);
        return true;
    }
    return false;
}

void SeedState::record_success(int seed) {
    check(seed);
    consecutive_errors_[seed] = 0;
    fallback_[seed] = 0;
    record_health(seed, 1.0);
}

void SeedState::reset(int seed, int64_t step) {
    transition(seed, SeedLifecycle::dormant, step);
    kernel_id_[seed] = 0;
    alpha_[seed] = 0.f;
    consecutive_errors_[seed] = 0;
    fallback_[seed] = 0;
}

void SeedState::copy_seed_from(const SeedState& other, int seed) {
    if (other.size() != size()) raise<Error>("SeedState", "copying a seed from a state of ", other.size(), " seeds into one of ", size());
    check(seed);
    lifecycle_[seed] = other.lifecycle_[seed];
    kernel_id_[seed] = other.kernel_id_[seed];
    alpha_[seed] = other.alpha_[seed];
    health_[seed] = other.health_[seed];
    health_seen_[seed] = other.health_seen_[seed];
    last_update_step_[seed] = other.last_update_step_[seed];
    latency_us_[seed] = other.latency_us_[seed];
    consecutive_errors_[seed] = other.consecutive_errors_[seed];
    fallback_[seed] = other.fallback_[seed];
}

std::vector<int> SeedState::blending_seeds() const {
    std::vector<int> seeds;
    for (int seed = 0; seed < size(); ++seed) {
        const auto state = static_cast<SeedLifecycle>(lifecycle_[seed]);
        if (state == SeedLifecycle::active || state == SeedLifecycle::fossilized) seeds.push_back(seed);
    }
    return seeds;
}

int SeedState::count(SeedLifecycle lifecycle) const {
    return static_cast<int>(std::count(lifecycle_.begin(), lifecycle_.end(), static_cast<uint8_t>(lifecycle)));
}

TensorMap SeedState::to_tensors() const {
    const int64_t n = size();
    std::vector<int64_t> ids(kernel_id_.begin(), kernel_id_.end());  // bit pattern kept (ids may exceed INT64_MAX)
    return {{"lifecycle", Tensor::from_vector<uint8_t>(lifecycle_, {n})},
            {"kernel_id", Tensor::from_vector<int64_t>(ids, {n})},
            {"alpha", Tensor::from_vector<float>(alpha_, {n})},
            {"health", Tensor::from_vector<float>(health_, {n})},
            {"health_seen", Tensor::from_vector<uint8_t>(health_seen_, {n})},
            {"last_update_step", Tensor::from_vector<int64_t>(last_update_step_, {n})},
            {"latency_us", Tensor::from_vector<int64_t>(std::vector<int64_t>(latency_us_.begin(), latency_us_.end()), {n})},
            {"consecutive_errors",
             Tensor::from_vector<int64_t>(std::vector<int64_t>(consecutive_errors_.begin(), consecutive_errors_.end()), {n})},
            {"fallback", Tensor::from_vector<uint8_t>(fallback_, {n})}};
}

void SeedState::load_tensors(const TensorMap& tensors) {
    const int64_t n = size();
    auto field = [&](const char* name, DType dtype) {
        const auto found = tensors.find(name);
        if (found == tensors.end()) raise<ArtifactError>("SeedState", "seed state lacks '", name, "'");
        if (found->second.shape() != Shape{n} || found->second.dtype() != dtype)
            raise<ArtifactError>("SeedState", "seed state '", name, "' is ", found->second.describe(), ", expected ",
                                 dtype_name(dtype), "[", n, "]");
        return found->second;
    };
    const auto lifecycle = field("lifecycle", DType::u8).to_vector<uint8_t>();
    for (uint8_t value : lifecycle)
        if (value > static_cast<uint8_t>(SeedLifecycle::fossilized))
            raise<ArtifactError>("SeedState", "invalid lifecycle value ", int(value));
    const auto ids = field("kernel_id", DType::i64).to_vector<int64_t>();
    const auto alpha = field("alpha", DType::f32).to_vector<float>();
    const auto health = field("health", DType::f32).to_vector<float>();
    const auto seen = field("health_seen", DType::u8).to_vector<uint8_t>();
    const auto steps = field("last_update_step", DType::i64).to_vector<int64_t>();
    const auto latency = field("latency_us", DType::i64).to_vector<int64_t>();
    const auto errors = field("consecutive_errors", DType::i64).to_vector<int64_t>();
    const auto fallback = field("fallback", DType::u8).to_vector<uint8_t>();
    lifecycle_ = lifecycle;
    kernel_id_.assign(ids.begin(), ids.end());
    alpha_ = alpha;
    health_ = health;
    health_seen_ = seen;
    last_update_step_ = steps;
    latency_us_.assign(latency.begin(), latency.end());
    consecutive_errors_.assign(errors.begin(), errors.end());
    fallback_ = fallback;
}

}  // namespace kasmina::morph
