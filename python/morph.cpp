// kasmina.morph in Python: kernel artifacts (blueprints, bytes, inspection), the kernel store and
// cache, wrap() and the morphable model's controls (load/unload, alpha, ramps, fossilize), seed and
// model statistics, and telemetry sinks.
#include "python/bindings.h"

namespace kasmina::python {
namespace {

py::bytes as_bytes(const std::vector<uint8_t>& bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::vector<uint8_t> from_bytes(const py::bytes& bytes) {
    const std::string_view view = bytes;
    return {view.begin(), view.end()};
}

morph::LoadOptions load_options(std::optional<double> alpha, bool trainable) { return {alpha, trainable}; }

}  // namespace

void bind_morph(py::module_& m) {
    py::module_ morph = m.def_submodule("morph", "Seeds, kernel artifacts, store, cache, wrap() and telemetry.");

    // ---- kernel artifacts ---------------------------------------------------------------------------
    py::class_<morph::KernelArtifact>(morph, "KernelArtifact", "A kernel: op list plus float32 weights (artifact.h).")
        .def_readonly("name", &morph::KernelArtifact::name)
        .def_property_readonly("kind", [](const morph::KernelArtifact& a) { return morph::kernel_kind_name(a.signature.kind); })
        .def_readonly("suggested_alpha", &morph::KernelArtifact::suggested_alpha)
        .def_readonly("parameter_count", &morph::KernelArtifact::parameter_count)
        .def_readonly("tensors", &morph::KernelArtifact::tensors)
        .def("to_bytes", [](const morph::KernelArtifact& a) { return as_bytes(morph::serialize_artifact(a)); },
             "Validates, then the safetensors bytes (same artifact, same bytes, same id).")
        .def("describe", &morph::describe_artifact)
        .def("__repr__", [](const morph::KernelArtifact& a) {
            return "<KernelArtifact '" + a.name + "' kind=" + morph::kernel_kind_name(a.signature.kind) + ">";
        });
    morph.def("parse_artifact", [](const py::bytes& bytes, const std::string& source) {
        const std::vector<uint8_t> data = from_bytes(bytes);
        return morph::parse_artifact(data.data(), data.size(), source);
    }, py::arg("data"), py::arg("source") = "<bytes>");
    morph.def("load_artifact", [](const std::string& path) { return morph::load_artifact(path); }, py::arg("path"));
    morph.def("inspect_artifact", [](const std::string& path) { return morph::describe_artifact(morph::load_artifact(path)); },
              py::arg("path"), "What kasmina-kernel inspect prints for a file.");
    morph.def("format_kernel_id", &morph::format_kernel_id, py::arg("id"));
    morph.def("parse_kernel_id", &morph::parse_kernel_id, py::arg("text"));
    morph.def("kernel_id", [](const py::bytes& bytes) {
        const std::vector<uint8_t> data = from_bytes(bytes);
        return morph::content_hash(data.data(), data.size());
    }, py::arg("data"), "The id of an artifact file's bytes (their 64-bit content hash).");

    // Blueprints (fresh initialization from the default generator).
    morph.def("make_linear_bottleneck", [](int64_t in_features, int64_t out_features, int64_t hidden, double alpha) {
        return morph::make_linear_bottleneck(in_features, out_features, hidden, alpha);
    }, py::arg("in_features"), py::arg("out_features"), py::arg("hidden"), py::arg("alpha") = 0.3);
    morph.def("make_conv_bottleneck", [](int64_t in_channels, int64_t out_channels, int64_t hidden,
                                         const py::object& kernel_size, const py::object& stride,
                                         const py::object& padding, const py::object& dilation, double alpha) {
        return morph::make_conv_bottleneck(in_channels, out_channels, hidden, int_pair(kernel_size, "kernel_size"),
                                           int_pair(stride, "stride"), int_pair(padding, "padding"),
                                           int_pair(dilation, "dilation"), alpha);
    }, py::arg("in_channels"), py::arg("out_channels"), py::arg("hidden"), py::arg("kernel_size"), py::arg("stride") = 1,
       py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("alpha") = 0.3);
    morph.def("make_attention_head_mlp", [](int64_t num_heads, int64_t head_dim, int64_t hidden,
                                            std::vector<int64_t> target_heads, double alpha) {
        return morph::make_attention_head_mlp(num_heads, head_dim, hidden, std::move(target_heads), alpha);
    }, py::arg("num_heads"), py::arg("head_dim"), py::arg("hidden"), py::arg("target_heads"), py::arg("alpha") = 0.3);
    morph.def("make_norm_affine", [](const py::object& feature_shape, int64_t channel_dim, double alpha) {
        return morph::make_norm_affine(int_or_shape(feature_shape), channel_dim, alpha);
    }, py::arg("feature_shape"), py::arg("channel_dim"), py::arg("alpha") = 0.3);

    // ---- store and cache ---------------------------------------------------------------------------------
    py::class_<morph::KernelStore, std::shared_ptr<morph::KernelStore>>(morph, "KernelStore")
        .def("contains", &morph::KernelStore::contains, py::arg("id"))
        .def("read", [](const morph::KernelStore& store, uint64_t id) { return as_bytes(store.read(id)); }, py::arg("id"))
        .def("write", [](morph::KernelStore& store, const py::bytes& bytes) { return store.write(from_bytes(bytes)); },
             py::arg("data"), "Stores artifact bytes under their content hash; returns the kernel id.")
        .def("write", [](morph::KernelStore& store, const morph::KernelArtifact& artifact) {
            return store.write(morph::serialize_artifact(artifact));
        }, py::arg("artifact"))
        .def("list", &morph::KernelStore::list)
        .def("__repr__", &morph::KernelStore::describe);
    py::class_<morph::DirectoryStore, morph::KernelStore, std::shared_ptr<morph::DirectoryStore>>(morph, "DirectoryStore")
        .def(py::init<std::string>(), py::arg("directory"))
        .def("path_of", &morph::DirectoryStore::path_of, py::arg("id"))
        .def_property_readonly("directory", &morph::DirectoryStore::directory);

    py::class_<morph::CacheStats>(morph, "CacheStats")
        .def_readonly("hits", &morph::CacheStats::hits)
        .def_readonly("misses", &morph::CacheStats::misses)
        .def_readonly("evictions", &morph::CacheStats::evictions)
        .def_readonly("entries", &morph::CacheStats::entries)
        .def_readonly("bytes", &morph::CacheStats::bytes);
    py::class_<morph::KernelCache, std::shared_ptr<morph::KernelCache>>(morph, "KernelCache")
        .def(py::init([](std::shared_ptr<morph::KernelStore> store, size_t max_entries, uint64_t max_bytes) {
                 return std::make_shared<morph::KernelCache>(std::move(store), morph::CacheOptions{max_entries, max_bytes});
             }),
             py::arg("store"), py::arg("max_entries") = 64, py::arg("max_bytes") = 256ull << 20)
        .def("contains", [](const morph::KernelCache& cache, uint64_t id, const std::string& device) {
            return cache.contains(id, parse_device(device));
        }, py::arg("id"), py::arg("device") = "cpu")
        .def("stats", &morph::KernelCache::stats)
        .def("clear", &morph::KernelCache::clear)
        .def_property_readonly("store", &morph::KernelCache::store);

    // ---- seeds, layers, wrap() ------------------------------------------------------------------------------
    py::class_<morph::SeedReport>(morph, "SeedReport")
        .def_readonly("seed", &morph::SeedReport::seed)
        .def_property_readonly("lifecycle", [](const morph::SeedReport& r) { return morph::lifecycle_name(r.lifecycle); })
        .def_readonly("kernel_id", &morph::SeedReport::kernel_id)
        .def_readonly("alpha", &morph::SeedReport::alpha)
        .def_readonly("health", &morph::SeedReport::health)
        .def_readonly("last_update_step", &morph::SeedReport::last_update_step)
        .def_readonly("latency_us", &morph::SeedReport::latency_us)
        .def_readonly("consecutive_errors", &morph::SeedReport::consecutive_errors)
        .def_readonly("fallback", &morph::SeedReport::fallback)
        .def_readonly("parameter_count", &morph::SeedReport::parameter_count)
        .def("__repr__", [](const morph::SeedReport& r) {
            return make_message("<SeedReport seed=", r.seed, " ", morph::lifecycle_name(r.lifecycle), " alpha=", r.alpha,
                                " kernel=", morph::format_kernel_id(r.kernel_id), ">");
        });

    const auto load_args = std::make_tuple(py::arg("id"), py::kw_only(), py::arg("alpha") = py::none(),
                                           py::arg("trainable") = true);
    py::class_<morph::KasminaLayerBase> layer(morph, "KasminaLayer", "The seed controls of one wrapped layer.");
    std::apply([&](auto... args) {
        layer.def("load_kernel", [](morph::KasminaLayerBase& l, int seed, uint64_t id, std::optional<double> alpha,
                                    bool trainable) { l.load_kernel(seed, id, load_options(alpha, trainable)); },
                  py::arg("seed"), args...);
    }, load_args);
    layer.def("unload_kernel", &morph::KasminaLayerBase::unload_kernel, py::arg("seed"))
        .def("set_seed_alpha", &morph::KasminaLayerBase::set_seed_alpha, py::arg("seed"), py::arg("alpha"))
        .def("ramp_alpha", &morph::KasminaLayerBase::ramp_alpha, py::arg("seed"), py::arg("target"), py::arg("steps"))
        .def("fossilize", &morph::KasminaLayerBase::fossilize, py::arg("seed"))
        .def("freeze_kernel", &morph::KasminaLayerBase::freeze_kernel, py::arg("seed"))
        .def("layer_stats", &morph::KasminaLayerBase::layer_stats);

    py::class_<morph::ModelStats>(morph, "ModelStats")
        .def_readonly("layers", &morph::ModelStats::layers)
        .def_readonly("seeds", &morph::ModelStats::seeds)
        .def_property_readonly("seeds_by_lifecycle", [](const morph::ModelStats& s) {
            std::map<std::string, int> counts;
            for (const auto& [lifecycle, count] : s.seeds_by_lifecycle) counts[morph::lifecycle_name(lifecycle)] = count;
            return counts;
        })
        .def_readonly("kernel_parameters", &morph::ModelStats::kernel_parameters)
        .def_readonly("cache", &morph::ModelStats::cache)
        .def_readonly("per_layer", &morph::ModelStats::per_layer);

    py::class_<morph::MorphableModel> model(morph, "MorphableModel", "A wrapped model and its seed controls (wrap.h).");
    model.def_property_readonly("module", &morph::MorphableModel::module)
        .def("forward", &morph::MorphableModel::forward, py::arg("input"))
        .def("__call__", &morph::MorphableModel::forward, py::arg("input"))
        .def("parameters", [](const morph::MorphableModel& m) { return m.module()->parameters(); },
             "The model's parameters, loaded kernels' weights included (refresh the optimizer after a load).")
        .def("train", [](morph::MorphableModel& m, bool on) { m.module()->train(on); }, py::arg("mode") = true)
        .def("eval", [](morph::MorphableModel& m) { m.module()->eval(); })
        .def("kasmina_layers", &morph::MorphableModel::kasmina_layers)
        .def("layer", &morph::MorphableModel::layer, py::arg("name"), py::return_value_policy::reference_internal)
        .def_property_readonly("unsupported", &morph::MorphableModel::unsupported)
        .def_property_readonly("cache", &morph::MorphableModel::cache)
        .def("unload_kernel", &morph::MorphableModel::unload_kernel, py::arg("layer"), py::arg("seed"))
        .def("set_seed_alpha", &morph::MorphableModel::set_seed_alpha, py::arg("layer"), py::arg("seed"), py::arg("alpha"))
        .def("ramp_alpha", &morph::MorphableModel::ramp_alpha, py::arg("layer"), py::arg("seed"), py::arg("target"),
             py::arg("steps"))
        .def("fossilize", &morph::MorphableModel::fossilize, py::arg("layer"), py::arg("seed"))
        .def("model_stats", &morph::MorphableModel::model_stats)
        .def("seed_state", &morph::MorphableModel::seed_state)
        .def("restore_seed_state", &morph::MorphableModel::restore_seed_state, py::arg("state"))
        .def("unwrap", &morph::MorphableModel::unwrap);
    std::apply([&](auto... args) {
        model.def("load_kernel", [](morph::MorphableModel& m, const std::string& name, int seed, uint64_t id,
                                    std::optional<double> alpha, bool trainable) {
            m.load_kernel(name, seed, id, load_options(alpha, trainable));
        }, py::arg("layer"), py::arg("seed"), args...);
    }, load_args);

    // ---- telemetry ------------------------------------------------------------------------------------------
    py::class_<morph::LayerReport>(morph, "LayerReport")
        .def_readonly("layer", &morph::LayerReport::layer)
        .def_readonly("kind", &morph::LayerReport::kind)
        .def_readonly("step", &morph::LayerReport::step)
        .def_readonly("seeds", &morph::LayerReport::seeds)
        .def_readonly("activation_variance", &morph::LayerReport::activation_variance)
        .def_readonly("dead_fraction", &morph::LayerReport::dead_fraction)
        .def_readonly("cache", &morph::LayerReport::cache);
    py::class_<morph::TelemetrySink, std::shared_ptr<morph::TelemetrySink>>(morph, "TelemetrySink");
    py::class_<morph::MemoryTelemetry, morph::TelemetrySink, std::shared_ptr<morph::MemoryTelemetry>>(morph, "MemoryTelemetry")
        .def(py::init<>())
        .def("reports", &morph::MemoryTelemetry::reports)
        .def("clear", &morph::MemoryTelemetry::clear);
    py::class_<morph::JsonLinesTelemetry, morph::TelemetrySink, std::shared_ptr<morph::JsonLinesTelemetry>>(morph, "JsonLinesTelemetry")
        .def(py::init<std::string, bool>(), py::arg("path"), py::arg("append") = false);

    morph.def("wrap", [](std::shared_ptr<nn::Module> module, std::optional<std::set<std::string>> targets, int num_seeds,
                         std::shared_ptr<morph::KernelCache> cache, std::shared_ptr<morph::TelemetrySink> telemetry,
                         int64_t telemetry_interval) {
        morph::WrapOptions options{.num_seeds = num_seeds, .cache = std::move(cache), .telemetry = std::move(telemetry),
                                   .telemetry_interval = telemetry_interval};
        if (targets) options.targets = *targets;
        return morph::wrap(std::move(module), options);
    }, py::arg("model"), py::kw_only(), py::arg("targets") = py::none(), py::arg("num_seeds") = 4,
       py::arg("cache") = nullptr, py::arg("telemetry") = nullptr, py::arg("telemetry_interval") = 1,
       "Replaces each supported layer by its Kasmina variant (weights copied); returns the MorphableModel.");
}

}  // namespace kasmina::python
