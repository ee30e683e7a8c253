// Resource limits: files larger than configured, headers declaring huge or overflowing shapes, giant
// or deeply nested metadata JSON. Each is refused with a clear error before anything of the declared
// size is allocated (the CPU allocator's counter does not move).
#include <filesystem>
#include <fstream>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/checkpoint.h"
#include "layers/kasmina/kernel_cache.h"
#include "layers/kasmina/kernel_store.h"
#include "test_util.h"

using namespace kasmina;
using namespace kasmina::morph;
namespace fs = std::filesystem;

namespace {

// A safetensors file from a header text and `data_bytes` zero bytes of data.
std::vector<uint8_t> file_with(const std::string& header, size_t data_bytes = 0) {
    std::vector<uint8_t> bytes(8);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.resize(bytes.size() + data_bytes, 0);
    return bytes;
}

uint64_t cpu_allocations() { return allocator_for(Device::cpu()).stats().allocations; }

// Runs `parse`, expecting an ArtifactError containing `text`, and at most `allowed` CPU tensor
// allocations (0: nothing; a file's own, size-checked tensors may load before its description fails).
template <typename Parse>
void refused_without_allocating(Parse parse, const std::string& text, uint64_t allowed = 0) {
    SCOPED_TRACE("expecting \"" + text + "\"");
    const uint64_t before = cpu_allocations();
    EXPECT_THROW_WITH(parse(), ArtifactError, text);
    EXPECT_LE(cpu_allocations(), before + allowed) << "allocated before refusing";
}

std::string artifact_description_of(size_t padding, int depth) {
    // A real description, with a padded name and `depth` nested arrays in an ignored field.
    KernelArtifact artifact = make_linear_bottleneck(4, 3, 2);
    const std::vector<uint8_t> bytes = serialize_artifact(artifact);
    const SafetensorsContent content = parse_safetensors(bytes.data(), bytes.size(), "artifact");
    std::string description = content.metadata.at(kArtifactMetadataKey);
    description.insert(1, "\"padding\": \"" + std::string(padding, 'x') + "\", \"nested\": " + std::string(depth, '[') +
                              std::string(depth, ']') + ", ");
    return description;
}

std::vector<uint8_t> artifact_with_description(const std::string& description) {
    KernelArtifact artifact = make_linear_bottleneck(4, 3, 2);
    const std::vector<uint8_t> bytes = serialize_artifact(artifact);
    SafetensorsContent content = parse_safetensors(bytes.data(), bytes.size(), "artifact");
    return serialize_safetensors(content.tensors, {{kArtifactMetadataKey, description}});
}

}  // namespace

TEST(ResourceLimits, HugeAndOverflowingShapesAreRefusedBeforeAllocating) {
    const std::vector<std::string> headers{
        R"({"t": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 4]}})",
        R"({"t": {"dtype": "F64", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}})",
        R"({"t": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})",
        R"({"t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 18446744073709551600]}})",
        R"({"t": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 4]}})",
    };
    for (const std::string& header : headers) {
        SCOPED_TRACE(header);
        const std::vector<uint8_t> bytes = file_with(header, 16);
        refused_without_allocating([&] { parse_safetensors(bytes.data(), bytes.size(), "huge"); }, "safetensors 'huge'");
        refused_without_allocating([&] { parse_artifact(bytes.data(), bytes.size(), "huge"); }, "huge");
        refused_without_allocating([&] { parse_checkpoint(bytes.data(), bytes.size(), "huge"); }, "huge");
    }
}

TEST(ResourceLimits, FilesAboveTheConfiguredSizeAreRefusedBeforeTheyAreRead) {
    const fs::path directory = fs::temp_directory_path() / "kasmina_resource_limits_store";
    fs::remove_all(directory);
    const std::vector<uint8_t> bytes = serialize_artifact(make_linear_bottleneck(16, 16, 8));
    {
        DirectoryStore roomy(directory.string());
        roomy.write(bytes);
    }
    const uint64_t id = content_hash(bytes.data(), bytes.size());
    auto small = std::make_shared<DirectoryStore>(directory.string(), /*max_artifact_bytes=*/bytes.size() - 1);
    refused_without_allocating([&] { small->read(id); }, "above the limit of " + std::to_string(bytes.size() - 1));
    KernelCache cache(small);
    refused_without_allocating([&] { cache.get(id, Device::cpu()); }, "above the limit");
    EXPECT_EQ(cache.stats().entries, 0u);
    // The same bounds through the artifact and checkpoint loaders and the cache's own limits.
    const ArtifactLimits tight{.max_file_bytes = 256};
    refused_without_allocating([&] { parse_artifact(bytes.data(), bytes.size(), "big", tight); }, "above the limit of 256");
    refused_without_allocating([&] { load_artifact(small->path_of(id), tight); }, "above the limit of 256");
    KernelCache strict(std::make_shared<DirectoryStore>(directory.string()), {.artifact_limits = tight});
    refused_without_allocating([&] { strict.get(id, Device::cpu()); }, "above the limit of 256");
    refused_without_allocating([&] { load_checkpoint(small->path_of(id), {.max_file_bytes = 100}); }, "above the limit of 100");
    fs::remove_all(directory);
}

TEST(ResourceLimits, GiantOrDeeplyNestedMetadataIsRefused) {
    // The artifact description: within bounds it parses; above the header bound (1 MiB of description
    // plus the tensor entries) or nested past 8 levels it does not.
    {
        const std::vector<uint8_t> fine = artifact_with_description(artifact_description_of(100, 3));
        EXPECT_NO_THROW(parse_artifact(fine.data(), fine.size(), "fine"));
    }
    const std::vector<uint8_t> giant = artifact_with_description(artifact_description_of(2u << 20, 1));
    refused_without_allocating([&] { parse_artifact(giant.data(), giant.size(), "giant"); }, "header length");
    const std::vector<uint8_t> deep = artifact_with_description(artifact_description_of(0, 100000));
    // (Its four weight tensors, bounded by the file's size, are read before the description.)
    refused_without_allocating([&] { parse_artifact(deep.data(), deep.size(), "deep"); }, "nests deeper than 8 levels", 4);
    // The safetensors header itself: nested past its bound, or longer than the header limit.
    const std::vector<uint8_t> deep_header = file_with("{\"__metadata__\": {\"a\": " + std::string(200000, '[') + "}}");
    refused_without_allocating([&] { parse_safetensors(deep_header.data(), deep_header.size(), "deep"); }, "nests deeper");
    const std::string long_value(1u << 20, 'v');
    const std::vector<uint8_t> long_header = file_with("{\"__metadata__\": {\"a\": \"" + long_value + "\"}}");
    refused_without_allocating([&] { parse_checkpoint(long_header.data(), long_header.size(), "long", {.max_header_bytes = 4096}); },
                               "outside [2, 4096]");
    // A checkpoint's parameter order that nests.
    const std::vector<uint8_t> nested_order = file_with(R"({"__metadata__": {"kasmina.parameter_order": "[[[[[\"a\"]]]]]"}})");
    refused_without_allocating([&] { parse_checkpoint(nested_order.data(), nested_order.size(), "order"); }, "nests deeper");
}
