// The Kasmina workloads of BENCHMARKS.md at the CPU sizes:
//   kasmina_dormant  each layer kind wrapped (4 seeds, none active) against the plain layer, timed
//                    alternately in the same loop; the "ratio" counter is kasmina time / plain time.
//   kasmina_active   Linear and Conv2d with 2 of 4 seeds active (bottleneck kernels of width 64,
//                    alpha 0.3 each) against the same composition written with plain modules and
//                    elementwise ops (what a user of a framework without fused blends writes);
//                    "speedup" is composition time / Kasmina time. The PyTorch composition is in
//                    bench/peer_layers.py.
//   cache_hit / cache_miss / load_kernel  for a 1 MiB artifact.
#include <benchmark/benchmark.h>

#include <chrono>
#include <filesystem>

#include "bench/kasmina_workloads.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_network.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"

using namespace kasmina;
using namespace kasmina::bench;
using namespace kasmina::morph;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_of(const std::function<void()>& work) {
    const auto start = Clock::now();
    work();
    return std::chrono::duration<double>(Clock::now() - start).count();
}

std::shared_ptr<KernelCache> scratch_cache(const std::string& name) {
    const auto directory = std::filesystem::temp_directory_path() / ("kasmina_bench_" + name);
    std::filesystem::remove_all(directory);
    return std::make_shared<KernelCache>(std::make_shared<DirectoryStore>(directory.string()));
}

// Plain layer and its wrapped twin (same weights), each inside a one-layer Sequential.
struct DormantPair {
    std::shared_ptr<nn::Sequential> plain, wrapped;
    Tensor input;
};

DormantPair make_dormant_pair(const std::string& name) {
    LayerWorkload original = make_layer_workload(name), twin = make_layer_workload(name);
    DormantPair pair{std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{original.module}),
                     std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{twin.module}),
                     original.input};
    wrap(pair.wrapped, {.cache = scratch_cache("dormant_" + name)});
    return pair;
}

void BM_KasminaDormant(benchmark::State& state, const std::string& name, bool backward) {
    DormantPair pair = make_dormant_pair(name);
    Tensor x = pair.input.clone().set_requires_grad(backward);
    auto run = [&](nn::Module& model) {
        if (!backward) {
            NoGradGuard no_grad;
            benchmark::DoNotOptimize(model.forward(x));
            return;
        }
        model.zero_grad();
        x.set_grad({});
        sum(model.forward(x)).backward();
    };
    double plain = 0, kasmina = 0;
    for (auto _ : state) {
        plain += seconds_of([&] { run(*pair.plain); });
        const double k = seconds_of([&] { run(*pair.wrapped); });
        kasmina += k;
        state.SetIterationTime(k);
    }
    state.counters["plain_us"] = 1e6 * plain / static_cast<double>(state.iterations());
    state.counters["ratio"] = kasmina / plain;
}

// ---- kasmina_active -----------------------------------------------------------------------------

void BM_KasminaActive(benchmark::State& state, const std::string& name, bool backward) {
    ActivePair pair = make_active_pair(name, scratch_cache("active_" + name));
    Tensor x = pair.input.clone().set_requires_grad(backward);
    auto run = [&](const std::function<Tensor(const Tensor&)>& forward) {
        if (!backward) {
            NoGradGuard no_grad;
            benchmark::DoNotOptimize(forward(x));
            return;
        }
        x.set_grad({});
        sum(forward(x)).backward();
    };
    const auto composition = [&](const Tensor& input) { return pair.composition.forward(input); };
    const auto kasmina = [&](const Tensor& input) { return pair.kasmina->forward(input); };
    SeedBank& bank = dynamic_cast<KasminaLayerBase&>(*pair.kasmina).seeds();
    // The timed layer runs with the default (automatic) seed fusion, per seed on the CPU; fused_us is
    // the same layer with fusion forced on, for comparison.
    double plain = 0, layer = 0, forced = 0;
    for (auto _ : state) {
        if (backward) pair.host_copy->zero_grad(), pair.kasmina->zero_grad();
        plain += seconds_of([&] { run(composition); });
        bank.set_fusion(SeedBank::Fusion::on);
        forced += seconds_of([&] { run(kasmina); });
        bank.set_fusion(SeedBank::Fusion::automatic);
        const double k = seconds_of([&] { run(kasmina); });
        layer += k;
        state.SetIterationTime(k);
    }
    state.counters["composition_us"] = 1e6 * plain / static_cast<double>(state.iterations());
    state.counters["fused_us"] = 1e6 * forced / static_cast<double>(state.iterations());
    state.counters["speedup"] = plain / layer;
}

// ---- cache -------------------------------------------------------------------------------------

// A linear bottleneck 512 -> 256 -> 512: 262,912 float32 weights, 1.0 MiB.
uint64_t store_one_mebibyte_kernel(KernelCache& cache, uint64_t seed) {
    Generator generator(seed);
    return cache.store()->write(serialize_artifact(make_linear_bottleneck(512, 512, 256, kAlpha, "1MiB", &generator)));
}

void BM_CacheHit(benchmark::State& state) {
    auto cache = scratch_cache("hit");
    const uint64_t id = store_one_mebibyte_kernel(*cache, 1);
    cache->get(id, Device::cpu());
    for (auto _ : state) benchmark::DoNotOptimize(cache->get(id, Device::cpu()));
}

void BM_CacheMiss(benchmark::State& state) {
    const auto directory = std::filesystem::temp_directory_path() / "kasmina_bench_miss";
    std::filesystem::remove_all(directory);
    auto cache = std::make_shared<KernelCache>(std::make_shared<DirectoryStore>(directory.string()), CacheOptions{.max_entries = 1});
    const uint64_t ids[2] = {store_one_mebibyte_kernel(*cache, 1), store_one_mebibyte_kernel(*cache, 2)};
    int64_t i = 0;
    for (auto _ : state) benchmark::DoNotOptimize(cache->get(ids[i++ % 2], Device::cpu()));  // every get evicts the other
    state.counters["misses"] = static_cast<double>(cache->stats().misses);
}

// load_kernel + unload_kernel of a cached, frozen 1 MiB kernel: no disk, no weight copy.
void BM_LoadKernelCached(benchmark::State& state) {
    auto cache = scratch_cache("load");
    const uint64_t id = store_one_mebibyte_kernel(*cache, 1);
    nn::Linear linear(512, 512);
    KasminaLayer layer(linear, {.cache = cache});
    for (auto _ : state) {
        layer.load_kernel(0, id, {.trainable = false});
        layer.unload_kernel(0);
    }
}

}  // namespace

#define KASMINA_DORMANT_BENCH(name)                                                                  \
    BENCHMARK_CAPTURE(BM_KasminaDormant, name##_fwd, std::string(#name), false)                       \
        ->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);                                \
    BENCHMARK_CAPTURE(BM_KasminaDormant, name##_fwd_bwd, std::string(#name), true)                    \
        ->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);

KASMINA_DORMANT_BENCH(linear)
KASMINA_DORMANT_BENCH(conv2d)
KASMINA_DORMANT_BENCH(mha)
KASMINA_DORMANT_BENCH(layernorm)
KASMINA_DORMANT_BENCH(batchnorm2d)
KASMINA_DORMANT_BENCH(batchnorm1d)

BENCHMARK_CAPTURE(BM_KasminaActive, linear_fwd, std::string("linear"), false)->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);
BENCHMARK_CAPTURE(BM_KasminaActive, linear_fwd_bwd, std::string("linear"), true)->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);
BENCHMARK_CAPTURE(BM_KasminaActive, conv2d_fwd, std::string("conv2d"), false)->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);
BENCHMARK_CAPTURE(BM_KasminaActive, conv2d_fwd_bwd, std::string("conv2d"), true)->Unit(benchmark::kMicrosecond)->UseManualTime()->MinTime(0.5);
BENCHMARK(BM_CacheHit)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CacheMiss)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LoadKernelCached)->Unit(benchmark::kMicrosecond);
