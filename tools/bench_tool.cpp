// kasmina-bench: the standalone benchmark tool. Runs the BENCHMARKS.md workloads (standard layers
// fwd and fwd+bwd, Kasmina dormant/active, cache hit/miss, the demo train step, the leak check over
// many train steps) on cpu or cuda, measures the machine's ceilings (copy bandwidth, GEMM rate) to
// give each workload its floor, measures the peak memory of each training step, runs the PyTorch peer
// script (and, on the CPU, the LibTorch peer when built) side by side on the same shapes, and prints a
// table, a JSON report (schema "kasmina-bench/1") and an SVG chart of the ratios.
//   kasmina-bench [--device cpu|cuda] [--suite layers|kasmina|all] [--workloads a,b,...]
//                 [--repeats N] [--warmup N] [--peer-python PATH|none] [--peer-libtorch PATH|none] [--json FILE] [--svg FILE]
//                 [--size NAME=AxBxC ...] [--memory-steps N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench/kasmina_workloads.h"
#include "kasmina.h"
#include "tools/command_line.h"
#include "tools/train/model.h"

#ifdef KASMINA_WITH_CUDA
#include "runtime/cuda/stream.h"
#endif

using namespace kasmina;
using namespace kasmina::bench;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
    Device device = Device::cpu();
    std::string suite = "all";
    std::vector<std::string> workloads;  // empty: the suite's
    int repeats = 30;
    int warmup = 3;
    std::string peer_python = "auto";
    std::string peer_libtorch = "auto";  // the C++ peer (CPU); auto: build/bench/kasmina-peer-libtorch when built
    std::string json_path = "bench-results/kasmina-bench.json";
    std::string svg_path = "bench-results/kasmina-bench.svg";
    std::map<std::string, Shape> sizes;  // --size linear=8192x1024: input shape overrides
    int64_t memory_steps = 10000;        // train_memory: the train steps the leak check runs
};

std::optional<Shape> size_of(const Config& config, const std::string& name) {
    const auto found = config.sizes.find(name);
    if (found == config.sizes.end()) return std::nullopt;
    return found->second;
}

// Timing of one workload: per-repeat microseconds, summarized.
struct Measurement {
    std::string workload, pass;
    std::vector<double> samples_us;
    double floor_us = 0;      // 0: no floor model for this workload
    double reference_us = 0;  // the ratio's numerator: kasmina_dormant the plain layer's median, cache_miss the bound's
    double peak_bytes = 0;    // training steps: the allocator's peak during one step (0: not measured)
    double median() const { return quantile(0.5); }
    double quantile(double q) const {
        std::vector<double> sorted = samples_us;
        std::sort(sorted.begin(), sorted.end());
        return sorted.empty() ? 0.0 : sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5)];
    }
};

void progress(const std::string& what, int done, int total) {
    std::fprintf(stderr, "\r  %-34s %3d/%d", what.c_str(), done, total);
    if (done == total) std::fprintf(stderr, "\n");
}

// How a run is timed. On a GPU, device work is timed as the peer script times it: CUDA events recorded
// on the stream before and after (launch gaps inside the run count, the host's wake-up after the last
// kernel does not). Host-side work (cache lookups, whole training steps) keeps the wall clock.
enum class Timing { device, wall };

// Runs `work` warmup + repeats times, ending each run with the device idle.
Measurement measure(const Config& config, const std::string& workload, const std::string& pass,
                    const std::function<void()>& work, Timing timing = Timing::device) {
    Measurement m{workload, pass, {}, 0, 0};
    const std::string label = workload + " " + pass;
    for (int i = 0; i < config.warmup; ++i) work();
    synchronize(config.device);
    for (int i = 0; i < config.repeats; ++i) {
#ifdef KASMINA_WITH_CUDA
        if (timing == Timing::device && config.device.is_cuda()) {
            cuda::Event begin({.enable_timing = true}), end({.enable_timing = true});
            begin.record(cuda::current_stream());
            work();
            end.record(cuda::current_stream());
            end.synchronize();
            m.samples_us.push_back(static_cast<double>(begin.elapsed_ms(end)) * 1e3);
            progress(label, i + 1, config.repeats);
            continue;
        }
#endif
        const auto start = Clock::now();
        work();
        synchronize(config.device);
        m.samples_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
        progress(label, i + 1, config.repeats);
    }
    return m;
}

// The most bytes of tensors the device's allocator held during one run of `work`, the tensors alive
// before it included: a training step's peak memory, as torch.cuda.max_memory_allocated() gives
// PyTorch's. Taken after the timed runs, so one-time caches (workspaces, searches) are already made.
double peak_bytes_of(const Config& config, const std::function<void()>& work) {
    Allocator& allocator = allocator_for(config.device);
    synchronize(config.device);
    allocator.reset_peak();
    work();
    synchronize(config.device);
    return static_cast<double>(allocator.stats().peak_bytes);
}

// ---- ceilings and floors ---------------------------------------------------------------------------

struct Ceilings {
    double copy_gbps = 0;     // bytes read + written per second / 1e9
    double gemm_gflops = 0;   // float32
};

Ceilings measure_ceilings(const Config& config) {
    Ceilings c;
    const int64_t elements = config.device.is_cpu() ? (int64_t{32} << 20) : (int64_t{256} << 20);
    const Tensor source = Tensor::randn({elements}).to(config.device);
    Tensor target = Tensor::empty({elements}, {.device = config.device});
    Config quick = config;
    quick.repeats = 10;
    const Measurement copy = measure(quick, "ceiling", "copy", [&] { copy_into(target, source); });
    c.copy_gbps = 2.0 * static_cast<double>(elements) * 4 / (copy.median() * 1e3);
    const int64_t n = config.device.is_cpu() ? 1024 : 8192;
    const Tensor a = Tensor::randn({n, n}).to(config.device), b = Tensor::randn({n, n}).to(config.device);
    NoGradGuard no_grad;
    const Measurement gemm = measure(quick, "ceiling", "gemm", [&] { matmul(a, b); });
    c.gemm_gflops = 2.0 * static_cast<double>(n * n * n) / (gemm.median() * 1e3);
    return c;
}

// Floors from the fewest bytes each pass must move and the FLOPs it must do (BENCHMARKS.md).
double floor_us(const std::string& workload, const std::string& pass, const Shape& input, const Ceilings& c) {
    const bool both = pass == "fwd+bwd";
    const double elements = static_cast<double>(shape_numel(input));
    auto memory = [&](double passes) { return passes * elements * 4 / (c.copy_gbps * 1e3); };
    auto compute = [&](double flops) { return (both ? 3 : 1) * flops / (c.gemm_gflops * 1e3); };
    // Layer norm's statistics are per row, so one read of x serves both them and y: fwd reads x and
    // writes y; bwd adds reads of x and dy and a write of dx. Batch norm's statistics span the whole
    // batch, which no cache holds, so x is read once for them and again to normalize (fwd: 3 passes),
    // and dy and x once for the gradient's sums and again for dx (bwd: 5 more). BENCHMARKS.md's floors.
    if (workload == "layernorm") return memory(both ? 5 : 2);
    if (workload == "batchnorm2d" || workload == "batchnorm1d") return memory(both ? 8 : 3);
    if (workload == "linear") return compute(2.0 * elements * static_cast<double>(input.back()));
    if (workload == "conv2d") return compute(2.0 * elements * static_cast<double>(input[1]) * 9);
    if (workload == "mha") {
        const double batch = static_cast<double>(input[0]), length = static_cast<double>(input[1]),
                     embed = static_cast<double>(input[2]);
        return compute(batch * (8 * length * embed * embed + 4 * length * length * embed));
    }
    return 0;
}

// ---- workloads -------------------------------------------------------------------------------------

std::vector<Measurement> run_layers(const Config& config, const Ceilings& ceilings, const std::vector<std::string>& names) {
    std::vector<Measurement> results;
    for (const std::string& name : names) {
        LayerWorkload w = make_layer_workload(name, config.device, size_of(config, name));
        {
            NoGradGuard no_grad;
            Measurement m = measure(config, name, "fwd", [&] { w.forward(w.input); });
            m.floor_us = floor_us(name, "fwd", w.input.shape(), ceilings);
            results.push_back(m);
        }
        Tensor x = w.input.clone().set_requires_grad(true);
        const auto step = [&] {
            w.module->zero_grad();
            x.set_grad({});
            sum(w.forward(x)).backward();
        };
        Measurement m = measure(config, name, "fwd+bwd", step);
        m.floor_us = floor_us(name, "fwd+bwd", w.input.shape(), ceilings);
        m.peak_bytes = peak_bytes_of(config, step);
        results.push_back(m);
    }
    return results;
}

std::shared_ptr<morph::KernelCache> scratch_cache(const std::string& name) {
    const auto directory = std::filesystem::temp_directory_path() / ("kasmina_bench_tool_" + name);
    std::filesystem::remove_all(directory);
    return std::make_shared<morph::KernelCache>(std::make_shared<morph::DirectoryStore>(directory.string()));
}

// The demo network's training step (Fashion-MNIST shapes, random data, SGD with momentum), wrapped
// with dormant seed slots as the main job runs it; the peer script trains the same network.
constexpr int64_t kDemoBatch = 256;
struct DemoTraining {
    std::shared_ptr<train::FashionNet> network;
    morph::MorphableModel model;
    optim::SGD optimizer;
    Tensor images, labels;

    DemoTraining(Device device, int64_t batch)
        : network(make_network(device)),
          model(morph::wrap(network, {.cache = scratch_cache("train")})),
          optimizer(network->parameters(), {.lr = 0.01, .momentum = 0.9}),
          images(Tensor::randn({batch, 1, 28, 28}).to(device)) {
        std::vector<int64_t> classes(static_cast<size_t>(batch));
        for (size_t i = 0; i < classes.size(); ++i) classes[i] = static_cast<int64_t>(i % 10);
        labels = Tensor::from_vector(classes, {batch}).to(device);
    }
    static std::shared_ptr<train::FashionNet> make_network(Device device) {
        manual_seed(1);
        auto made = std::make_shared<train::FashionNet>();
        made->to(device);
        return made;
    }
    void step() {
        optimizer.zero_grad();
        cross_entropy(model.forward(images), labels).backward();
        optimizer.step();
    }
};

// The leak check: memory held after a few warm-up steps against after many more.
struct LeakCheck {
    int64_t steps = 0, batch = 0, warmup_steps = 0;
    AllocatorStats after_warmup, at_end;
    double rss_after_warmup = 0, rss_at_end = 0;  // bytes of host memory resident (0 where unknown)
    bool ran() const { return steps > 0; }
    bool holds() const { return at_end.bytes_in_use <= after_warmup.bytes_in_use; }
};

double resident_bytes() {
    std::ifstream statm("/proc/self/statm");
    double pages_total = 0, pages_resident = 0;
    if (!(statm >> pages_total >> pages_resident)) return 0;
    return pages_resident * static_cast<double>(sysconf(_SC_PAGESIZE));
}

// Runs config.memory_steps training steps of the demo network and compares the tensors in use, the
// allocator's reserve and the host's resident memory after the warm-up with those at the end. On the
// CPU the batch is 16: the demo step at 256 takes ~0.1 s on two cores, and a leak shows at any batch.
LeakCheck check_for_leaks(const Config& config) {
    LeakCheck check;
    check.steps = config.memory_steps;
    check.batch = config.device.is_cpu() ? 16 : kDemoBatch;
    check.warmup_steps = std::min<int64_t>(10, check.steps);
    DemoTraining training(config.device, check.batch);
    Allocator& allocator = allocator_for(config.device);
    for (int64_t i = 0; i < check.steps; ++i) {
        training.step();
        if (i + 1 == check.warmup_steps) {
            synchronize(config.device);
            check.after_warmup = allocator.stats();
            check.rss_after_warmup = resident_bytes();
        }
        if ((i + 1) % 100 == 0 || i + 1 == check.steps) progress("train_memory steps", static_cast<int>(i + 1), static_cast<int>(check.steps));
    }
    synchronize(config.device);
    check.at_end = allocator.stats();
    check.rss_at_end = resident_bytes();
    return check;
}

std::vector<Measurement> run_kasmina(const Config& config, const std::vector<std::string>& names, LeakCheck& leak) {
    std::vector<Measurement> results;
    for (const std::string& name : names) {
        if (name == "cache_hit" || name == "cache_miss") {
            auto cache = scratch_cache(name);
            std::vector<uint64_t> ids;
            for (uint64_t seed = 1; seed <= 2; ++seed) {
                Generator generator(seed);
                ids.push_back(cache->store()->write(morph::serialize_artifact(
                    morph::make_linear_bottleneck(512, 512, 256, 0.3, "1MiB", &generator))));  // 1.0 MiB
            }
            if (name == "cache_hit") {
                cache->get(ids[0], config.device);
                results.push_back(
                    measure(config, name, "get", [&] { cache->get(ids[0], config.device); }, Timing::wall));
            } else {
                auto bounded = std::make_shared<morph::KernelCache>(cache->store(), morph::CacheOptions{.max_entries = 1});
                int i = 0;
                Measurement miss = measure(
                    config, name, "get", [&] { bounded->get(ids[i++ % 2], config.device); }, Timing::wall);
                // BENCHMARKS.md's bound for a miss: the artifact file read, its bytes copied to the device once.
                const auto& directory = dynamic_cast<const morph::DirectoryStore&>(*cache->store());
                Measurement bound = measure(config, name, "read+copy", [&] {
                    const std::string path = directory.path_of(ids[i++ % 2]);
                    const auto size = static_cast<int64_t>(std::filesystem::file_size(path));
                    const Tensor bytes = Tensor::empty({size}, {.dtype = DType::u8});
                    std::ifstream(path, std::ios::binary).read(static_cast<char*>(bytes.raw_data()), size);
                    if (!config.device.is_cpu()) (void)bytes.to(config.device);
                }, Timing::wall);
                miss.reference_us = bound.median();
                results.push_back(bound);
                results.push_back(miss);
            }
            continue;
        }
        if (name == "train_step") {
            DemoTraining training(config.device, kDemoBatch);
            Measurement m = measure(config, name, "step", [&] { training.step(); }, Timing::wall);
            m.peak_bytes = peak_bytes_of(config, [&] { training.step(); });
            results.push_back(m);
            continue;
        }
        if (name == "train_memory") {
            leak = check_for_leaks(config);
            continue;
        }
        if (name.rfind("kasmina_active_", 0) == 0) {
            // 2 of 4 bottleneck seeds (width 64, alpha 0.3) against the same composition from plain
            // modules: ours (the "composition fwd" row) and PyTorch's (the peer of the "kasmina fwd"
            // row). The ratio column shows PyTorch's composition / Kasmina, or ours without a peer.
            const std::string layer = name.substr(std::string("kasmina_active_").size());
            ActivePair pair = make_active_pair(layer, scratch_cache(name), config.device, size_of(config, layer));
            NoGradGuard no_grad;
            Measurement composition = measure(config, name, "composition fwd", [&] { pair.composition.forward(pair.input); });
            Measurement fused = measure(config, name, "kasmina fwd", [&] { pair.kasmina->forward(pair.input); });
            fused.reference_us = composition.median();
            results.push_back(composition);
            results.push_back(fused);
            continue;
        }
        // kasmina_dormant_<layer>: the wrapped layer (4 seeds, none active), next to the plain layer.
        if (name.rfind("kasmina_dormant_", 0) != 0) throw Error("unknown workload '" + name + "' (see --help)");
        const std::string layer = name.substr(std::string("kasmina_dormant_").size());
        LayerWorkload plain = make_layer_workload(layer, config.device, size_of(config, layer)),
                      twin = make_layer_workload(layer, config.device, size_of(config, layer));
        auto wrapped = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{twin.module});
        morph::wrap(wrapped, {.cache = scratch_cache(name)});
        NoGradGuard no_grad;
        // Alternate the two so drift hits both alike; the ratio column shows plain / wrapped.
        Measurement plain_m{name, "plain fwd", {}, 0, 0}, wrapped_m{name, "dormant fwd", {}, 0, 0};
        for (int round = 0; round < 3; ++round) {
            Config third = config;
            third.repeats = std::max(1, config.repeats / 3);
            const Measurement a = measure(third, name, "plain fwd", [&] { plain.forward(plain.input); });
            const Measurement b = measure(third, name, "dormant fwd", [&] { wrapped->forward(twin.input); });
            plain_m.samples_us.insert(plain_m.samples_us.end(), a.samples_us.begin(), a.samples_us.end());
            wrapped_m.samples_us.insert(wrapped_m.samples_us.end(), b.samples_us.begin(), b.samples_us.end());
        }
        wrapped_m.reference_us = plain_m.median();
        results.push_back(plain_m);
        results.push_back(wrapped_m);
    }
    return results;
}

// ---- the peer ------------------------------------------------------------------------------------

std::string find_peer_python(const Config& config) {
    if (config.peer_python == "none") return "";
    if (config.peer_python != "auto") return config.peer_python;
    if (const char* env = std::getenv("KASMINA_BENCH_PYTHON")) return env;
    for (const char* candidate : {".venv-peer/bin/python", "/usr/bin/python3"}) {
        const std::string probe = std::string(candidate) + " -c 'import torch' >/dev/null 2>&1";
        if (std::filesystem::exists(candidate) && std::system(probe.c_str()) == 0) return candidate;
    }
    return "";
}

// A peer's figures for one (workload, pass): its median time and, where it measured it, the peak bytes
// of tensors during one step (0: not measured).
struct PeerFigure {
    double median_us = 0, peak_bytes = 0;
};
using PeerMedians = std::map<std::pair<std::string, std::string>, PeerFigure>;

// Runs a peer command that writes the kasmina-bench/1 schema to `output`; its medians by (workload,
// pass) and its version, or nothing (with a note) when it fails.
PeerMedians run_peer_command(const std::string& command, const std::string& output, const char* peer,
                             std::string& version) {
    PeerMedians medians;
    std::fprintf(stderr, "  peer: %s\n", command.c_str());
    if (std::system(command.c_str()) != 0) {
        std::fprintf(stderr, "  (the %s peer failed; continuing without it)\n", peer);
        return medians;
    }
    std::ifstream stream(output);
    const Json report = Json::parse(stream);
    version = report.value("implementation_version", "");
    for (const Json& result : report.at("results"))
        medians[{result.at("workload"), result.at("pass")}] = {
            result.at("median_us").get<double>(),
            result.contains("peak_bytes") && result.at("peak_bytes").is_number() ? result.at("peak_bytes").get<double>() : 0.0};
    return medians;
}

std::string peer_threads() {
    const char* threads = std::getenv("OMP_NUM_THREADS");
    return threads ? threads : "2";
}

// PyTorch's medians, from bench/peer_layers.py --json (the BENCHMARKS.md sizes).
PeerMedians run_peer(const Config& config, std::string& peer_version) {
    const std::string python = find_peer_python(config);
    if (python.empty()) {
        std::fprintf(stderr, "  (no PyTorch peer: set KASMINA_BENCH_PYTHON or run tools/bench to set one up)\n");
        return {};
    }
    const std::string output = (std::filesystem::temp_directory_path() / "kasmina-bench-peer.json").string();
    const std::string command = python + " bench/peer_layers.py --device " + (config.device.is_cpu() ? "cpu" : "cuda") +
                                " --threads " + peer_threads() + " --json " + output + " >&2";
    return run_peer_command(command, output, "PyTorch", peer_version);
}

std::string find_peer_libtorch(const Config& config) {
    if (config.peer_libtorch == "none" || !config.device.is_cpu()) return "";
    if (config.peer_libtorch != "auto") return config.peer_libtorch;
    std::error_code error;
    const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
    if (error) return "";
    const std::filesystem::path candidate = self.parent_path().parent_path() / "bench" / "kasmina-peer-libtorch";
    return std::filesystem::exists(candidate) ? candidate.string() : "";
}

// LibTorch's medians on exactly the shapes measured here (size overrides included), CPU only.
PeerMedians run_peer_libtorch(const Config& config, const std::vector<std::string>& layers, std::string& version) {
    const std::string binary = find_peer_libtorch(config);
    if (binary.empty()) return {};
    std::string command = "OPENBLAS_NUM_THREADS=" + peer_threads() + " " + binary + " --threads " + peer_threads();
    for (const std::string& name : layers) {
        const LayerWorkload w = make_layer_workload(name, config.device, size_of(config, name));
        std::string shape;
        for (int64_t extent : w.input.shape()) shape += (shape.empty() ? "" : "x") + std::to_string(extent);
        if (const auto* mha = dynamic_cast<const nn::MultiheadAttention*>(w.module.get()))
            shape += ":" + std::to_string(mha->num_heads());
        command += " " + name + "=" + shape;
    }
    const std::string output = (std::filesystem::temp_directory_path() / "kasmina-bench-libtorch.json").string();
    return run_peer_command(command + " --json " + output + " >&2", output, "LibTorch", version);
}

// ---- reports -------------------------------------------------------------------------------------

struct PeakRow {
    std::string workload, pass;
    double ours = 0, peer = 0;  // bytes; peer 0: not measured
};

std::string mib(double bytes) { return make_message(std::round(bytes / (1 << 20) * 100) / 100); }

// The memory section under the table: each training step's peak against the peer's (BENCHMARKS.md:
// within 1.1x of PyTorch), and the leak check.
void print_memory(const std::vector<PeakRow>& peaks, const LeakCheck& leak, const Config& config) {
    if (!peaks.empty()) {
        std::printf("\nmemory: the peak of tensors held during one step (%s's allocator; PyTorch: max_memory_allocated)\n",
                    config.device.str().c_str());
        std::printf("%-26s %-12s %12s %12s %16s\n", "workload", "pass", "kasmina MiB", "pytorch MiB", "kasmina/pytorch");
        for (const PeakRow& row : peaks)
            std::printf("%-26s %-12s %12s %12s %16s\n", row.workload.c_str(), row.pass.c_str(), mib(row.ours).c_str(),
                        row.peer > 0 ? mib(row.peer).c_str() : "-",
                        row.peer > 0 ? make_message(std::round(row.ours / row.peer * 100) / 100).c_str() : "-");
    }
    if (!leak.ran()) return;
    const auto growth = [](double before, double after) {
        return make_message(after >= before ? "+" : "-", mib(std::abs(after - before)), " MiB");
    };
    std::printf("\nleak check (train_memory): %lld demo train steps at batch %lld on %s: %s\n",
                static_cast<long long>(leak.steps), static_cast<long long>(leak.batch), config.device.str().c_str(),
                leak.holds() ? "no growth" : "GROWTH");
    std::printf("  tensors in use   %llu bytes after step %lld, %llu bytes at the end (%+lld bytes)\n",
                static_cast<unsigned long long>(leak.after_warmup.bytes_in_use), static_cast<long long>(leak.warmup_steps),
                static_cast<unsigned long long>(leak.at_end.bytes_in_use),
                static_cast<long long>(leak.at_end.bytes_in_use) - static_cast<long long>(leak.after_warmup.bytes_in_use));
    std::printf("  allocator holds  %10s MiB, %10s MiB (%s); blocks from the system: %llu more\n",
                mib(static_cast<double>(leak.after_warmup.reserved_bytes)).c_str(),
                mib(static_cast<double>(leak.at_end.reserved_bytes)).c_str(),
                growth(static_cast<double>(leak.after_warmup.reserved_bytes), static_cast<double>(leak.at_end.reserved_bytes)).c_str(),
                static_cast<unsigned long long>(leak.at_end.device_allocations - leak.after_warmup.device_allocations));
    if (leak.rss_at_end > 0)
        std::printf("  host resident    %10s MiB, %10s MiB (%s)\n", mib(leak.rss_after_warmup).c_str(), mib(leak.rss_at_end).c_str(),
                    growth(leak.rss_after_warmup, leak.rss_at_end).c_str());
}

Json leak_json(const LeakCheck& leak) {
    const auto figures = [](const AllocatorStats& stats, double rss) {
        return Json{{"bytes_in_use", stats.bytes_in_use},
                    {"reserved_bytes", stats.reserved_bytes},
                    {"device_allocations", stats.device_allocations},
                    {"host_resident_bytes", rss}};
    };
    return Json{{"steps", leak.steps},
                {"batch", leak.batch},
                {"warmup_steps", leak.warmup_steps},
                {"after_warmup", figures(leak.after_warmup, leak.rss_after_warmup)},
                {"at_end", figures(leak.at_end, leak.rss_at_end)},
                {"holds", leak.holds()}};
}

void write_svg(const std::string& path, const std::vector<std::pair<std::string, double>>& ratios, const std::string& title) {
    const int row = 22, left = 190, width = 520, top = 40;
    const double largest = std::max(2.0, std::accumulate(ratios.begin(), ratios.end(), 0.0,
                                                         [](double m, const auto& r) { return std::max(m, r.second); }));
    std::ofstream svg(path);
    svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << left + width + 80 << "' height='"
        << top + row * static_cast<int>(ratios.size()) + 30 << "' font-family='sans-serif' font-size='12'>\n";
    svg << "<text x='10' y='20' font-size='14'>" << title << "</text>\n";
    const double unit = width / largest;
    svg << "<line x1='" << left + unit << "' y1='" << top - 5 << "' x2='" << left + unit << "' y2='"
        << top + row * static_cast<int>(ratios.size()) << "' stroke='black' stroke-dasharray='4'/>\n";
    for (size_t i = 0; i < ratios.size(); ++i) {
        const int y = top + row * static_cast<int>(i);
        const double bar = ratios[i].second * unit;
        svg << "<text x='" << left - 6 << "' y='" << y + 14 << "' text-anchor='end'>" << ratios[i].first << "</text>\n";
        svg << "<rect x='" << left << "' y='" << y + 3 << "' width='" << bar << "' height='" << row - 6 << "' fill='"
            << (ratios[i].second >= 1.0 ? "#2a9d8f" : "#e76f51") << "'/>\n";
        char value[32];
        std::snprintf(value, sizeof value, "%.2fx", ratios[i].second);
        svg << "<text x='" << left + bar + 4 << "' y='" << y + 14 << "'>" << value << "</text>\n";
    }
    svg << "</svg>\n";
}

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream stream(text);
    for (std::string item; std::getline(stream, item, ',');)
        if (!item.empty()) items.push_back(item);
    return items;
}

Config parse(int argc, char** argv) {
    Config config;
    for (tools::CommandLine line(argc, argv); line.next();) {
        const std::string& flag = line.flag();
        auto value = [&] { return line.value(); };
        if (flag == "--help" || flag == "-h") {
            std::printf(
                "usage: kasmina-bench [--device cpu|cuda] [--suite layers|kasmina|all] [--workloads a,b,...]\n"
                "                     [--repeats N] [--warmup N] [--peer-python PATH|none] [--peer-libtorch PATH|none]\n"
                "                     [--json FILE] [--svg FILE] [--memory-steps N]\n"
                "                     [--size NAME=AxBxC ...]   (input shape of a layer workload; not passed to the peer)\n"
                "layer workloads: linear conv2d mha layernorm batchnorm2d batchnorm1d (BENCHMARKS.md sizes per device)\n"
                "kasmina workloads: kasmina_dormant_<layer> kasmina_active_linear kasmina_active_conv2d cache_hit\n"
                "                   cache_miss train_step train_memory (the leak check: --memory-steps steps, default 10000)\n");
            std::exit(0);
        } else if (flag == "--device") config.device = Device::parse(value());
        else if (flag == "--suite") config.suite = value();
        else if (flag == "--workloads") config.workloads = split_list(value());
        else if (flag == "--repeats") config.repeats = std::max(1, std::atoi(value().c_str()));
        else if (flag == "--warmup") config.warmup = std::max(0, std::atoi(value().c_str()));
        else if (flag == "--peer-python") config.peer_python = value();
        else if (flag == "--peer-libtorch") config.peer_libtorch = value();
        else if (flag == "--json") config.json_path = value();
        else if (flag == "--svg") config.svg_path = value();
        else if (flag == "--memory-steps") {
            config.memory_steps = std::atoll(value().c_str());
            if (config.memory_steps < 1) throw Error("--memory-steps must be a positive count");
        }
        else if (flag == "--size") {
            const std::string text = value();
            const size_t equals = text.find('=');
            if (equals == std::string::npos) throw Error("--size expects NAME=AxBxC, got '" + text + "'");
            Shape shape;
            std::stringstream dims(text.substr(equals + 1));
            for (std::string dim; std::getline(dims, dim, 'x');) {
                char* end = nullptr;
                const long long extent = std::strtoll(dim.c_str(), &end, 10);
                if (dim.empty() || *end != '\0' || extent <= 0) throw Error("--size: bad extent '" + dim + "' in '" + text + "'");
                shape.push_back(extent);
            }
            config.sizes[text.substr(0, equals)] = shape;
        }
        else throw Error("unknown option '" + flag + "' (see --help)");
    }
    if (config.suite != "layers" && config.suite != "kasmina" && config.suite != "all")
        throw Error("--suite must be layers, kasmina or all, got '" + config.suite + "'");
    return config;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Config config = parse(argc, argv);
        const std::vector<std::string> layer_names{"linear", "conv2d", "mha", "layernorm", "batchnorm2d", "batchnorm1d"};
        std::vector<std::string> layers, kasmina_names;
        for (const std::string& name : config.workloads.empty() ? std::vector<std::string>{} : config.workloads)
            (std::find(layer_names.begin(), layer_names.end(), name) != layer_names.end() ? layers : kasmina_names)
                .push_back(name);
        if (config.workloads.empty()) {
            if (config.suite != "kasmina") layers = layer_names;
            if (config.suite != "layers") {
                for (const std::string& name : layer_names) kasmina_names.push_back("kasmina_dormant_" + name);
                kasmina_names.push_back("kasmina_active_linear");
                kasmina_names.push_back("kasmina_active_conv2d");
                for (const char* name : {"cache_hit", "cache_miss", "train_step", "train_memory"}) kasmina_names.push_back(name);
            }
        }
        std::fprintf(stderr, "kasmina-bench on %s: ceilings\n", config.device.str().c_str());
        const Ceilings ceilings = measure_ceilings(config);
        std::fprintf(stderr, "kasmina-bench: workloads\n");
        std::vector<Measurement> results = run_layers(config, ceilings, layers);
        LeakCheck leak;
        const std::vector<Measurement> kasmina_results = run_kasmina(config, kasmina_names, leak);
        results.insert(results.end(), kasmina_results.begin(), kasmina_results.end());
        std::string peer_version, libtorch_version;
        // PyTorch answers the layers, kasmina_active (its composition) and train_step; LibTorch the layers only.
        const bool peer_answers = std::any_of(kasmina_names.begin(), kasmina_names.end(), [](const std::string& name) {
            return name.rfind("kasmina_active_", 0) == 0 || name == "train_step";
        });
        const PeerMedians peer = layers.empty() && !peer_answers ? PeerMedians{} : run_peer(config, peer_version);
        const PeerMedians libtorch = layers.empty() ? PeerMedians{} : run_peer_libtorch(config, layers, libtorch_version);

        // Table, JSON, chart.
        Json json{{"schema", "kasmina-bench/1"},
                  {"device", config.device.str()},
                  {"repeats", config.repeats},
                  {"ceilings", {{"copy_GBps", ceilings.copy_gbps}, {"gemm_GFLOPs", ceilings.gemm_gflops}}},
                  {"peer", peer.empty() ? Json(nullptr) : Json(peer_version)},
                  {"libtorch_peer", libtorch.empty() ? Json(nullptr) : Json(libtorch_version)},
                  {"results", Json::array()}};
        std::printf("\n%s: copy %.0f GB/s, fp32 GEMM %.0f GFLOP/s (measured); peer %s%s%s\n", config.device.str().c_str(),
                    ceilings.copy_gbps, ceilings.gemm_gflops, peer.empty() ? "none" : peer_version.c_str(),
                    libtorch.empty() ? "" : ", ", libtorch_version.c_str());
        std::printf("%-26s %-12s %12s %9s %12s %8s %10s %8s%s\n", "workload", "pass", "kasmina us", "spread", "pytorch us",
                    "ratio", "floor us", "/floor", libtorch.empty() ? "" : "  libtorch us  ratio");
        std::vector<std::pair<std::string, double>> ratios;
        std::vector<PeakRow> peaks;
        for (const Measurement& m : results) {
            const auto found = peer.find({m.workload, m.pass});
            // The peer runs the BENCHMARKS.md sizes: no comparison for a workload whose size was overridden.
            const bool compared = found != peer.end() && !config.sizes.count(m.workload);
            const double peer_us = compared ? found->second.median_us : 0.0;
            const double peer_peak = compared ? found->second.peak_bytes : 0.0;
            const double ratio = peer_us > 0 ? peer_us / m.median() : m.reference_us > 0 ? m.reference_us / m.median() : 0.0;
            const double spread = m.median() > 0 ? (m.quantile(0.9) - m.quantile(0.1)) / m.median() : 0.0;
            std::printf("%-26s %-12s %12.1f %8.1f%% %12s %8s %10s %8s", m.workload.c_str(), m.pass.c_str(), m.median(),
                        100 * spread, peer_us > 0 ? make_message(peer_us).c_str() : "-",
                        ratio > 0 ? make_message(std::round(ratio * 100) / 100).c_str() : "-",
                        m.floor_us > 0 ? make_message(std::round(m.floor_us * 10) / 10).c_str() : "-",
                        m.floor_us > 0 ? make_message(std::round(m.median() / m.floor_us * 100) / 100).c_str() : "-");
            const auto found_libtorch = libtorch.find({m.workload, m.pass});
            const double libtorch_us = found_libtorch == libtorch.end() ? 0.0 : found_libtorch->second.median_us;
            if (libtorch_us > 0) std::printf("  %11.1f %6.2f", libtorch_us, libtorch_us / m.median());
            std::printf("\n");
            if (peer_us > 0) ratios.emplace_back(m.workload + " " + m.pass, ratio);
            const bool is_miss = m.workload == "cache_miss";
            json["results"].push_back({{"workload", m.workload},
                                       {"pass", m.pass},
                                       {"implementation", "kasmina"},
                                       {"median_us", m.median()},
                                       {"p10_us", m.quantile(0.1)},
                                       {"p90_us", m.quantile(0.9)},
                                       {"samples", m.samples_us.size()},
                                       {"floor_us", m.floor_us},
                                       {"peer_median_us", peer_us > 0 ? Json(peer_us) : Json(nullptr)},
                                       {"libtorch_median_us", libtorch_us > 0 ? Json(libtorch_us) : Json(nullptr)},
                                       {"plain_median_us", m.reference_us > 0 && !is_miss ? Json(m.reference_us) : Json(nullptr)},
                                       {"bound_median_us", m.reference_us > 0 && is_miss ? Json(m.reference_us) : Json(nullptr)},
                                       {"peak_bytes", m.peak_bytes > 0 ? Json(m.peak_bytes) : Json(nullptr)},
                                       {"peer_peak_bytes", peer_peak > 0 ? Json(peer_peak) : Json(nullptr)}});
            if (m.peak_bytes > 0) peaks.push_back({m.workload, m.pass, m.peak_bytes, peer_peak});
        }
        print_memory(peaks, leak, config);
        if (leak.ran()) json["leak_check"] = leak_json(leak);
        const std::filesystem::path json_path(config.json_path), svg_path(config.svg_path);
        if (json_path.has_parent_path()) std::filesystem::create_directories(json_path.parent_path());
        if (svg_path.has_parent_path()) std::filesystem::create_directories(svg_path.parent_path());
        std::ofstream(config.json_path) << json.dump(2) << "\n";
        if (!ratios.empty())
            write_svg(config.svg_path, ratios, "kasmina vs PyTorch on " + config.device.str() + " (peer time / our time)");
        std::printf("ratio: PyTorch time / kasmina time (layers); plain layer / dormant wrapped layer (kasmina_dormant);\n"
                    "       PyTorch's plain-module composition (ours without a peer) / Kasmina layer (kasmina_active);\n"
                    "       the file read and one copy to the device / a miss (cache_miss)\n");
        std::printf("JSON %s%s%s\n", config.json_path.c_str(), ratios.empty() ? "" : ", chart ",
                    ratios.empty() ? "" : config.svg_path.c_str());
        return 0;
    } catch (const Error& error) {
        std::fprintf(stderr, "kasmina-bench: %s\n", error.what());
        return 2;
    }
}
