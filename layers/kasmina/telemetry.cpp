#include "layers/kasmina/telemetry.h"

#include <nlohmann/json.hpp>

namespace kasmina::morph {

std::string to_json_line(const LayerReport& report) {
    nlohmann::json seeds = nlohmann::json::array();
    for (const SeedReport& seed : report.seeds)
        seeds.push_back({{"seed", seed.seed},
                         {"lifecycle", lifecycle_name(seed.lifecycle)},
                         {"kernel_id", format_kernel_id(seed.kernel_id)},
                         {"alpha", seed.alpha},
                         {"health", seed.health},
                         {"last_update_step", seed.last_update_step},
                         {"latency_us", seed.latency_us},
                         {"consecutive_errors", seed.consecutive_errors},
                         {"fallback", seed.fallback}});
    const nlohmann::json line = {{"layer", report.layer},
                                 {"kind", report.kind},
                                 {"step", report.step},
                                 {"activation_variance", report.activation_variance},
                                 {"dead_fraction", report.dead_fraction},
                                 {"seeds", seeds},
                                 {"cache",
                                  {{"hits", report.cache.hits},
                                   {"misses", report.cache.misses},
                                   {"evictions", report.cache.evictions},
                                   {"entries", report.cache.entries},
                                   {"bytes", report.cache.bytes}}}};
    return line.dump();
}

void MemoryTelemetry::report(const LayerReport& report) {
    std::lock_guard lock(mutex_);
    reports_.push_back(report);
}

std::vector<LayerReport> MemoryTelemetry::reports() const {
    std::lock_guard lock(mutex_);
    return reports_;
}

void MemoryTelemetry::clear() {
    std::lock_guard lock(mutex_);
    reports_.clear();
}

JsonLinesTelemetry::JsonLinesTelemetry(const std::string& path, bool append)
    : stream_(path, append ? std::ios::app : std::ios::trunc) {
    if (!stream_) raise<Error>("JsonLinesTelemetry", "cannot open '", path, "' for writing");
}

void JsonLinesTelemetry::report(const LayerReport& report) {
    const std::string line = to_json_line(report);
    std::lock_guard lock(mutex_);
    stream_ << line << '\n';
    stream_.flush();
}

}  // namespace kasmina::morph
