// kasmina-train: morphogenetic training on Fashion-MNIST, end to end. Trains the demo network
// (tools/train/model.h) wrapped with Kasmina layers; at a validation plateau the controller
// germinates seeds, ramps them in, and keeps or unloads them. Writes a JSON report, the telemetry
// JSON-lines file and a checkpoint from which --resume continues bit for bit.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "distributed/data_parallel.h"
#include "distributed/launcher.h"
#include "distributed/seed_control.h"
#include "kasmina.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"
#include "tools/command_line.h"
#include "tools/train/controller.h"
#include "tools/train/fashion_mnist.h"
#include "tools/train/model.h"

using namespace kasmina;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
    std::string device = cuda_is_available() ? "cuda" : "cpu";
    int epochs = 6;
    int64_t batch_size = 128;
    int64_t width = train::FashionNet::kDefaultWidth;  // the host's base channel count
    uint64_t seed = 1;
    bool seeds = true;
    std::string out = "runs/fashion-mnist";
    std::string data_dir;
    std::string store;
    std::string optimizer = "adamw";
    double lr = 2e-3;
    bool resume = false;
    int64_t validation = 5000;
    int64_t train_limit = 0;  // training images used (0: all but the validation hold-out)
    int64_t test_limit = 0;   // test images evaluated (0: all)
    int stop_after = 0;       // stop (checkpoint written) after this epoch, as if interrupted (0: never)
    int nproc = 1;            // data-parallel ranks (one GPU each, NCCL); the batch size is the global batch
    bool sync_batch_norm = false;
    train::ControllerOptions controller;
};

void usage(FILE* stream) {
    std::fprintf(stream,
                 "usage: kasmina-train [--quick] [--device cpu|cuda] [--epochs N] [--batch-size N] [--seed N] [--no-seeds]\n"
                 "                     [--width N] [--out DIR] [--data-dir DIR] [--store DIR] [--optimizer adamw|sgd] [--lr X]\n"
                 "                     [--plateau-delta POINTS] [--min-epoch N] [--latest-epoch N] [--alpha X] [--ramp-steps N] [--seed-hidden N]\n"
                 "                     [--keep-margin POINTS] [--resume]\n"
                 "                     [--train-limit N] [--validation N] [--test-limit N] [--stop-after EPOCH]\n"
                 "                     [--nproc N] [--sync-bn]\n"
                 "Trains the demo network on Fashion-MNIST with Kasmina seeds (see README). --quick: 3 short\n"
                 "epochs on a subset, seeds 16 wide germinated after the first (later flags override it).\n"
                 "--nproc N: data-parallel over N GPUs (NCCL, one process each, the batch split between them); the\n"
                 "controller runs on rank 0 and its seed commands reach every rank at the same step. --sync-bn:\n"
                 "batch-norm statistics over the global batch (default: per rank, like PyTorch DDP).\n");
}

Config parse(int argc, char** argv) {
    Config config;
    for (tools::CommandLine line(argc, argv); line.next();) {
        const std::string& flag = line.flag();
        auto value = [&] { return line.value(); };
        auto number = [&](double low, double high) { return line.number(low, high); };
        if (flag == "--help" || flag == "-h") {
            usage(stdout);
            std::exit(0);
        } else if (flag == "--quick") {
            // A small end-to-end run (used by the tests): a few hundred steps on a subset, seeds
            // germinated after the first epoch and ramped in quickly. Later flags still override.
            config.epochs = 3;
            config.batch_size = 64;
            config.train_limit = 4096;
            config.validation = 1024;
            config.test_limit = 2000;
            config.controller.min_epoch = 1;
            config.controller.latest_epoch = 1;
            config.controller.ramp_steps = 20;
            config.controller.seed_hidden = 16;  // narrower kernels for the small run (half the run's time)
        } else if (flag == "--train-limit") config.train_limit = static_cast<int64_t>(number(0, 1e9));
        else if (flag == "--test-limit") config.test_limit = static_cast<int64_t>(number(0, 1e9));
        else if (flag == "--stop-after") config.stop_after = static_cast<int>(number(0, 1000));
        else if (flag == "--validation") config.validation = static_cast<int64_t>(number(1, 1e9));
        else if (flag == "--device") config.device = value();
        else if (flag == "--epochs") config.epochs = static_cast<int>(number(1, 1000));
        else if (flag == "--batch-size") config.batch_size = static_cast<int64_t>(number(2, 65536));
        else if (flag == "--width") config.width = static_cast<int64_t>(number(2, 4096));
        else if (flag == "--seed") config.seed = static_cast<uint64_t>(number(0, 1e15));
        else if (flag == "--no-seeds") config.seeds = false;
        else if (flag == "--out") config.out = value();
        else if (flag == "--data-dir") config.data_dir = value();
        else if (flag == "--store") config.store = value();
        else if (flag == "--optimizer") config.optimizer = value();
        else if (flag == "--lr") config.lr = number(0, 10);
        else if (flag == "--plateau-delta") config.controller.plateau_delta = number(-100, 100);
        else if (flag == "--min-epoch") config.controller.min_epoch = static_cast<int>(number(1, 1000));
        else if (flag == "--latest-epoch") config.controller.latest_epoch = static_cast<int>(number(0, 1000));
        else if (flag == "--keep-margin") config.controller.keep_margin = number(-100, 100);
        else if (flag == "--seed-hidden") config.controller.seed_hidden = static_cast<int64_t>(number(0, 4096));
        else if (flag == "--alpha") config.controller.target_alpha = number(0, 1);
        else if (flag == "--ramp-steps") config.controller.ramp_steps = static_cast<int64_t>(number(0, 1e9));
        else if (flag == "--resume") config.resume = true;
        else if (flag == "--nproc") config.nproc = static_cast<int>(number(1, 64));
        else if (flag == "--sync-bn") config.sync_batch_norm = true;
        else throw Error("unknown option '" + flag + "'");
    }
    if (config.optimizer != "adamw" && config.optimizer != "sgd") throw Error("--optimizer must be adamw or sgd");
    config.controller.seed = config.seed;
    if (config.store.empty()) config.store = config.out + "/store";
    return config;
}

// A permutation of [0, n) drawn from the counter-based generator (reproducible for a seed and epoch).
std::vector<int64_t> shuffled(int64_t n, uint64_t seed) {
    Generator generator(seed);
    const std::vector<double> keys = Tensor::rand({n}, {.dtype = DType::f64}, &generator).to_vector<double>();
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
    return order;
}

Tensor index_tensor(const std::vector<int64_t>& order, int64_t begin, int64_t count) {
    return Tensor::from_vector<int64_t>(std::vector<int64_t>(order.begin() + begin, order.begin() + begin + count), {count});
}

double accuracy(nn::Module& model, const Tensor& images, const Tensor& labels, Device device) {
    NoGradGuard no_grad;
    const bool was_training = model.is_training();
    model.eval();
    int64_t correct = 0;
    const int64_t n = labels.size(0), chunk = 250;  // chunks that keep the activations in the allocator cache
    for (int64_t begin = 0; begin < n; begin += chunk) {
        const int64_t count = std::min(chunk, n - begin);
        const Tensor logits = model.forward(images.narrow(0, begin, count).to(device));
        const std::vector<int64_t> predicted = argmax(logits, 1).to(Device::cpu()).to_vector<int64_t>();
        const std::vector<int64_t> truth = labels.narrow(0, begin, count).to_vector<int64_t>();
        for (int64_t i = 0; i < count; ++i) correct += predicted[i] == truth[i];
    }
    model.train(was_training);
    return 100.0 * static_cast<double>(correct) / static_cast<double>(n);
}

void progress(int epoch, int epochs, int64_t step, int64_t steps, double seconds, double loss, double accuracy) {
    const int width = 30;
    const int filled = static_cast<int>(width * step / std::max<int64_t>(steps, 1));
    std::fprintf(stderr, "\repoch %d/%d [%s%s] %lld/%lld  %.1f steps/s  loss %.4f  acc %.1f%%  ", epoch, epochs,
                 std::string(filled, '=').c_str(), std::string(width - filled, ' ').c_str(), (long long)step, (long long)steps,
                 step / std::max(seconds, 1e-9), loss, accuracy);
    if (step == steps) std::fprintf(stderr, "\n");
}

// The trainable parameters, named, in the order the optimizer holds them.
std::vector<std::pair<std::string, Tensor>> trainable(const nn::Module& model) {
    std::vector<std::pair<std::string, Tensor>> result;
    for (auto& [name, tensor] : model.named_parameters())
        if (tensor.requires_grad()) result.emplace_back(name, tensor);
    return result;
}

std::vector<Tensor> tensors_of(const std::vector<std::pair<std::string, Tensor>>& named) {
    std::vector<Tensor> result;
    for (const auto& entry : named) result.push_back(entry.second);
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    Config config;
    try {
        config = parse(argc, argv);
    } catch (const Error& error) {
        std::fprintf(stderr, "kasmina-train: %s\n", error.what());
        usage(stderr);
        return 2;
    }
    try {
        // --nproc N: relaunch this program as N ranks (the launcher's children see WORLD_SIZE).
        if (config.nproc > 1 && !dist::LaunchEnvironment::present()) return dist::relaunch_self(config.nproc, argc, argv);
        std::shared_ptr<dist::ProcessGroup> group;
        if (dist::LaunchEnvironment::present()) {
            const dist::LaunchEnvironment environment = dist::LaunchEnvironment::from_environment();
            if (config.device != "cuda" && !config.device.starts_with("cuda:"))
                throw Error("data-parallel training (--nproc) runs on GPUs: use --device cuda");
            config.device = "cuda:" + std::to_string(environment.local_rank);
            group = dist::init_process_group(environment);
            if (config.batch_size % group->world_size() != 0)
                throw Error(make_message("--batch-size ", config.batch_size, " does not split over ", group->world_size(), " ranks"));
            if (group->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) throw Error("cannot silence rank output");
        }
        const int rank = group ? group->rank() : 0, world = group ? group->world_size() : 1;
        const bool leader = rank == 0;
        const auto start = Clock::now();
        const Device device = Device::parse(config.device);
        std::filesystem::create_directories(config.out);
        const std::string directory = train::fashion_mnist_directory(config.data_dir);
        std::printf("kasmina-train: Fashion-MNIST from %s, device %s, %d epochs, batch %lld, seed %llu, %s\n", directory.c_str(),
                    device.str().c_str(), config.epochs, (long long)config.batch_size, (unsigned long long)config.seed,
                    config.seeds ? "morphogenetic (Kasmina seeds on)" : "host only (--no-seeds)");
        train::FashionMnist data = train::load_fashion_mnist(directory);
        if (config.validation >= data.train.size())
            throw Error(make_message("--validation ", config.validation, " leaves no training images (", data.train.size(), " in all)"));
        if (config.train_limit > 0 && config.train_limit + config.validation < data.train.size()) {
            // The subset keeps the hold-out at its end, as the full run does.
            const int64_t kept = config.train_limit + config.validation;
            data.train = {data.train.images.narrow(0, 0, kept), data.train.labels.narrow(0, 0, kept)};
        }
        if (config.test_limit > 0 && config.test_limit < data.test.size())
            data.test = {data.test.images.narrow(0, 0, config.test_limit), data.test.labels.narrow(0, 0, config.test_limit)};
        // Hold out the last `validation` training images for the controller's decisions.
        const int64_t train_count = data.train.size() - config.validation;
        const Tensor train_images = data.train.images.narrow(0, 0, train_count), train_labels = data.train.labels.narrow(0, 0, train_count);
        const Tensor validation_images = data.train.images.narrow(0, train_count, config.validation).to(device);
        const Tensor validation_labels = data.train.labels.narrow(0, train_count, config.validation);
        const Tensor test_images = data.test.images.to(device);

        manual_seed(config.seed);
        auto network = std::make_shared<train::FashionNet>(config.width);
        network->to(device);
        auto store = std::make_shared<morph::DirectoryStore>(config.store);
        auto cache = std::make_shared<morph::KernelCache>(store);
        auto telemetry = config.seeds && leader ? std::make_shared<morph::JsonLinesTelemetry>(config.out + "/telemetry.jsonl", config.resume) : nullptr;
        morph::WrapOptions wrap_options{.cache = cache, .telemetry = telemetry, .telemetry_interval = 100};
        if (!config.seeds) wrap_options.targets.clear();
        morph::MorphableModel model = morph::wrap(network, wrap_options);
        train::Controller controller(config.controller, store);
        std::unique_ptr<dist::DataParallel> parallel;
        std::unique_ptr<dist::DistributedSeedCommands> distributed_commands;
        if (group) {
            parallel = std::make_unique<dist::DataParallel>(network, group, dist::DataParallelOptions{.sync_batch_norm = config.sync_batch_norm});
            distributed_commands = std::make_unique<dist::DistributedSeedCommands>(group, model, store);
            controller.set_commands(distributed_commands.get());
        }

        std::vector<std::pair<std::string, Tensor>> named = trainable(*network);
        std::unique_ptr<optim::Optimizer> optimizer;
        if (config.optimizer == "adamw")
            optimizer = std::make_unique<optim::AdamW>(tensors_of(named), optim::AdamWOptions{.lr = config.lr, .weight_decay = 1e-4});
        else
            optimizer = std::make_unique<optim::SGD>(tensors_of(named), optim::SGDOptions{.lr = config.lr, .momentum = 0.9, .nesterov = true});
        optim::CosineAnnealingLR schedule(*optimizer, config.epochs, config.lr * 0.02);

        Json history = Json::array();
        int first_epoch = 1;
        double accuracy_before_germination = -1;
        const std::string checkpoint_path = config.out + "/checkpoint.safetensors";
        if (config.resume) {
            const morph::TrainingCheckpoint checkpoint = morph::load_checkpoint(checkpoint_path);
            const auto width = checkpoint.metadata.find("width");  // absent in checkpoints from before --width: 32
            const std::string saved_width =
                width == checkpoint.metadata.end() ? std::to_string(train::FashionNet::kDefaultWidth) : width->second;
            if (saved_width != std::to_string(config.width))
                raise<ArtifactError>("--resume", "checkpoint '", checkpoint_path, "' holds a host of width ", saved_width,
                                     "; this run asks for --width ", config.width, " (resume with --width ", saved_width, ")");
            // Seeds (kernels reloaded from the store), weights, optimizer: all restored or none.
            named = morph::restore_checkpoint(checkpoint, *network, *optimizer, &model);
            try {
                controller.load_state(checkpoint.metadata.at("controller"));
                history = Json::parse(checkpoint.metadata.at("history"));
                first_epoch = std::stoi(checkpoint.metadata.at("epoch")) + 1;
                accuracy_before_germination = std::stod(checkpoint.metadata.at("accuracy_before_germination"));
            } catch (const std::exception& error) {  // a missing key, malformed JSON or number
                raise<ArtifactError>("--resume", "checkpoint '", checkpoint_path,
                                     "' lacks valid epoch/controller/history/accuracy_before_germination metadata (",
                                     error.what(), ")");
            }
            schedule.set_epoch(first_epoch - 1);
            std::printf("resumed from %s after epoch %d\n", checkpoint_path.c_str(), first_epoch - 1);
        }

        const int64_t steps = train_count / config.batch_size;  // drop the last partial batch (BatchNorm needs > 1 sample)
        for (int epoch = first_epoch; epoch <= config.epochs; ++epoch) {
            network->train();
            const auto epoch_start = Clock::now();
            const std::vector<int64_t> order = shuffled(train_count, config.seed * 1000003 + static_cast<uint64_t>(epoch));
            double loss_sum = 0;
            int64_t correct = 0, seen = 0;
            const int64_t local_batch = config.batch_size / world;
            for (int64_t step = 0; step < steps; ++step) {
                const Tensor index = index_tensor(order, step * config.batch_size + rank * local_batch, local_batch);
                const Tensor images = index_select(train_images, 0, index).to(device);
                const Tensor labels = index_select(train_labels, 0, index);
                optimizer->zero_grad();
                const Tensor logits = parallel ? parallel->forward(images) : network->forward(images);
                const Tensor loss = cross_entropy(logits, labels.to(device));
                loss.backward();
                if (parallel) parallel->synchronize_gradients();
                optimizer->step();
                loss_sum += loss.item();
                const std::vector<int64_t> predicted = argmax(logits.detach(), 1).to(Device::cpu()).to_vector<int64_t>();
                const std::vector<int64_t> truth = labels.to_vector<int64_t>();
                for (size_t i = 0; i < truth.size(); ++i) correct += predicted[i] == truth[i];
                seen += static_cast<int64_t>(truth.size());
                if (leader && (step % 10 == 9 || step + 1 == steps))
                    progress(epoch, config.epochs, step + 1, steps, std::chrono::duration<double>(Clock::now() - epoch_start).count(),
                             loss_sum / (step + 1), 100.0 * correct / seen);
            }
            const double train_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
            // Rank 0 evaluates and decides; the other ranks wait for its seed commands.
            const double validation = leader ? accuracy(*network, validation_images, validation_labels, device) : 0.0;
            const double test = leader ? accuracy(*network, test_images, data.test.labels, device) : 0.0;
            std::printf("epoch %d: loss %.4f  train %.2f%%  validation %.2f%%  test %.2f%%  lr %.5f  (%.1f s)\n", epoch,
                        loss_sum / steps, 100.0 * correct / seen, validation, test, optimizer->learning_rate(), train_seconds);
            history.push_back({{"epoch", epoch},
                               {"loss", loss_sum / steps},
                               {"train_accuracy", 100.0 * correct / seen},
                               {"validation_accuracy", validation},
                               {"test_accuracy", test},
                               {"seconds", train_seconds}});
            if (config.seeds) {
                const train::Controller::Phase before = controller.phase();
                bool changed = false;
                if (leader) {
                    changed = controller.after_epoch(epoch, validation, model, [&] {
                        return accuracy(*network, validation_images, validation_labels, device);
                    });
                    if (distributed_commands) distributed_commands->finish();
                } else {
                    changed = distributed_commands->serve() > 0;
                }
                if (before == train::Controller::Phase::watching && controller.phase() != before) accuracy_before_germination = test;
                if (changed) {
                    named = trainable(*network);
                    optimizer->set_parameters(tensors_of(named));
                }
            }
            schedule.step();

            // Checkpoint: weights and buffers, optimizer state, seed state (kernel ids), controller, history.
            if (leader) {
                morph::save_checkpoint(checkpoint_path,
                                       morph::capture_checkpoint(*network, *optimizer, named, &model,
                                                                 {{"epoch", std::to_string(epoch)},
                                                                  {"width", std::to_string(config.width)},
                                                                  {"controller", controller.save_state()},
                                                                  {"history", history.dump()},
                                                                  {"accuracy_before_germination", make_message(accuracy_before_germination)}}));
            }
            if (epoch == config.stop_after) {
                std::printf("stopping after epoch %d as asked (--stop-after); continue with --resume\n", epoch);
                break;
            }
        }

        // ---- summary (rank 0 reports for the job) ------------------------------------------------------
        if (group) group->barrier();
        if (!leader) return 0;
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        const double final_test = history.empty() ? 0.0 : history.back()["test_accuracy"].get<double>();
        const morph::ModelStats stats = model.model_stats();
        std::printf("\n%-12s %-5s %-15s %-7s %-18s %-8s\n", "layer", "seed", "lifecycle", "alpha", "kernel", "params");
        Json seeds_json = Json::array();
        for (const auto& [name, reports] : stats.per_layer)
            for (const morph::SeedReport& report : reports) {
                if (report.lifecycle == morph::SeedLifecycle::dormant) continue;
                std::printf("%-12s %-5d %-15s %-7.3f %-18s %-8lld\n", name.c_str(), report.seed, morph::lifecycle_name(report.lifecycle),
                            report.alpha, morph::format_kernel_id(report.kernel_id).c_str(), (long long)report.parameter_count);
                seeds_json.push_back({{"layer", name}, {"seed", report.seed}, {"lifecycle", morph::lifecycle_name(report.lifecycle)},
                                      {"alpha", report.alpha}, {"kernel_id", morph::format_kernel_id(report.kernel_id)},
                                      {"health", report.health}, {"parameters", report.parameter_count}});
            }
        std::printf("%d Kasmina layers, %d seeds (%d fossilized, %d active); cache %llu hits / %llu misses, %llu evictions\n",
                    stats.layers, stats.seeds,
                    stats.seeds_by_lifecycle.count(morph::SeedLifecycle::fossilized) ? stats.seeds_by_lifecycle.at(morph::SeedLifecycle::fossilized) : 0,
                    stats.seeds_by_lifecycle.count(morph::SeedLifecycle::active) ? stats.seeds_by_lifecycle.at(morph::SeedLifecycle::active) : 0,
                    (unsigned long long)stats.cache.hits, (unsigned long long)stats.cache.misses, (unsigned long long)stats.cache.evictions);
        if (accuracy_before_germination >= 0)
            std::printf("test accuracy before germination %.2f%%, final %.2f%%\n", accuracy_before_germination, final_test);
        std::printf("final test accuracy %.2f%% in %.1f s; report %s/report.json\n", final_test, seconds, config.out.c_str());

        Json decisions = Json::array();
        for (const auto& d : controller.decisions())
            decisions.push_back({{"epoch", d.epoch}, {"action", d.action}, {"layer", d.layer}, {"seed", d.seed}, {"kernel", d.kernel},
                                 {"reason", d.reason}});
        const Json report = {{"config",
                              {{"device", device.str()}, {"epochs", config.epochs}, {"batch_size", config.batch_size}, {"width", config.width}, {"seed", config.seed},
                               {"seeds", config.seeds}, {"nproc", world}, {"sync_batch_norm", config.sync_batch_norm},
                               {"optimizer", config.optimizer}, {"lr", config.lr},
                               {"train_images", train_count}, {"validation_images", config.validation},
                               {"test_images", data.test.size()}}},
                             {"history", history},
                             {"accuracy_before_germination", accuracy_before_germination},
                             {"final_test_accuracy", final_test},
                             {"seconds", seconds},
                             {"decisions", decisions},
                             {"seeds", seeds_json},
                             {"cache", {{"hits", stats.cache.hits}, {"misses", stats.cache.misses}, {"evictions", stats.cache.evictions},
                                        {"bytes", stats.cache.bytes}}},
                             {"unsupported_layers", model.unsupported()}};
        std::ofstream(config.out + "/report.json") << report.dump(2) << '\n';
        return 0;
    } catch (const Error& error) {
        std::fprintf(stderr, "\nkasmina-train: %s\n", error.what());
        return 1;
    }
}
