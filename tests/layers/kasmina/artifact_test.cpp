// Kernel artifacts, the directory store and the kernel cache: round trips and ids, strict
// validation (each kind of bad file is refused with ArtifactError while the seed stays DORMANT and
// the layer's output is unchanged), LRU eviction by entries and bytes, counters, hits that touch no
// disk, eviction of a kernel a seed still uses, thread safety; gradients through kernel and blend;
// and a dormant layer that allocates exactly what the original layer does.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_network.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/wrap.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;
using Json = nlohmann::json;

namespace {

struct Scratch {
    std::filesystem::path directory;
    std::shared_ptr<DirectoryStore> store;
    explicit Scratch(const std::string& name)
        : directory(std::filesystem::temp_directory_path() / ("kasmina_artifact_test_" + name)) {
        std::filesystem::remove_all(directory);
        store = std::make_shared<DirectoryStore>(directory.string());
    }
    ~Scratch() { std::filesystem::remove_all(directory); }
};

std::vector<float> values(const Tensor& t) { return t.contiguous().to_vector<float>(); }

// A safetensors file written by hand: 8-byte little-endian header length, header, data.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes, uint64_t declared_length = 0) {
    std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
    uint64_t length = declared_length ? declared_length : header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    return bytes;
}

// Re-serializes a valid artifact's tensors with an edited description (bypassing validation).
std::vector<uint8_t> with_description(const KernelArtifact& artifact, const std::function<void(Json&)>& edit,
                                      const std::function<void(TensorMap&)>& edit_tensors = {}) {
    const std::vector<uint8_t> good = serialize_artifact(artifact);
    SafetensorsContent content = parse_safetensors(good.data(), good.size(), "good");
    Json description = Json::parse(content.metadata.at(kArtifactMetadataKey));
    edit(description);
    if (edit_tensors) edit_tensors(content.tensors);
    return serialize_safetensors(content.tensors, {{kArtifactMetadataKey, description.dump()}});
}

}  // namespace

TEST(KernelArtifact, RoundTripsThroughBytesWithAStableId) {
    Generator generator(4);
    const KernelArtifact artifact = make_linear_bottleneck(8, 6, 3, 0.25, "test", &generator);
    EXPECT_EQ(artifact.parameter_count, 8 * 3 + 3 + 3 * 6 + 6);
    const std::vector<uint8_t> bytes = serialize_artifact(artifact);
    EXPECT_EQ(serialize_artifact(artifact), bytes) << "serialization is deterministic";
    const KernelArtifact parsed = parse_artifact(bytes.data(), bytes.size(), "memory");
    EXPECT_EQ(parsed.name, "test");
    EXPECT_EQ(parsed.signature.kind, KernelKind::linear);
    EXPECT_EQ(parsed.signature.in_features, 8);
    EXPECT_DOUBLE_EQ(parsed.suggested_alpha, 0.25);
    ASSERT_EQ(parsed.ops.size(), 3u);
    EXPECT_EQ(parsed.ops[1].type, KernelOpType::gelu);
    EXPECT_EQ(values(parsed.tensors.at("w0")), values(artifact.tensors.at("w0")));
    const uint64_t id = content_hash(bytes.data(), bytes.size());
    EXPECT_EQ(parse_kernel_id(format_kernel_id(id)), id);
    EXPECT_EQ(format_kernel_id(id).size(), 16u);
    std::vector<uint8_t> changed = bytes;
    changed.back() ^= 1;
    EXPECT_NE(content_hash(changed.data(), changed.size()), id);
    EXPECT_THROW_WITH(parse_kernel_id("xyz"), Error, "not a kernel id");
}

TEST(KernelArtifact, EveryBlueprintValidatesAndRuns) {
    const Tensor conv_out = KernelNetwork(make_conv_bottleneck(3, 4, 2, {3, 3}, {2, 2}, {1, 1}, {1, 1}), false)
                                .forward(Tensor::randn({2, 3, 9, 7}));
    EXPECT_EQ(conv_out.shape(), (Shape{2, 4, 5, 4}));
    const Tensor heads = Tensor::randn({2, 2, 5, 4});
    EXPECT_EQ(KernelNetwork(make_attention_head_mlp(4, 4, 3, {0, 2}), false).forward(heads).shape(), heads.shape());
    const Tensor channels = Tensor::randn({3, 4, 2, 2});
    EXPECT_EQ(values(KernelNetwork(make_norm_affine({4}, 1), false).forward(channels)), values(channels));
}

TEST(KernelArtifact, ValidationNamesTheProblem) {
    KernelArtifact artifact = make_linear_bottleneck(4, 4, 2);
    KernelArtifact wrong_shape = artifact;
    wrong_shape.tensors["b0"] = Tensor::zeros({3});
    EXPECT_THROW_WITH(validate_artifact(wrong_shape), ArtifactError, "tensor 'b0' has shape [3], expected [2]");
    KernelArtifact unused = artifact;
    unused.tensors["extra"] = Tensor::zeros({1});
    EXPECT_THROW_WITH(validate_artifact(unused), ArtifactError, "'extra' is not used");
    KernelArtifact missing = artifact;
    missing.tensors.erase("w2");
    EXPECT_THROW_WITH(validate_artifact(missing), ArtifactError, "w2");
    KernelArtifact wrong_end = make_linear_bottleneck(4, 3, 2);
    wrong_end.signature.out_features = 4;
    EXPECT_THROW_WITH(validate_artifact(wrong_end), ArtifactError, "ends with 3 features");
    KernelArtifact bad_alpha = artifact;
    bad_alpha.suggested_alpha = 1.5;
    EXPECT_THROW_WITH(validate_artifact(bad_alpha), ArtifactError, "suggested alpha");
    KernelArtifact conv_in_linear = artifact;
    conv_in_linear.ops[0].type = KernelOpType::conv2d;
    EXPECT_THROW_WITH(validate_artifact(conv_in_linear), ArtifactError, "only allowed in conv2d kernels");
    KernelArtifact bad_residual = make_attention_head_mlp(2, 4, 3, {1});
    bad_residual.ops.back().from = 2;  // the hidden layer's 3 features
    EXPECT_THROW_WITH(validate_artifact(bad_residual), ArtifactError, "adds 3 features to 4");
    // A conv kernel that ignores the host's stride would produce the wrong spatial size.
    KernelArtifact conv = make_conv_bottleneck(3, 4, 2, {3, 3}, {2, 2}, {1, 1}, {1, 1});
    conv.ops.back().conv.stride = {1, 1};
    EXPECT_THROW_WITH(validate_artifact(conv), ArtifactError, "output size differs from the host conv's");
    KernelArtifact heads = make_attention_head_mlp(4, 4, 3, {1});
    heads.signature.target_heads = {1, 1};
    EXPECT_THROW_WITH(validate_artifact(heads), ArtifactError, "named twice");
}

// A NaN or infinity anywhere in a weight is refused with its element: in the first block of the scan, past
// it, in the last element, and in a strided (non-dense) tensor.
TEST(KernelArtifact, NonFiniteWeightsAreNamedWithTheirElement) {
    const KernelArtifact artifact = make_linear_bottleneck(64, 64, 128);  // w0 is [128, 64]: 8,192 values
    for (const int64_t element : {int64_t{0}, int64_t{4095}, int64_t{5000}, int64_t{8191}})
        for (const double bad : {std::nan(""), -static_cast<double>(INFINITY)}) {
            KernelArtifact edited = artifact;
            Tensor w0 = edited.tensors.at("w0").clone();
            w0.flatten().narrow(0, element, 1).fill_(bad);
            edited.tensors["w0"] = w0;
            EXPECT_THROW_WITH(validate_artifact(edited), ArtifactError, make_message("at element ", element));
            const std::vector<uint8_t> bytes = with_description(artifact, [](Json&) {}, [&](TensorMap& t) {
                Tensor w = t.at("w0").clone();
                w.flatten().narrow(0, element, 1).fill_(bad);
                t["w0"] = w;
            });
            EXPECT_THROW_WITH(parse_artifact(bytes.data(), bytes.size(), "edited"), ArtifactError,
                              make_message("tensor 'w0' holds a non-finite value"));
        }
    KernelArtifact strided = artifact;
    Tensor wide = Tensor::zeros({64, 128});
    wide.copy_(artifact.tensors.at("w0").t());
    strided.tensors["w0"] = wide.t();  // [128, 64], not contiguous
    validate_artifact(strided);
    wide.narrow(0, 3, 1).narrow(1, 7, 1).fill_(INFINITY);  // w0[7][3]: element 7 * 64 + 3
    EXPECT_THROW_WITH(validate_artifact(strided), ArtifactError, "at element 451");
}

// Each bad file is stored, then refused by load_kernel: ArtifactError, the seed DORMANT, the output
// exactly what it was, the cache unchanged.
TEST(KernelArtifact, BadFilesAreRefusedAndTheLayerKeepsWorking) {
    Scratch scratch("bad_files");
    auto cache = std::make_shared<KernelCache>(scratch.store);
    nn::Linear original(4, 3);
    KasminaLayer layer(original, {.cache = cache});
    const Tensor x = Tensor::randn({2, 4});
    const std::vector<float> before = values(layer.forward(x));
    const KernelArtifact good = make_linear_bottleneck(4, 3, 2);
    const std::vector<uint8_t> good_bytes = serialize_artifact(good);

    std::vector<std::pair<std::string, std::vector<uint8_t>>> bad;
    bad.emplace_back("truncated", std::vector<uint8_t>(good_bytes.begin(), good_bytes.end() - 7));
    bad.emplace_back("header length beyond the file", raw_file("{}", 0, 1u << 20));
    bad.emplace_back("wrong magic (not JSON)", raw_file("PK\x03\x04 not a header", 0));
    bad.emplace_back("overlapping offsets",
                     raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12));
    bad.emplace_back("no description", serialize_safetensors({{"w0", Tensor::zeros({2})}}));
    bad.emplace_back("unknown op", with_description(good, [](Json& d) { d["ops"][1]["op"] = "swish"; }));
    bad.emplace_back("future format", with_description(good, [](Json& d) { d["format_version"] = 99; }));
    bad.emplace_back("malformed description", with_description(good, [](Json& d) { d["ops"] = 7; }));
    bad.emplace_back("wrong parameter count", with_description(good, [](Json& d) { d["parameter_count"] = 1; }));
    bad.emplace_back("NaN weight", with_description(good, [](Json&) {}, [](TensorMap& t) {
        t["w0"] = Tensor::full(t["w0"].shape(), std::nan(""));
    }));
    bad.emplace_back("Inf weight", with_description(good, [](Json&) {}, [](TensorMap& t) {
        t["b2"] = Tensor::full(t["b2"].shape(), INFINITY);
    }));
    bad.emplace_back("float64 weight", with_description(good, [](Json&) {}, [](TensorMap& t) {
        t["b2"] = t["b2"].to(DType::f64);
    }));
    bad.emplace_back("shape mismatch with the layer", serialize_artifact(make_linear_bottleneck(5, 3, 2)));
    bad.emplace_back("kind mismatch", serialize_artifact(make_norm_affine({3}, -1)));
    for (const auto& [what, bytes] : bad) {
        const uint64_t id = scratch.store->write(bytes);
        EXPECT_THROW(layer.load_kernel(1, id), ArtifactError) << what;
        for (const SeedReport& report : layer.layer_stats()) EXPECT_EQ(report.lifecycle, SeedLifecycle::dormant) << what;
        EXPECT_EQ(values(layer.forward(x)), before) << what;
    }
    // Only the two valid (but incompatible) artifacts were cached; no invalid file ever is.
    EXPECT_EQ(cache->stats().entries, 2u);
    // The store's files are refused by verify-style parsing too, naming the source.
    EXPECT_THROW_WITH(load_artifact((scratch.directory / "missing.safetensors").string()), ArtifactError, "cannot open");
    // After all that, a good kernel still loads into the same seed.
    layer.load_kernel(1, scratch.store->write(good_bytes));
    EXPECT_EQ(layer.layer_stats()[1].lifecycle, SeedLifecycle::active);
}

TEST(DirectoryStore, StoresByContentHashAndDetectsCorruption) {
    Scratch scratch("store");
    const std::vector<uint8_t> bytes = serialize_artifact(make_linear_bottleneck(4, 4, 2));
    const uint64_t id = scratch.store->write(bytes);
    EXPECT_EQ(id, content_hash(bytes.data(), bytes.size()));
    EXPECT_EQ(scratch.store->write(bytes), id);
    EXPECT_TRUE(scratch.store->contains(id));
    EXPECT_EQ(scratch.store->read(id), bytes);
    EXPECT_EQ(scratch.store->list(), std::vector<uint64_t>{id});
    EXPECT_TRUE(std::filesystem::exists(scratch.directory / "index.json"));
    std::ifstream index_stream(scratch.directory / "index.json");
    const Json index = Json::parse(index_stream);
    EXPECT_EQ(index.at(format_kernel_id(id)).at("kind"), "linear");
    {
        std::fstream file(scratch.store->path_of(id), std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(-1, std::ios::end);
        file.put('\x7f');
    }
    EXPECT_THROW_WITH(scratch.store->read(id), ArtifactError, "modified or corrupted");
    EXPECT_THROW_WITH(scratch.store->read(0xabc), ArtifactError, "is not in directory store");
}

TEST(KernelCache, EvictsLeastRecentlyUsedByEntryCount) {
    Scratch scratch("lru");
    KernelCache cache(scratch.store, {.max_entries = 2});
    const uint64_t a = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 1)));
    const uint64_t b = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 2)));
    const uint64_t c = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 3)));
    cache.get(a, Device::cpu());
    cache.get(b, Device::cpu());
    cache.get(a, Device::cpu());  // a is now the most recent
    cache.get(c, Device::cpu());  // evicts b
    EXPECT_TRUE(cache.contains(a, Device::cpu()));
    EXPECT_FALSE(cache.contains(b, Device::cpu()));
    EXPECT_TRUE(cache.contains(c, Device::cpu()));
    const CacheStats stats = cache.stats();
    EXPECT_EQ(stats.hits, 1u);
    EXPECT_EQ(stats.misses, 3u);
    EXPECT_EQ(stats.evictions, 1u);
    EXPECT_EQ(stats.entries, 2u);
    EXPECT_EQ(stats.bytes, static_cast<uint64_t>(4 * (4 * 1 + 1 + 1 * 4 + 4) + 4 * (4 * 3 + 3 + 3 * 4 + 4)));
}

TEST(KernelCache, EvictsByBytesAndNeverKeepsAnEntryLargerThanTheCache) {
    Scratch scratch("bytes");
    const uint64_t small = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 2)));  // 22 floats
    const uint64_t other = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 1)));  // 13 floats
    const uint64_t large = scratch.store->write(serialize_artifact(make_linear_bottleneck(64, 64, 64)));
    KernelCache cache(scratch.store, {.max_entries = 10, .max_bytes = 4 * 30});
    cache.get(small, Device::cpu());
    cache.get(other, Device::cpu());  // 35 floats > 30: the older one goes
    EXPECT_FALSE(cache.contains(small, Device::cpu()));
    EXPECT_TRUE(cache.contains(other, Device::cpu()));
    EXPECT_EQ(cache.get(large, Device::cpu())->artifact.signature.in_features, 64);  // served...
    EXPECT_FALSE(cache.contains(large, Device::cpu()));                                // ...not kept
    EXPECT_TRUE(cache.contains(other, Device::cpu()));
    EXPECT_LE(cache.stats().bytes, 4u * 30u);
}

TEST(KernelCache, AHitTouchesNoDiskAndCopiesNoWeights) {
    Scratch scratch("hit");
    KernelCache cache(scratch.store);
    const uint64_t id = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 2)));
    const auto first = cache.get(id, Device::cpu());
    std::filesystem::remove(scratch.store->path_of(id));  // a disk read would now fail
    const auto second = cache.get(id, Device::cpu());
    EXPECT_EQ(first.get(), second.get());
    EXPECT_TRUE(first->artifact.tensors.at("w0").same_storage(second->artifact.tensors.at("w0")));
    // A frozen kernel network shares the cached weights; a trainable one owns copies.
    const KernelNetwork frozen(second->artifact, false), trainable(second->artifact, true);
    EXPECT_TRUE(frozen.named_parameters()[0].second.same_storage(second->artifact.tensors.begin()->second));
    EXPECT_FALSE(trainable.named_parameters()[0].second.same_storage(second->artifact.tensors.begin()->second));
    EXPECT_EQ(cache.stats().hits, 1u);
    EXPECT_THROW(cache.get(0x1234, Device::cpu()), ArtifactError);
    EXPECT_EQ(cache.stats().entries, 1u);
}

TEST(KernelCache, EvictingAKernelASeedUsesDoesNotBreakTheSeed) {
    Scratch scratch("in_use");
    auto cache = std::make_shared<KernelCache>(scratch.store, CacheOptions{.max_entries = 1});
    nn::Linear original(4, 4);
    KasminaLayer layer(original, {.cache = cache});
    const uint64_t used = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 2)));
    layer.load_kernel(0, used, {.alpha = 0.5, .trainable = false});
    const Tensor x = Tensor::randn({3, 4});
    const std::vector<float> before = values(layer.forward(x));
    cache->get(scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, 3))), Device::cpu());
    EXPECT_FALSE(cache->contains(used, Device::cpu()));
    EXPECT_EQ(cache->stats().evictions, 1u);
    std::filesystem::remove(scratch.store->path_of(used));
    EXPECT_EQ(values(layer.forward(x)), before);
    EXPECT_EQ(layer.layer_stats()[0].lifecycle, SeedLifecycle::active);
}

TEST(KernelCache, ConcurrentGetsKeepConsistentCounters) {
    Scratch scratch("threads");
    auto cache = std::make_shared<KernelCache>(scratch.store, CacheOptions{.max_entries = 3});
    std::vector<uint64_t> ids;
    for (int hidden = 1; hidden <= 5; ++hidden)
        ids.push_back(scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 4, hidden))));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const uint64_t id = ids[(i * (t + 1)) % ids.size()];
                EXPECT_EQ(cache->get(id, Device::cpu())->id, id);
            }
        });
    for (auto& thread : threads) thread.join();
    const CacheStats stats = cache->stats();
    EXPECT_EQ(stats.hits + stats.misses, 800u);
    EXPECT_LE(stats.entries, 3u);
}

// float64 gradients of out = blend(d, kernel(x)) with respect to x, the kernel's weights and alpha.
TEST(KernelGradients, GradcheckThroughKernelWeightsAndAlphas) {
    KernelNetwork linear_kernel(make_linear_bottleneck(3, 2, 2), true);
    linear_kernel.to(DType::f64);
    KernelNetwork conv_kernel(make_conv_bottleneck(2, 2, 1, {3, 3}, {2, 2}, {1, 1}, {1, 1}), true);
    conv_kernel.to(DType::f64);
    const auto alphas = [](std::vector<double> a) {
        return Tensor::from_vector<double>(a, {static_cast<int64_t>(a.size())}).set_requires_grad(true);
    };
    std::vector<Tensor> inputs{kasmina::testing::random_leaf({2, 3}), alphas({0.7, 0.6})};
    for (auto& [name, weight] : linear_kernel.named_parameters()) inputs.push_back(weight);
    const Tensor d = kasmina::testing::random_leaf({2, 2});
    inputs.push_back(d);
    EXPECT_GRADCHECK(
        [&](const std::vector<Tensor>& v) {
            // two seeds running the same kernel, alphas summing above 1 (away from the kink at 1)
            const Tensor k = linear_kernel.forward(v[0]);
            return blend_seeds(v.back(), {k, k * 0.5}, v[1]);
        },
        inputs);
    std::vector<Tensor> conv_inputs{kasmina::testing::random_leaf({1, 2, 5, 5}), alphas({0.4})};
    for (auto& [name, weight] : conv_kernel.named_parameters()) conv_inputs.push_back(weight);
    const Tensor conv_d = kasmina::testing::random_leaf({1, 2, 3, 3});
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& v) { return blend_seeds(conv_d, {conv_kernel.forward(v[0])}, v[1]); },
                     conv_inputs);
}

// SPEC: with no seed active the layer costs the original layer plus nothing — not one extra block.
TEST(KasminaDormant, AllocatesExactlyWhatTheOriginalLayerAllocates) {
    Scratch scratch("allocations");
    auto cache = std::make_shared<KernelCache>(scratch.store);
    Allocator& allocator = allocator_for(Device::cpu());
    auto count = [&](const std::function<void()>& work) {
        const uint64_t before = allocator.stats().allocations;
        work();
        return allocator.stats().allocations - before;
    };
    nn::Linear linear(16, 8);
    KasminaLayer kasmina_linear(linear, {.cache = cache});
    nn::BatchNorm2d norm(4);
    Kasmina2dBatchNormLayer kasmina_norm(norm, {.cache = cache});
    const Tensor x = Tensor::randn({4, 16}), images = Tensor::randn({2, 4, 3, 3});
    for (bool training : {true, false}) {
        linear.train(training);
        kasmina_linear.train(training);
        norm.train(training);
        kasmina_norm.train(training);
        EXPECT_EQ(count([&] { kasmina_linear.forward(x); }), count([&] { linear.forward(x); })) << "training " << training;
        EXPECT_EQ(count([&] { kasmina_norm.forward(images); }), count([&] { norm.forward(images); })) << "training " << training;
    }
    EXPECT_GT(allocator.stats().peak_bytes, 0u);
}

// Module::to moves a Kasmina layer's own kernel weights in place (optimizer handles stay valid) but
// copies kernels shared with the cache, so the cache never changes; later loads follow the layer.
TEST(KasminaMoves, ToDtypeMovesOwnedKernelsInPlaceAndLeavesTheCacheAlone) {
    Scratch scratch("moves");
    auto cache = std::make_shared<KernelCache>(scratch.store);
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(4, 3)});
    MorphableModel morphable = wrap(model, {.cache = cache});
    const uint64_t shared = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 3, 2)));
    const uint64_t owned = scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 3, 5)));
    morphable.load_kernel("0", 0, shared, {.alpha = 0.4, .trainable = false});
    morphable.load_kernel("0", 1, owned, {.alpha = 0.4});
    const std::vector<Tensor> handles = model->parameters();  // what an optimizer holds
    model->to(DType::f64);
    for (const Tensor& handle : handles)  // trainable weights moved in place; frozen shared ones stay the cache's
        EXPECT_EQ(handle.dtype(), handle.requires_grad() ? DType::f64 : DType::f32);
    const auto after = model->parameters();
    ASSERT_EQ(after.size(), handles.size());
    size_t same = 0;
    for (size_t i = 0; i < after.size(); ++i) same += after[i].impl() == handles[i].impl();
    EXPECT_GE(same, handles.size() - 4) << "only the shared kernel's 4 weights are new tensors";
    EXPECT_EQ(cache->get(shared, Device::cpu())->artifact.tensors.at("w0").dtype(), DType::f32) << "the cache is untouched";
    const Tensor x = Tensor::randn({2, 4}, {.dtype = DType::f64});
    EXPECT_EQ(morphable.forward(x).dtype(), DType::f64);
    morphable.load_kernel("0", 2, scratch.store->write(serialize_artifact(make_linear_bottleneck(4, 3, 3))));
    for (const auto& [name, tensor] : model->named_parameters()) EXPECT_EQ(tensor.dtype(), DType::f64) << name;
    EXPECT_EQ(morphable.layer("0").layer_stats()[2].lifecycle, SeedLifecycle::active);
    EXPECT_TRUE(std::isfinite(sum(morphable.forward(x)).item()));
}
