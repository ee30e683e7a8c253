// The data-parallel machinery without a GPU: the stores, the thread process group's collectives and
// its errors, post-accumulate hooks, DataParallel against single-process training on the same global
// batch (with SyncBatchNorm and with seeds loaded mid-run through DistributedSeedCommands), and a kernel
// refused on one rank being refused on every rank.
#include <cmath>
#include <filesystem>
#include <functional>
#include <thread>

#include "autograd/hooks.h"
#include "distributed/data_parallel.h"
#include "distributed/process_group.h"
#include "distributed/seed_control.h"
#include "distributed/store.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/checkpoint.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::testing;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Runs `body(rank, group)` on one thread per rank; returns each rank's exception message ("" if none).
std::vector<std::string> run_ranks(const std::vector<std::shared_ptr<dist::ProcessGroup>>& groups,
                                   const std::function<void(int, const std::shared_ptr<dist::ProcessGroup>&)>& body) {
    std::vector<std::string> errors(groups.size());
    std::vector<std::thread> threads;
    for (size_t r = 0; r < groups.size(); ++r)
        threads.emplace_back([&, r] {
            try {
                body(static_cast<int>(r), groups[r]);
            } catch (const std::exception& error) {
                errors[r] = error.what();
            }
        });
    for (auto& thread : threads) thread.join();
    return errors;
}

void expect_no_errors(const std::vector<std::string>& errors) {
    for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace

TEST(Store, InMemorySetGetAddAndTimeout) {
    dist::InMemoryStore store(100ms);
    store.set("a", {1, 2, 3});
    EXPECT_EQ(store.get("a"), (dist::Bytes{1, 2, 3}));
    EXPECT_EQ(store.add("n", 2), 2);
    EXPECT_EQ(store.add("n", 3), 5);
    try {
        store.get("missing");
        FAIL() << "expected a timeout";
    } catch (const dist::DistributedError& error) {
        EXPECT_NE(std::string(error.what()).find("'missing'"), std::string::npos) << error.what();
    }
}

TEST(Store, TcpServesItsOwnRankAndOthersAndWaitsForKeys) {
    dist::TcpStore server("127.0.0.1", 0, /*serve=*/true, 5s);
    dist::TcpStore client("127.0.0.1", server.port(), /*serve=*/false, 5s);
    std::thread late_setter([&] {
        std::this_thread::sleep_for(50ms);
        server.set("id", {9, 8, 7});
    });
    EXPECT_EQ(client.get("id"), (dist::Bytes{9, 8, 7}));  // blocks until the other rank sets it
    late_setter.join();
    EXPECT_EQ(client.add("arrived", 1), 1);
    EXPECT_EQ(server.add("arrived", 1), 2);
    client.wait_for_count("arrived", 2);
    const dist::Bytes big(100000, 42);
    server.set("big", big);
    EXPECT_EQ(client.get("big"), big);
}

TEST(Store, TcpTimesOutWithAClearError) {
    dist::TcpStore server("127.0.0.1", 0, true, 200ms);
    try {
        server.get("never");
        FAIL() << "expected a timeout";
    } catch (const dist::DistributedError& error) {
        EXPECT_NE(std::string(error.what()).find("never"), std::string::npos) << error.what();
    }
    // Nobody serves this port: the connection attempts give up after the timeout.
    const int port = server.port();
    try {
        dist::TcpStore orphan("127.0.0.1", port == 65535 ? 1 : port + 1, false, 200ms);
        FAIL() << "expected a connection failure";
    } catch (const dist::DistributedError& error) {
        EXPECT_NE(std::string(error.what()).find("cannot reach the store"), std::string::npos) << error.what();
    }
}

TEST(ThreadProcessGroup, CollectivesGiveEveryRankTheSameResult) {
    auto groups = dist::ThreadProcessGroup::create(3);
    std::vector<std::vector<float>> sums(3), averages(3), maxima(3), broadcasts(3);
    std::vector<std::vector<uint8_t>> bytes(3);
    std::vector<std::vector<int64_t>> flags(3);
    expect_no_errors(run_ranks(groups, [&](int rank, const auto& group) {
        const float r = static_cast<float>(rank);
        Tensor a = Tensor::from_vector<float>({r, 1.0f}, {2});
        group->all_reduce(a, dist::ReduceOp::sum)->wait();
        sums[rank] = a.to_vector<float>();
        Tensor b = Tensor::from_vector<float>({r, 2.0f * r}, {2});
        group->all_reduce(b, dist::ReduceOp::average)->wait();
        averages[rank] = b.to_vector<float>();
        Tensor c = Tensor::from_vector<float>({r, -r}, {2});
        group->all_reduce(c, dist::ReduceOp::max)->wait();
        maxima[rank] = c.to_vector<float>();
        Tensor d = Tensor::full({3}, r);
        group->broadcast(d, 2)->wait();
        broadcasts[rank] = d.to_vector<float>();
        bytes[rank] = group->broadcast_bytes(rank == 1 ? std::vector<uint8_t>{5, 6, 7} : std::vector<uint8_t>{}, 1);
        flags[rank] = group->all_gather_flags(rank == 2 ? 1 : 0);
        group->barrier();
    }));
    for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(sums[r], (std::vector<float>{3, 3}));
        EXPECT_EQ(averages[r], (std::vector<float>{1, 2}));
        EXPECT_EQ(maxima[r], (std::vector<float>{2, 0}));
        EXPECT_EQ(broadcasts[r], (std::vector<float>{2, 2, 2}));
        EXPECT_EQ(bytes[r], (std::vector<uint8_t>{5, 6, 7}));
        EXPECT_EQ(flags[r], (std::vector<int64_t>{0, 0, 1}));
    }
}

TEST(ThreadProcessGroup, MismatchedCollectivesRaiseOnEveryRankNamingWhatEachPassed) {
    auto groups = dist::ThreadProcessGroup::create(2);
    const auto errors = run_ranks(groups, [&](int rank, const auto& group) {
        Tensor t = Tensor::zeros({rank == 0 ? 4 : 3});
        group->all_reduce(t)->wait();
    });
    for (const std::string& error : errors) {
        EXPECT_NE(error.find("different collectives"), std::string::npos) << error;
        EXPECT_NE(error.find("[4]"), std::string::npos) << error;
        EXPECT_NE(error.find("[3]"), std::string::npos) << error;
    }
}

TEST(ThreadProcessGroup, AMissingRankIsATimeoutNotAHang) {
    auto groups = dist::ThreadProcessGroup::create(2, 200ms);
    Tensor t = Tensor::zeros({2});
    try {
        groups[0]->all_reduce(t)->wait();  // rank 1 never comes
        FAIL() << "expected a timeout";
    } catch (const dist::DistributedError& error) {
        EXPECT_NE(std::string(error.what()).find("timed out"), std::string::npos) << error.what();
    }
    EXPECT_THROW(groups[1]->all_reduce(t), dist::DistributedError);  // the group is unusable afterwards
}

TEST(ThreadProcessGroup, RejectsTensorsItCannotExchange) {
    auto groups = dist::ThreadProcessGroup::create(1);
    Tensor strided = Tensor::zeros({4, 4}).transpose(0, 1);
    EXPECT_THROW(groups[0]->all_reduce(strided), dist::DistributedError);
    Tensor integers = Tensor::zeros({2}, {.dtype = DType::i64});
    EXPECT_THROW(groups[0]->all_reduce(integers, dist::ReduceOp::average), DTypeError);
    EXPECT_THROW(groups[0]->broadcast(integers, 3), dist::DistributedError);
}

TEST(LaunchEnvironment, NamesTheMissingVariable) {
    ::unsetenv("WORLD_SIZE");
    ::unsetenv("RANK");
    EXPECT_FALSE(dist::LaunchEnvironment::present());
    try {
        dist::LaunchEnvironment::from_environment();
        FAIL() << "expected an error";
    } catch (const dist::DistributedError& error) {
        EXPECT_NE(std::string(error.what()).find("WORLD_SIZE"), std::string::npos) << error.what();
    }
    ::setenv("WORLD_SIZE", "2", 1);
    ::setenv("RANK", "5", 1);
    EXPECT_THROW(dist::LaunchEnvironment::from_environment(), dist::DistributedError);  // rank outside the world
    ::setenv("RANK", "1", 1);
    ::setenv("MASTER_PORT", "29511", 1);
    const auto environment = dist::LaunchEnvironment::from_environment();
    EXPECT_EQ(environment.rank, 1);
    EXPECT_EQ(environment.local_rank, 1);
    EXPECT_EQ(environment.master_port, 29511);
    ::unsetenv("WORLD_SIZE");
    ::unsetenv("RANK");
    ::unsetenv("MASTER_PORT");
}

TEST(GradHooks, RunAfterAccumulationAndCanBeRemoved) {
    Tensor w = Tensor::ones({3});
    w.set_requires_grad(true);
    std::vector<float> seen;
    {
        autograd::HookHandle handle = autograd::register_post_accumulate_grad_hook(w, [&](const Tensor& leaf) {
            seen = leaf.grad().to_vector<float>();
        });
        sum(w * 2.0).backward();
        EXPECT_EQ(seen, (std::vector<float>{2, 2, 2}));
    }
    seen.clear();
    sum(w * 2.0).backward();
    EXPECT_TRUE(seen.empty());  // removed with its handle
    EXPECT_THROW((void)autograd::register_post_accumulate_grad_hook(w * 2.0, [](const Tensor&) {}), AutogradError);
}

namespace {

std::shared_ptr<nn::Sequential> make_network(uint64_t seed) {
    manual_seed(seed);
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(6, 8), std::make_shared<nn::BatchNorm1d>(8), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Linear>(8, 3)});
}

std::vector<Tensor> trainable(const nn::Module& module) {
    std::vector<Tensor> result;
    for (auto& [name, tensor] : module.named_parameters())
        if (tensor.requires_grad()) result.push_back(tensor);
    return result;
}

// One replica's training: its own store, cache and wrapped model; SGD on mean squared error.
struct Replica {
    fs::path directory;
    std::shared_ptr<morph::DirectoryStore> store;
    std::shared_ptr<nn::Sequential> network;
    std::unique_ptr<morph::MorphableModel> model;
    std::unique_ptr<optim::SGD> optimizer;

    Replica(const std::string& name, uint64_t init_seed, morph::CacheOptions cache_options = {}) {
        directory = fs::temp_directory_path() / ("kasmina_dist_" + name);
        fs::remove_all(directory);
        store = std::make_shared<morph::DirectoryStore>(directory.string());
        network = make_network(init_seed);
        model = std::make_unique<morph::MorphableModel>(
            morph::wrap(network, {.num_seeds = 2, .cache = std::make_shared<morph::KernelCache>(store, cache_options)}));
        optimizer = std::make_unique<optim::SGD>(trainable(*network), optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
    }
    ~Replica() { fs::remove_all(directory); }
    // One step on `inputs`/`targets`, through `forward` (DataParallel's or the plain network's).
    void step(const std::function<Tensor(const Tensor&)>& forward, const Tensor& inputs, const Tensor& targets,
              dist::DataParallel* parallel) {
        optimizer->zero_grad();
        const Tensor difference = forward(inputs) - targets;
        mean(difference * difference).backward();
        if (parallel) parallel->synchronize_gradients();
        optimizer->step();
    }
    void follow_parameters() { optimizer->set_parameters(trainable(*network)); }
};

// Global batches of 8 samples, the same for every run.
struct Batches {
    std::vector<Tensor> inputs, targets;
    explicit Batches(int steps) {
        Generator generator(99);
        for (int s = 0; s < steps; ++s) {
            inputs.push_back(Tensor::randn({8, 6}, {}, &generator));
            targets.push_back(Tensor::randn({8, 3}, {}, &generator));
        }
    }
};

void expect_same_parameters(const nn::Module& actual, const nn::Module& expected, double tolerance) {
    const auto a = actual.named_parameters(), e = expected.named_parameters();
    ASSERT_EQ(a.size(), e.size());
    for (size_t i = 0; i < a.size(); ++i) {
        SCOPED_TRACE(a[i].first);
        EXPECT_EQ(a[i].first, e[i].first);
        expect_tensors_close(a[i].second, e[i].second, tolerance);
    }
    const auto ab = actual.named_buffers(), eb = expected.named_buffers();
    for (size_t i = 0; i < ab.size(); ++i) {
        SCOPED_TRACE(ab[i].first);
        expect_tensors_close(ab[i].second.to(DType::f64), eb[i].second.to(DType::f64), tolerance);
    }
}

constexpr int kSteps = 24;
constexpr int kGerminationStep = 10;

// The seed plan both runs follow: at kGerminationStep a bottleneck kernel into layer "0" seed 0, alpha
// ramped 0 -> 0.4 over 5 steps; at step kGerminationStep + 8 it is fossilized.
void germinate(morph::SeedCommands& commands, morph::KernelStore& store, int step) {
    if (step == kGerminationStep) {
        Generator generator(5);
        const uint64_t id = store.write(morph::serialize_artifact(morph::make_linear_bottleneck(6, 8, 4, 0.3, "dp", &generator)));
        commands.load_kernel("0", 0, id, {.alpha = 0.0});
        commands.ramp_alpha("0", 0, 0.4, 5);
    }
    if (step == kGerminationStep + 8) commands.fossilize("0", 0);
}

}  // namespace

TEST(DataParallel, TwoRanksWithSeedsLoadedMidRunMatchOneRankOnTheGlobalBatch) {
    const Batches batches(kSteps);
    // Reference: one process, the whole batch of 8.
    Replica reference("reference", 7);
    morph::LocalSeedCommands local(*reference.model);
    for (int s = 0; s < kSteps; ++s) {
        germinate(local, *reference.store, s);
        reference.follow_parameters();
        reference.step([&](const Tensor& x) { return reference.network->forward(x); }, batches.inputs[s], batches.targets[s], nullptr);
    }

    // Two ranks, 4 samples each; rank 1 starts from other weights, which rank 0's overwrite.
    auto groups = dist::ThreadProcessGroup::create(2);
    std::vector<std::unique_ptr<Replica>> replicas;
    replicas.push_back(std::make_unique<Replica>("rank0", 7));
    replicas.push_back(std::make_unique<Replica>("rank1", 8));
    std::vector<size_t> overlapped(2, 0);
    expect_no_errors(run_ranks(groups, [&](int rank, const auto& group) {
        Replica& replica = *replicas[static_cast<size_t>(rank)];
        dist::DataParallel parallel(replica.network, group, {.bucket_bytes = 64, .sync_batch_norm = true});
        dist::DistributedSeedCommands commands(group, *replica.model, replica.store);
        for (int s = 0; s < kSteps; ++s) {
            if (s == kGerminationStep || s == kGerminationStep + 8) {
                if (rank == 0) {
                    germinate(commands, *replica.store, s);
                    commands.finish();
                } else {
                    EXPECT_GT(commands.serve(), 0);
                }
            }
            replica.follow_parameters();
            replica.step([&](const Tensor& x) { return parallel.forward(x); }, batches.inputs[s].narrow(0, 4 * rank, 4),
                         batches.targets[s].narrow(0, 4 * rank, 4), &parallel);
            overlapped[static_cast<size_t>(rank)] = std::max(overlapped[static_cast<size_t>(rank)], parallel.buckets_started_during_backward());
        }
    }));
    for (int rank = 0; rank < 2; ++rank) {
        SCOPED_TRACE(rank);
        expect_same_parameters(*replicas[static_cast<size_t>(rank)]->network, *reference.network, 2e-5);
        EXPECT_GT(overlapped[static_cast<size_t>(rank)], 0u);  // buckets started while backward ran
        const auto report = replicas[static_cast<size_t>(rank)]->model->layer("0").layer_stats()[0];
        EXPECT_EQ(report.lifecycle, morph::SeedLifecycle::fossilized);
        EXPECT_NEAR(report.alpha, 0.4, 1e-6);
    }
    // The artifact reached rank 1's (empty) store with the command.
    EXPECT_EQ(replicas[1]->store->list(), replicas[0]->store->list());
}

TEST(DataParallel, PerRankBatchNormKeepsRankZerosRunningStatistics) {
    const Batches batches(3);
    auto groups = dist::ThreadProcessGroup::create(2);
    std::vector<std::unique_ptr<Replica>> replicas;
    replicas.push_back(std::make_unique<Replica>("bn0", 7));
    replicas.push_back(std::make_unique<Replica>("bn1", 7));
    expect_no_errors(run_ranks(groups, [&](int rank, const auto& group) {
        Replica& replica = *replicas[static_cast<size_t>(rank)];
        dist::DataParallel parallel(replica.network, group);
        for (int s = 0; s < 3; ++s)
            replica.step([&](const Tensor& x) { return parallel.forward(x); }, batches.inputs[s].narrow(0, 4 * rank, 4),
                         batches.targets[s].narrow(0, 4 * rank, 4), &parallel);
    }));
    // Parameters agree (averaged gradients); each rank's last forward updated its own running statistics
    // from rank 0's, so they differ by the last batch only — and the next forward makes them equal again.
    const auto p0 = replicas[0]->network->named_parameters(), p1 = replicas[1]->network->named_parameters();
    for (size_t i = 0; i < p0.size(); ++i) expect_tensors_close(p0[i].second, p1[i].second, 1e-6);
    const Tensor mean0 = replicas[0]->network->named_buffers()[0].second, mean1 = replicas[1]->network->named_buffers()[0].second;
    EXPECT_GT(max(abs(mean0 - mean1)).item(), 1e-6);
}

TEST(DistributedSeedCommands, AKernelRefusedOnOneRankIsRefusedOnEveryRank) {
    auto groups = dist::ThreadProcessGroup::create(2);
    std::vector<std::unique_ptr<Replica>> replicas;
    replicas.push_back(std::make_unique<Replica>("refuse0", 7));
    // Rank 1's cache refuses any artifact file over 64 bytes: it will refuse the kernel.
    replicas.push_back(std::make_unique<Replica>("refuse1", 7, morph::CacheOptions{.artifact_limits = {.max_file_bytes = 64}}));
    std::vector<std::string> seeds_before(2), seeds_after(2);
    std::string refusal;
    expect_no_errors(run_ranks(groups, [&](int rank, const auto& group) {
        Replica& replica = *replicas[static_cast<size_t>(rank)];
        dist::DistributedSeedCommands commands(group, *replica.model, replica.store);
        auto fingerprint = [&] {
            const TensorMap state = replica.model->seed_state();
            std::string text;
            for (const auto& [name, tensor] : state) {
                text += name + ":";
                for (const double value : tensor.template to_vector<double>()) text += std::to_string(value) + ",";
            }
            return text;
        };
        seeds_before[static_cast<size_t>(rank)] = fingerprint();
        if (rank == 0) {
            Generator generator(5);
            const uint64_t id = replica.store->write(morph::serialize_artifact(morph::make_linear_bottleneck(6, 8, 4, 0.3, "x", &generator)));
            try {
                commands.load_kernel("0", 0, id, {.alpha = 0.2});
            } catch (const ArtifactError& error) {
                refusal = error.what();
            }
            commands.finish();
        } else {
            EXPECT_EQ(commands.serve(), 0);
        }
        seeds_after[static_cast<size_t>(rank)] = fingerprint();
    }));
    EXPECT_NE(refusal.find("rank(s) 1"), std::string::npos) << refusal;
    for (int rank = 0; rank < 2; ++rank) {
        EXPECT_EQ(seeds_after[static_cast<size_t>(rank)], seeds_before[static_cast<size_t>(rank)]) << "rank " << rank;
        EXPECT_EQ(replicas[static_cast<size_t>(rank)]->model->layer("0").layer_stats()[0].lifecycle, morph::SeedLifecycle::dormant);
    }
}
