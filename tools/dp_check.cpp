// kasmina-dp-check: data-parallel training checked against one process. Launches --nproc ranks (NCCL,
// one GPU each) that train the demo network with SyncBatchNorm on their shares of each global batch,
// with seeds germinated mid-run (a conv and a linear bottleneck, ramped in; one later fossilized, the
// other unloaded) through DistributedSeedCommands; then trains the same network in one process on the
// whole global batches, compares every weight and buffer, and reports the train-step times (scaling).
// Exit status: 0 when the weights agree, 1 when they do not, 77 when the machine lacks the GPUs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>

#include "distributed/data_parallel.h"
#include "distributed/launcher.h"
#include "distributed/process_group.h"
#include "distributed/seed_control.h"
#include "kasmina.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/seed_commands.h"
#include "layers/kasmina/wrap.h"
#include "tools/command_line.h"
#include "tools/train/fashion_mnist.h"
#include "tools/train/model.h"

using namespace kasmina;
using Json = nlohmann::json;

namespace {

struct Config {
    int nproc = 2;
    int steps = 100;
    int64_t global_batch = 64;
    int germinate_at = 50;
    std::string out = "runs/dp-check";
    double lr = 0.01;
    // float64 by default: float32 rounding differences (a different summation order, as any batch split
    // or thread count gives) grow over many steps of this network, so in float32 two exact runs drift apart
    // to ~1e-1 in 100 steps; in float64 the same drift stays far below float32's tolerance.
    DType dtype = DType::f64;
    bool cpu_threads = false;  // ranks as threads on the CPU (ThreadProcessGroup): the same check without GPUs
    double tolerance = 1e-5;  // relative to each tensor's largest magnitude (max(1, |x|)): float32's tolerance
};

struct RunResult {
    TensorMap state;                 // weights and buffers on the CPU
    std::vector<double> step_seconds;
};

std::vector<Tensor> trainable(const nn::Module& module) {
    std::vector<Tensor> result;
    for (auto& [name, tensor] : module.named_parameters())
        if (tensor.requires_grad()) result.push_back(tensor);
    return result;
}

// The seed plan: at `germinate_at` a conv bottleneck into conv2 and a linear one into fc1, both ramped
// 0 -> 0.3 over 10 steps; 30 steps later fc1's is fossilized and conv2's unloaded.
bool seed_plan(morph::SeedCommands& commands, morph::KernelStore& store, int step, const Config& config) {
    if (step == config.germinate_at) {
        Generator generator(17);
        const uint64_t conv = store.write(morph::serialize_artifact(
            morph::make_conv_bottleneck(32, 64, 16, {3, 3}, {2, 2}, {1, 1}, {1, 1}, 0.3, "conv-bottleneck", &generator)));
        const uint64_t fc = store.write(morph::serialize_artifact(morph::make_linear_bottleneck(64, 128, 32, 0.3, "fc-bottleneck", &generator)));
        commands.load_kernel("conv2", 0, conv, {.alpha = 0.0});
        commands.ramp_alpha("conv2", 0, 0.3, 10);
        commands.load_kernel("fc1", 0, fc, {.alpha = 0.0});
        commands.ramp_alpha("fc1", 0, 0.3, 10);
        return true;
    }
    if (step == config.germinate_at + 30) {
        commands.fossilize("fc1", 0);
        commands.unload_kernel("conv2", 0);
        return true;
    }
    return false;
}

// Fashion-MNIST's training images, read once per process (ranks as threads share them).
const train::Dataset& dataset() {
    static const train::Dataset train_set = train::load_fashion_mnist(train::fashion_mnist_directory()).train;
    return train_set;
}

// Trains `config.steps` steps on cuda:`device`: alone (group null) on whole batches, or as one rank.
RunResult train_run(const Config& config, const std::shared_ptr<dist::ProcessGroup>& group, Device gpu) {
    const int rank = group ? group->rank() : 0, world = group ? group->world_size() : 1;
    if (config.global_batch % world != 0)
        raise<Error>("kasmina-dp-check", "the global batch ", config.global_batch, " does not split over ", world, " ranks");
    const int64_t local_batch = config.global_batch / world;
    static std::mutex construction;  // ranks as threads (--cpu-threads) share the default generator
    std::unique_lock lock(construction);
    manual_seed(1);
    auto network = std::make_shared<train::FashionNet>();
    network->to(gpu);
    network->to(config.dtype);
    lock.unlock();
    const std::string store_directory = config.out + (group ? "/store-rank" + std::to_string(rank) : std::string("/store-single"));
    std::filesystem::remove_all(store_directory);
    auto store = std::make_shared<morph::DirectoryStore>(store_directory);
    morph::MorphableModel model = morph::wrap(network, {.cache = std::make_shared<morph::KernelCache>(store)});
    optim::SGD optimizer(trainable(*network), {.lr = config.lr, .momentum = 0.9});
    std::unique_ptr<dist::DataParallel> parallel;
    std::unique_ptr<morph::SeedCommands> commands;
    if (group) {
        parallel = std::make_unique<dist::DataParallel>(network, group, dist::DataParallelOptions{.sync_batch_norm = true});
        commands = std::make_unique<dist::DistributedSeedCommands>(group, model, store);
    } else {
        commands = std::make_unique<morph::LocalSeedCommands>(model);
    }
    RunResult result;
    const train::Dataset& data = dataset();
    for (int step = 0; step < config.steps; ++step) {
        // The same global batch on every rank (Fashion-MNIST in file order); each takes its slice.
        const int64_t first = (static_cast<int64_t>(step) * config.global_batch) % (data.labels.size(0) - config.global_batch);
        const Tensor images = data.images.narrow(0, first, config.global_batch);
        const Tensor labels = data.labels.narrow(0, first, config.global_batch);
        bool changed = false;
        if (!group || rank == 0) {
            changed = seed_plan(*commands, *store, step, config);
            if (group) static_cast<dist::DistributedSeedCommands&>(*commands).finish();
        } else {
            changed = static_cast<dist::DistributedSeedCommands&>(*commands).serve() > 0;
        }
        if (changed) optimizer.set_parameters(trainable(*network));
        const auto start = std::chrono::steady_clock::now();
        optimizer.zero_grad();
        const Tensor local_images = images.narrow(0, rank * local_batch, local_batch).to(config.dtype).to(gpu);
        const Tensor local_labels = labels.narrow(0, rank * local_batch, local_batch).to(gpu);
        const Tensor logits = parallel ? parallel->forward(local_images) : network->forward(local_images);
        const Tensor loss = cross_entropy(logits, local_labels);
        loss.backward();
        if (parallel) parallel->synchronize_gradients();
        optimizer.step();
        const double value = loss.item();  // waits for the step
        if (!std::isfinite(value)) raise<Error>("kasmina-dp-check", "loss became ", value, " at step ", step);
        result.step_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    for (const auto& [name, tensor] : network->named_parameters()) result.state[name] = tensor.detach().to(Device::cpu());
    for (const auto& [name, tensor] : network->named_buffers()) result.state[name] = tensor.detach().to(Device::cpu());
    return result;
}

// The median step time over the steady steps (after warm-up, away from the seed changes).
double median_step(const std::vector<double>& seconds, const Config& config) {
    std::vector<double> steady;
    for (int s = 5; s < static_cast<int>(seconds.size()); ++s)
        if (std::abs(s - config.germinate_at) > 2 && std::abs(s - config.germinate_at - 30) > 2) steady.push_back(seconds[static_cast<size_t>(s)]);
    if (steady.empty()) return 0;
    std::nth_element(steady.begin(), steady.begin() + static_cast<long>(steady.size() / 2), steady.end());
    return steady[steady.size() / 2];
}

DType parse_dtype(const std::string& text) {
    if (text == "f64" || text == "float64") return DType::f64;
    if (text == "f32" || text == "float32") return DType::f32;
    throw Error("--dtype expects f32 or f64, got '" + text + "'");
}

Config parse(int argc, char** argv) {
    Config config;
    for (tools::CommandLine line(argc, argv); line.next();) {
        const std::string& flag = line.flag();
        auto value = [&] { return line.value(); };
        auto number = [&](double low, double high) { return line.number(low, high); };
        if (flag == "--nproc") config.nproc = static_cast<int>(number(1, 64));
        else if (flag == "--steps") config.steps = static_cast<int>(number(1, 1e7));
        else if (flag == "--global-batch") config.global_batch = static_cast<int64_t>(number(2, 1 << 20));
        else if (flag == "--germinate-at") config.germinate_at = static_cast<int>(number(0, 1e7));
        else if (flag == "--out") config.out = value();
        else if (flag == "--tolerance") config.tolerance = number(0, 1e9);
        else if (flag == "--cpu-threads") config.cpu_threads = true;
        else if (flag == "--lr") config.lr = number(0, 10);
        else if (flag == "--dtype") config.dtype = parse_dtype(value());
        else throw Error("unknown option '" + flag + "' (kasmina-dp-check [--nproc N] [--steps N] [--global-batch N] "
                         "[--germinate-at STEP] [--out DIR] [--tolerance X])");
    }
    return config;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Config config = parse(argc, argv);
        std::filesystem::create_directories(config.out);
        if (dist::LaunchEnvironment::present()) {  // one rank of the job
            const dist::LaunchEnvironment environment = dist::LaunchEnvironment::from_environment();
            const auto group = dist::init_process_group(environment);
            const RunResult result = train_run(config, group, Device::cuda(environment.local_rank));
            if (group->rank() == 0) {
                save_safetensors(config.out + "/weights-parallel.safetensors", result.state);
                std::ofstream(config.out + "/steps-parallel.json") << Json(result.step_seconds).dump() << '\n';
            }
            group->barrier();
            return 0;
        }
        if (config.cpu_threads) {
            auto groups = dist::ThreadProcessGroup::create(config.nproc);
            std::vector<std::string> errors(groups.size());
            std::vector<std::thread> threads;
            for (int r = 0; r < config.nproc; ++r)
                threads.emplace_back([&, r] {
                    try {
                        const RunResult result = train_run(config, groups[static_cast<size_t>(r)], Device::cpu());
                        if (r == 0) {
                            save_safetensors(config.out + "/weights-parallel.safetensors", result.state);
                            std::ofstream(config.out + "/steps-parallel.json") << Json(result.step_seconds).dump() << '\n';
                        }
                    } catch (const std::exception& error) {
                        errors[static_cast<size_t>(r)] = error.what();
                    }
                });
            for (auto& thread : threads) thread.join();
            for (int r = 0; r < config.nproc; ++r)
                if (!errors[static_cast<size_t>(r)].empty()) throw Error(make_message("rank ", r, ": ", errors[static_cast<size_t>(r)]));
        } else if (!dist::nccl_available() || cuda_device_count() < config.nproc) {
            std::printf("SKIP: kasmina-dp-check needs NCCL and %d GPU(s); this machine has %d GPU(s), NCCL %s\n", config.nproc,
                        cuda_device_count(), dist::nccl_available() ? "built" : "not built");
            return 77;
        } else {
            const int status = dist::relaunch_self(config.nproc, argc, argv);
            if (status != 0) {
                std::fprintf(stderr, "kasmina-dp-check: the %d-rank run failed (status %d)\n", config.nproc, status);
                return status;
            }
        }
        const RunResult single = train_run(config, nullptr, config.cpu_threads ? Device::cpu() : Device::cuda(0));
        save_safetensors(config.out + "/weights-single.safetensors", single.state);
        const SafetensorsContent parallel = load_safetensors(config.out + "/weights-parallel.safetensors");
        const std::vector<double> parallel_steps = Json::parse(std::ifstream(config.out + "/steps-parallel.json")).get<std::vector<double>>();

        double worst = 0;
        std::string worst_name;
        for (const auto& [name, expected] : single.state) {
            const Tensor actual = parallel.tensors.at(name).to(DType::f64), reference = expected.to(DType::f64);
            const double scale = std::max(1.0, max(abs(reference)).item());
            const double difference = max(abs(actual - reference)).item() / scale;
            if (difference >= worst) worst = difference, worst_name = name;
        }
        const double t1 = median_step(single.step_seconds, config), tn = median_step(parallel_steps, config);
        const bool agree = worst <= config.tolerance;
        std::printf("kasmina-dp-check: %d steps, global batch %lld, %s, seeds germinated at step %d\n", config.steps,
                    (long long)config.global_batch, dtype_name(config.dtype), config.germinate_at);
        std::printf("  weights and buffers: largest difference %.3g (relative, in %s) -> %s (tolerance %.1g)\n", worst, worst_name.c_str(),
                    agree ? "agree" : "DIFFER", config.tolerance);
        std::printf("  train step (median): one process %.3f ms, %d ranks %.3f ms; speedup %.2f, scaling efficiency %.0f%%\n", t1 * 1e3,
                    config.nproc, tn * 1e3, t1 / tn, 100.0 * t1 / tn / config.nproc);
        std::ofstream(config.out + "/dp-check.json")
            << Json{{"nproc", config.nproc}, {"steps", config.steps}, {"global_batch", config.global_batch}, {"dtype", dtype_name(config.dtype)},
                    {"largest_relative_difference", worst}, {"in", worst_name}, {"agree", agree},
                    {"step_ms_one_gpu", t1 * 1e3}, {"step_ms_parallel", tn * 1e3}, {"speedup", t1 / tn},
                    {"scaling_efficiency", t1 / tn / config.nproc}}
                   .dump(2)
            << '\n';
        return agree ? 0 : 1;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "kasmina-dp-check: %s\n", error.what());
        return 2;
    }
}
