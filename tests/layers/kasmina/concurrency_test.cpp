// Concurrency: a controller thread loads, unloads, ramps and fossilizes seeds at random on two
// models (one running its bottleneck seeds as fused groups) while two training threads run forward,
// backward and optimizer steps on them; both models share one kernel cache (small enough to evict).
// Run under ThreadSanitizer by `tools/test --tsan`.
// KASMINA_CONCURRENCY_STEPS sets the steps per trainer (default 10,000).
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

int64_t steps_per_trainer() {
    const char* value = std::getenv("KASMINA_CONCURRENCY_STEPS");
    return value ? std::max<int64_t>(1, std::atoll(value)) : 10000;
}

std::shared_ptr<nn::Sequential> small_network() {
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(8, 8), std::make_shared<nn::LayerNorm>(Shape{8}), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Linear>(8, 4)});
}

}  // namespace

TEST(KasminaConcurrency, TwoTrainersShareACacheWhileAControllerMorphsBoth) {
    const auto directory = std::filesystem::temp_directory_path() / "kasmina_concurrency_two_trainers";
    std::filesystem::remove_all(directory);
    auto store = std::make_shared<DirectoryStore>(directory.string());
    auto cache = std::make_shared<KernelCache>(store, CacheOptions{.max_entries = 3});  // evicts while seeds hold kernels
    manual_seed(8);
    std::vector<std::shared_ptr<nn::Sequential>> networks{small_network(), small_network()};
    std::vector<std::unique_ptr<MorphableModel>> models;
    for (auto& network : networks) models.push_back(std::make_unique<MorphableModel>(wrap(network, {.cache = cache})));
    // Kernels per layer: two bottlenecks for each Linear, an affine for the LayerNorm.
    const std::map<std::string, std::vector<uint64_t>> kernels{
        {"0", {store->write(serialize_artifact(make_linear_bottleneck(8, 8, 2))),
               store->write(serialize_artifact(make_linear_bottleneck(8, 8, 3)))}},
        {"1", {store->write(serialize_artifact(make_norm_affine({8}, -1)))}},
        {"3", {store->write(serialize_artifact(make_linear_bottleneck(8, 4, 2))),
               store->write(serialize_artifact(make_linear_bottleneck(8, 4, 3)))}}};
    const std::vector<std::string> layers{"0", "1", "3"};
    // Model 1 runs its bottleneck seeds as fused groups (the GPU's default), model 0 per seed (the CPU's).
    for (const std::string& layer : {"0", "3"}) models[1]->layer(layer).seeds().set_fusion(SeedBank::Fusion::on);

    const int64_t steps = steps_per_trainer();
    std::atomic<int> trainers_running{2};
    std::atomic<int64_t> operations{0}, refused{0};
    std::thread controller([&] {
        Generator choices(17);
        while (trainers_running.load() > 0) {
            const auto draw = Tensor::rand({5}, {.dtype = DType::f64}, &choices).to_vector<double>();
            MorphableModel& model = *models[draw[0] < 0.5 ? 0 : 1];
            const std::string& layer = layers[static_cast<size_t>(draw[1] * layers.size())];
            const int seed = static_cast<int>(draw[2] * 4);
            const auto& ids = kernels.at(layer);
            try {
                const SeedLifecycle lifecycle = model.layer(layer).layer_stats()[seed].lifecycle;
                if (lifecycle == SeedLifecycle::dormant)
                    model.load_kernel(layer, seed, ids[static_cast<size_t>(draw[3] * ids.size())], {.alpha = 0.0, .trainable = draw[4] < 0.5});
                else if (draw[3] < 0.4) model.unload_kernel(layer, seed);
                else if (draw[3] < 0.97) model.ramp_alpha(layer, seed, draw[4] * 0.5, 1 + static_cast<int64_t>(draw[4] * 20));
                else if (seed == 3) model.fossilize(layer, seed);  // one slot per layer may fossilize; the rest keep cycling
                ++operations;
            } catch (const Error&) {
                ++refused;  // an illegal transition (e.g. unloading a fossil) or a race lost: allowed
            }
        }
    });
    std::vector<std::thread> trainers;
    std::atomic<int64_t> non_finite{0}, wrong_shape{0};
    for (int t = 0; t < 2; ++t) {
        trainers.emplace_back([&, t] {
            Generator data(100 + t);
            MorphableModel& model = *models[t];
            for (int64_t step = 0; step < steps; ++step) {
                // Parameters change as kernels come and go: plain SGD on whatever the model holds now.
                Tensor x = Tensor::randn({4, 8}, {}, &data);
                const Tensor y = model.forward(x);
                const Tensor loss = mean(y * y);
                loss.backward();
                std::vector<Tensor> parameters;
                for (auto& [name, parameter] : model.module()->named_parameters())
                    if (parameter.requires_grad()) parameters.push_back(parameter);
                optim::SGD sgd(parameters, {.lr = 0.01});
                sgd.step();
                sgd.zero_grad();
                if (y.shape() != Shape{4, 4}) ++wrong_shape;
                if (!std::isfinite(loss.item())) ++non_finite;
            }
            --trainers_running;
        });
    }
    for (auto& trainer : trainers) trainer.join();
    controller.join();

    EXPECT_EQ(non_finite.load(), 0);
    EXPECT_EQ(wrong_shape.load(), 0);
    EXPECT_GT(operations.load(), 100);
    int64_t fused_runs = 0;
    for (const std::string& layer : {"0", "3"}) {
        fused_runs += models[1]->layer(layer).seeds().fused_group_runs();
        EXPECT_EQ(models[0]->layer(layer).seeds().fused_group_runs(), 0);
    }
    EXPECT_GT(fused_runs, 0) << "two bottleneck seeds of one layer blending at once: a fused group";
    const CacheStats stats = cache->stats();
    EXPECT_LE(stats.entries, 3u);
    for (const auto& model : models)
        for (const std::string& layer : layers)
            for (const SeedReport& report : model->layer(layer).layer_stats()) {
                EXPECT_NE(report.lifecycle, SeedLifecycle::loading) << "no seed left half-loaded";
                if (report.lifecycle == SeedLifecycle::active || report.lifecycle == SeedLifecycle::fossilized)
                    EXPECT_NE(report.kernel_id, 0u);
            }
    std::printf("[ figure   ] %ld steps per trainer x 2, %ld control operations applied, %ld refused, %ld fused group runs; "
                "cache %lu hits, %lu misses, %lu evictions\n",
                static_cast<long>(steps), static_cast<long>(operations.load()), static_cast<long>(refused.load()),
                static_cast<long>(fused_runs),
                static_cast<unsigned long>(stats.hits), static_cast<unsigned long>(stats.misses),
                static_cast<unsigned long>(stats.evictions));
    std::filesystem::remove_all(directory);
}

// wrap() builds its variants from scratch draws: a thread drawing from the process-wide stream at the same
// time gets exactly the numbers it would get alone (wrap() used to borrow that stream and rewind it, so two
// ranks as threads started from different initial weights).
TEST(KasminaConcurrency, WrapLeavesTheRandomStreamOfOtherThreadsAlone) {
    manual_seed(21);
    std::vector<std::shared_ptr<nn::Sequential>> networks;
    for (int i = 0; i < 20; ++i) networks.push_back(small_network());
    const uint64_t start = default_generator().offset();
    std::vector<std::vector<float>> draws;
    std::thread drawer([&] {
        for (int i = 0; i < 200; ++i) draws.push_back(Tensor::rand({16}).to_vector<float>());
    });
    std::thread wrapper([&] {
        for (auto& network : networks) (void)wrap(network);
    });
    drawer.join();
    wrapper.join();
    Generator alone(21);
    alone.set_offset(start);
    for (size_t i = 0; i < draws.size(); ++i) ASSERT_EQ(draws[i], Tensor::rand({16}, {}, &alone).to_vector<float>()) << "draw " << i;
    EXPECT_EQ(default_generator().offset(), start + 200 * 16);
}
