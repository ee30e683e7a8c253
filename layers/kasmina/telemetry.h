// Telemetry of Kasmina layers: per-step, per-seed reports plus layer activation statistics and
// cache statistics, sent to a sink. Embedded sinks: an in-memory collector and a JSON-lines file.
// Off costs nothing (no sink: no work); on, statistics are computed only at the reporting interval.
#pragma once

#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "layers/kasmina/kernel_cache.h"
#include "layers/kasmina/seed_bank.h"

namespace kasmina::morph {

struct LayerReport {
    std::string layer;  // dotted name in the wrapped model
    std::string kind;   // the layer's type name
    int64_t step = 0;
    std::vector<SeedReport> seeds;
    double activation_variance = 0.0;  // of the layer's own output d
    double dead_fraction = 0.0;        // fraction of d's elements <= 0 (units a following ReLU would zero)
    CacheStats cache;
};

std::string to_json_line(const LayerReport& report);

class TelemetrySink {
public:
    virtual ~TelemetrySink() = default;
    virtual void report(const LayerReport& report) = 0;
};

class MemoryTelemetry final : public TelemetrySink {
public:
    void report(const LayerReport& report) override;
    std::vector<LayerReport> reports() const;
    void clear();

private:
    mutable std::mutex mutex_;
    std::vector<LayerReport> reports_;
};

class JsonLinesTelemetry final : public TelemetrySink {
public:
    // Truncates the file unless `append`; raises Error if it cannot be opened.
    explicit JsonLinesTelemetry(const std::string& path, bool append = false);
    void report(const LayerReport& report) override;

private:
    std::mutex mutex_;
    std::ofstream stream_;
};

}  // namespace kasmina::morph
