// Fault injection: the store changing under the cache, the cache at its byte limit, kernels that blow
// up on some batches, allocations failing in the cache path, checkpoints taken mid-load or cut short.
// In each case: a clear error or a clean fallback, the model's weights, buffers, seeds and optimizer
// state unchanged (compared byte for byte through a serialized checkpoint), and training goes on.
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/checkpoint.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;
namespace fs = std::filesystem;

namespace {

// A store that forwards to another and, when armed, holds every read until released.
class GatedStore final : public KernelStore {
public:
    explicit GatedStore(std::shared_ptr<KernelStore> inner) : inner_(std::move(inner)) {}
    bool contains(uint64_t id) const override { return inner_->contains(id); }
    std::vector<uint8_t> read(uint64_t id) const override {
        std::unique_lock lock(mutex_);
        if (armed_) {
            waiting_ = true;
            changed_.notify_all();
            changed_.wait(lock, [&] { return !armed_; });
        }
        lock.unlock();
        return inner_->read(id);
    }
    uint64_t write(const std::vector<uint8_t>& bytes) override { return inner_->write(bytes); }
    std::vector<uint64_t> list() const override { return inner_->list(); }
    std::string describe() const override { return "gated " + inner_->describe(); }

    void arm() {
        std::lock_guard lock(mutex_);
        armed_ = true;
        waiting_ = false;
    }
    void wait_until_a_read_is_held() {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return waiting_; });
    }
    void release() {
        std::lock_guard lock(mutex_);
        armed_ = false;
        changed_.notify_all();
    }

private:
    std::shared_ptr<KernelStore> inner_;
    mutable std::mutex mutex_;
    mutable std::condition_variable changed_;
    bool armed_ = false;
    mutable bool waiting_ = false;
};

// The CPU allocator, except that the n-th allocation after arm(n) fails like an exhausted heap.
class FailingAllocator final : public Allocator {
public:
    void* allocate(size_t bytes) override {
        if (countdown_ > 0 && --countdown_ == 0) {
            ++failures_;
            raise<Error>("allocate", "injected failure allocating ", bytes, " bytes");
        }
        return real().allocate(bytes);
    }
    void deallocate(void* pointer, size_t bytes) override { real().deallocate(pointer, bytes); }
    void arm(int64_t n) { countdown_ = n; }
    bool fired() const { return countdown_ == 0; }
    int64_t failures() const { return failures_; }

private:
    Allocator& real() { return real_; }
    Allocator& real_ = allocator_for(Device::cpu());  // constructed before any override is in place
    int64_t countdown_ = 0;
    int64_t failures_ = 0;
};

// A wrapped network (by default Linear -> BatchNorm1d -> ReLU -> Linear) with AdamW, trained a step
// so every piece of state exists, and a byte-exact fingerprint of all of it. The loss is the mean
// output, so its gradients never depend on the output's magnitude.
struct TrainingRig {
    fs::path directory;
    std::shared_ptr<DirectoryStore> directory_store;
    std::shared_ptr<GatedStore> store;
    std::shared_ptr<KernelCache> cache;
    std::shared_ptr<nn::Sequential> network;
    std::unique_ptr<MorphableModel> model;
    std::unique_ptr<optim::AdamW> optimizer;
    NamedTensors parameters;
    Generator data{11};

    explicit TrainingRig(const std::string& name, CacheOptions cache_options = {},
                         std::shared_ptr<nn::Sequential> custom_network = nullptr) {
        manual_seed(21);
        directory = fs::temp_directory_path() / ("kasmina_fault_" + name);
        fs::remove_all(directory);
        directory_store = std::make_shared<DirectoryStore>(directory.string());
        store = std::make_shared<GatedStore>(directory_store);
        cache = std::make_shared<KernelCache>(store, cache_options);
        network = custom_network ? custom_network
                                 : std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
                                       std::make_shared<nn::Linear>(6, 8), std::make_shared<nn::BatchNorm1d>(8),
                                       std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 3)});
        model = std::make_unique<MorphableModel>(wrap(network, {.num_seeds = 4, .cache = cache}));
        optimizer = std::make_unique<optim::AdamW>(std::vector<Tensor>{});
        refresh_parameters();
        EXPECT_TRUE(std::isfinite(train_step()));
    }
    ~TrainingRig() { fs::remove_all(directory); }

    uint64_t add(const KernelArtifact& artifact) { return store->write(serialize_artifact(artifact)); }
    fs::path path_of(uint64_t id) const { return directory_store->path_of(id); }

    // The optimizer follows the trainable parameters (kernel weights appear and disappear).
    void refresh_parameters() {
        parameters.clear();
        std::vector<Tensor> tensors;
        for (auto& [name, tensor] : network->named_parameters())
            if (tensor.requires_grad()) parameters.emplace_back(name, tensor), tensors.push_back(tensor);
        optimizer->set_parameters(tensors);
    }
    void load(const std::string& layer, int seed, uint64_t id, LoadOptions options = {}) {
        model->load_kernel(layer, seed, id, options);
        refresh_parameters();
    }
    Tensor batch(double scale = 1.0) { return Tensor::randn({5, 6}, {}, &data) * scale; }
    double train_step(double scale = 1.0) {
        optimizer->zero_grad();
        const Tensor loss = mean(model->forward(batch(scale)));
        loss.backward();
        optimizer->step();
        return loss.item();
    }
    std::vector<uint8_t> fingerprint() const {
        return serialize_checkpoint(capture_checkpoint(*network, *optimizer, parameters, model.get()));
    }
    SeedLifecycle lifecycle(const std::string& layer, int seed) const { return model->layer(layer).layer_stats()[seed].lifecycle; }
};

}  // namespace

TEST(FaultInjection, StoreFilesDeletedTruncatedOrReplacedBetweenLoadsAreRefused) {
    TrainingRig rig("store");
    rig.load("0", 0, rig.add(make_linear_bottleneck(6, 8, 2)));
    const KernelArtifact other = make_linear_bottleneck(6, 8, 4);
    const std::vector<uint8_t> other_bytes = serialize_artifact(other);
    const struct {
        const char* fault;
        std::function<void(const fs::path&)> apply;
        const char* message;
    } faults[] = {
        {"deleted", [](const fs::path& path) { fs::remove(path); }, "is not in"},
        {"truncated", [](const fs::path& path) { fs::resize_file(path, fs::file_size(path) / 2); }, "not its id"},
        {"replaced by another valid artifact",
         [&](const fs::path& path) {
             std::ofstream(path, std::ios::binary | std::ios::trunc)
                 .write(reinterpret_cast<const char*>(other_bytes.data()), static_cast<std::streamsize>(other_bytes.size()));
         },
         "not its id"},
        {"emptied", [](const fs::path& path) { std::ofstream(path, std::ios::trunc); }, "not its id"},
    };
    int hidden = 3;
    for (const auto& fault : faults) {
        SCOPED_TRACE(fault.fault);
        const uint64_t id = rig.add(make_linear_bottleneck(6, 8, hidden++));
        fault.apply(rig.path_of(id));
        const std::vector<uint8_t> before = rig.fingerprint();
        EXPECT_THROW_WITH(rig.load("0", 1, id), ArtifactError, fault.message);
        EXPECT_EQ(rig.fingerprint(), before);
        EXPECT_EQ(rig.lifecycle("0", 1), SeedLifecycle::dormant);
        EXPECT_FALSE(rig.cache->contains(id, Device::cpu()));
        // The seed loaded before the fault never reads the disk again and keeps blending.
        fs::remove(rig.path_of(rig.model->layer("0").layer_stats()[0].kernel_id));
        EXPECT_EQ(rig.lifecycle("0", 0), SeedLifecycle::active);
        for (int step = 0; step < 3; ++step) EXPECT_TRUE(std::isfinite(rig.train_step()));
    }
}

TEST(FaultInjection, CacheAtItsByteLimitWhileSeedsHoldEntries) {
    // Room for one bottleneck's weights: every further load evicts, the seeds keep their kernels.
    const KernelArtifact first = make_linear_bottleneck(6, 8, 4);
    uint64_t one_kernel_bytes = 0;
    for (const auto& [name, tensor] : first.tensors) one_kernel_bytes += static_cast<uint64_t>(tensor.numel()) * 4;
    TrainingRig rig("cache_limit", {.max_entries = 64, .max_bytes = one_kernel_bytes});
    const std::vector<uint64_t> ids{rig.add(first), rig.add(make_linear_bottleneck(6, 8, 3)),
                                    rig.add(make_linear_bottleneck(6, 8, 2)), rig.add(make_linear_bottleneck(6, 8, 1))};
    for (int seed = 0; seed < 4; ++seed) {
        rig.load("0", seed, ids[seed], {.alpha = 0.25});
        EXPECT_LE(rig.cache->stats().bytes, one_kernel_bytes);
    }
    EXPECT_GE(rig.cache->stats().evictions, 2u);
    rig.model->module()->eval();
    const Tensor x = rig.batch();
    const std::vector<float> before = rig.model->forward(x).to_vector<float>();
    rig.cache->clear();
    for (uint64_t id : ids) fs::remove(rig.path_of(id));
    EXPECT_EQ(rig.model->forward(x).to_vector<float>(), before);  // the seeds hold their own references
    rig.model->module()->train();
    for (int seed = 0; seed < 4; ++seed) EXPECT_EQ(rig.lifecycle("0", seed), SeedLifecycle::active);
    for (int step = 0; step < 5; ++step) EXPECT_TRUE(std::isfinite(rig.train_step()));
}

TEST(FaultInjection, AKernelThatOverflowsOnSomeBatchesFallsBackOnThoseOnly) {
    // A lone Linear, so the host path stays finite on inputs of 1e15 (and so do its gradients' squares).
    TrainingRig rig("overflow", {}, std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
                                        std::make_shared<nn::Linear>(6, 8)}));
    // The kernel's last projection scaled by 1e25: ~1e25 for unit inputs, +-inf for inputs of 1e15.
    KernelArtifact artifact = make_linear_bottleneck(6, 8, 3);
    const std::string last_weight = artifact.ops.back().weight;
    ASSERT_FALSE(last_weight.empty());
    artifact.tensors[last_weight] = artifact.tensors[last_weight] * 1e25;
    rig.load("0", 0, rig.add(artifact), {.alpha = 0.5, .trainable = false});
    auto& layer = rig.model->layer("0");
    for (int round = 0; round < 4; ++round) {
        SCOPED_TRACE(round);
        // A bad batch: the original path answers (finite loss), one error recorded.
        EXPECT_TRUE(std::isfinite(rig.train_step(1e15)));
        EXPECT_GE(layer.layer_stats()[0].consecutive_errors, 1u);
        // A good batch clears the count: the kernel took part again.
        rig.train_step(1.0);
        EXPECT_EQ(layer.layer_stats()[0].consecutive_errors, 0u);
        EXPECT_EQ(layer.layer_stats()[0].lifecycle, SeedLifecycle::active);
    }
    // Three bad batches in a row: fallback and ERROR_RECOVERY; the host weights never saw a NaN.
    for (int step = 0; step < 3; ++step) EXPECT_TRUE(std::isfinite(rig.train_step(1e15)));
    EXPECT_EQ(layer.layer_stats()[0].lifecycle, SeedLifecycle::error_recovery);
    EXPECT_TRUE(layer.layer_stats()[0].fallback);
    for (const auto& [name, tensor] : rig.network->named_parameters())
        for (float value : tensor.contiguous().to_vector<float>()) ASSERT_TRUE(std::isfinite(value)) << name;
    rig.model->unload_kernel("0", 0);
    rig.refresh_parameters();
    EXPECT_TRUE(std::isfinite(rig.train_step()));
}

TEST(FaultInjection, AllocationFailuresAnywhereInTheCachePathChangeNothing) {
    TrainingRig rig("allocation");
    rig.load("0", 0, rig.add(make_linear_bottleneck(6, 8, 2)));
    const uint64_t id = rig.add(make_linear_bottleneck(6, 8, 3));
    static FailingAllocator failing;  // outlives every block it hands out
    // Fail the 1st, 2nd, ... allocation of a cold load until one load needs fewer allocations.
    int64_t injected = 0;
    for (int64_t n = 1;; ++n) {
        SCOPED_TRACE("failing allocation " + std::to_string(n));
        rig.cache->clear();
        const std::vector<uint8_t> before = rig.fingerprint();
        const CacheStats stats_before = rig.cache->stats();
        bool loaded = false;
        {
            ScopedAllocatorOverride override_cpu(DeviceType::cpu, failing);
            failing.arm(n);
            try {
                rig.model->load_kernel("0", 1, id, {.alpha = 0.5});
                loaded = true;
            } catch (const ArtifactError& error) {
                EXPECT_NE(std::string(error.what()).find("injected failure"), std::string::npos) << error.what();
            }
            failing.arm(0);
        }
        if (loaded) {
            EXPECT_GT(n, 1);
            break;
        }
        ++injected;
        EXPECT_EQ(rig.fingerprint(), before);
        EXPECT_EQ(rig.lifecycle("0", 1), SeedLifecycle::dormant);
        // The cache holds the kernel only when the failure came after it was complete (building the
        // seed's own copy of the weights), and its counters agree with what it holds.
        const bool cached = rig.cache->contains(id, Device::cpu());
        EXPECT_EQ(rig.cache->stats().entries, stats_before.entries + (cached ? 1 : 0));
        if (cached) {
            KernelArtifact copy = rig.cache->get(id, Device::cpu())->artifact;
            EXPECT_NO_THROW(validate_artifact(copy));
        }
        ASSERT_LT(n, 10000) << "a load should need a bounded number of allocations";
    }
    EXPECT_EQ(injected, failing.failures());
    rig.refresh_parameters();
    EXPECT_EQ(rig.lifecycle("0", 1), SeedLifecycle::active);
    for (int step = 0; step < 3; ++step) EXPECT_TRUE(std::isfinite(rig.train_step()));
    RecordProperty("allocation_failures_injected", static_cast<int>(injected));
    std::printf("[ figure   ] %ld allocation failures injected, each refused cleanly\n", static_cast<long>(injected));
}

TEST(FaultInjection, ACheckpointTakenWhileASeedIsLoadingRestoresItDormant) {
    TrainingRig rig("loading");
    const uint64_t first = rig.add(make_linear_bottleneck(6, 8, 2)), second = rig.add(make_linear_bottleneck(6, 8, 3));
    rig.load("0", 0, first);
    rig.store->arm();
    std::thread loader([&] { rig.model->load_kernel("0", 1, second); });
    rig.store->wait_until_a_read_is_held();
    ASSERT_EQ(rig.lifecycle("0", 1), SeedLifecycle::loading);
    const std::vector<uint8_t> mid_load = rig.fingerprint();
    rig.store->release();
    loader.join();
    rig.refresh_parameters();
    ASSERT_EQ(rig.lifecycle("0", 1), SeedLifecycle::active);
    for (int step = 0; step < 2; ++step) rig.train_step();

    rig.parameters = restore_checkpoint(parse_checkpoint(mid_load.data(), mid_load.size(), "mid-load"), *rig.network,
                                        *rig.optimizer, rig.model.get());
    EXPECT_EQ(rig.lifecycle("0", 0), SeedLifecycle::active);
    EXPECT_EQ(rig.lifecycle("0", 1), SeedLifecycle::dormant);  // a load in flight is not part of the state
    EXPECT_EQ(rig.model->layer("0").layer_stats()[1].kernel_id, 0u);
    for (int step = 0; step < 3; ++step) EXPECT_TRUE(std::isfinite(rig.train_step()));
}

TEST(FaultInjection, ACheckpointCutAtAnyByteOfItsHeaderIsRefusedAndRestoresNothing) {
    TrainingRig rig("truncated");
    rig.load("0", 0, rig.add(make_linear_bottleneck(6, 8, 2)));
    rig.train_step();
    const std::vector<uint8_t> bytes = rig.fingerprint();
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
    rig.train_step();  // the model moves on; a refused checkpoint must not pull it back
    const std::vector<uint8_t> before = rig.fingerprint();
    int refused = 0;
    // Every cut inside the length field and the header, then every 97th byte of the data.
    for (size_t cut = 0; cut < bytes.size(); cut += cut < 8 + header_length ? 1 : 97) {
        try {
            rig.parameters = restore_checkpoint(parse_checkpoint(bytes.data(), cut, "cut"), *rig.network, *rig.optimizer,
                                                rig.model.get());
            ADD_FAILURE() << "a checkpoint cut at byte " << cut << " of " << bytes.size() << " was accepted";
        } catch (const ArtifactError&) {
            ++refused;
        }
    }
    EXPECT_EQ(rig.fingerprint(), before);
    EXPECT_GT(refused, static_cast<int>(header_length));
    RecordProperty("truncations_refused", refused);
    std::printf("[ figure   ] %d truncated checkpoints refused (header of %lu bytes)\n", refused, static_cast<unsigned long>(header_length));
    EXPECT_TRUE(std::isfinite(rig.train_step()));
}

TEST(FaultInjection, ARestoreThatFailsHalfwayPutsEverythingBack) {
    TrainingRig rig("halfway");
    const uint64_t kernel = rig.add(make_linear_bottleneck(6, 8, 2));
    rig.load("0", 0, kernel);
    rig.train_step();
    const TrainingCheckpoint good = capture_checkpoint(*rig.network, *rig.optimizer, rig.parameters, rig.model.get());
    const std::vector<uint8_t> good_bytes = serialize_checkpoint(good);
    rig.model->unload_kernel("0", 0);
    rig.load("3", 2, rig.add(make_linear_bottleneck(8, 3, 2)));
    rig.train_step();
    const std::vector<uint8_t> before = rig.fingerprint();
    const auto fails_and_changes_nothing = [&](TrainingCheckpoint checkpoint, const char* message) {
        SCOPED_TRACE(message);
        EXPECT_THROW_WITH(restore_checkpoint(checkpoint, *rig.network, *rig.optimizer, rig.model.get()), Error, message);
        EXPECT_EQ(rig.fingerprint(), before);
    };
    // Seeds restored, then the weights refused (a misshapen tensor).
    TrainingCheckpoint misshapen = parse_checkpoint(good_bytes.data(), good_bytes.size(), "good");
    for (auto& [name, tensor] : misshapen.model)
        if (name.rfind("3.", 0) == 0 && name.find("weight") != std::string::npos) tensor = Tensor::zeros({2, 2});
    fails_and_changes_nothing(misshapen, "size mismatch");
    // Seeds and weights restored, then the optimizer refused (a parameter the model lacks).
    TrainingCheckpoint unknown = parse_checkpoint(good_bytes.data(), good_bytes.size(), "good");
    unknown.parameter_order.push_back("no.such.parameter");
    fails_and_changes_nothing(unknown, "no.such.parameter");
    // The kernel a seed held is gone from the store and the cache.
    rig.cache->clear();
    fs::remove(rig.path_of(kernel));
    fails_and_changes_nothing(parse_checkpoint(good_bytes.data(), good_bytes.size(), "good"), "is not in");
    EXPECT_TRUE(std::isfinite(rig.train_step()));
}
