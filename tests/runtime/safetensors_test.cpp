// safetensors: round trips of every dtype with metadata, and refusal of malformed files.
#include <cstring>
#include <filesystem>

#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_values;

namespace {

std::vector<uint8_t> file_with_header(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
    const uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    return bytes;
}

void expect_refused(const std::vector<uint8_t>& bytes, const std::string& text) {
    EXPECT_THROW_WITH(parse_safetensors(bytes.data(), bytes.size(), "test.safetensors"), ArtifactError, text);
}

}  // namespace

TEST(Safetensors, RoundTripsTensorsOfEveryDtypeAndMetadata) {
    TensorMap tensors{{"weight", Tensor::randn({3, 4})},
                      {"double", Tensor::from_vector<double>({1.25, -8}, {2})},
                      {"steps", Tensor::from_vector<int64_t>({7}, {})},
                      {"ints", Tensor::from_vector<int32_t>({1, 2, 3}, {3})},
                      {"bytes", Tensor::from_vector<uint8_t>({9}, {1})},
                      {"mask", Tensor::from_vector<bool>({true, false}, {2})},
                      {"empty", Tensor::zeros({0, 5})}};
    const std::vector<uint8_t> bytes = serialize_safetensors(tensors, {{"format", "kasmina"}});
    const SafetensorsContent content = parse_safetensors(bytes.data(), bytes.size(), "memory");
    EXPECT_EQ(content.metadata.at("format"), "kasmina");
    ASSERT_EQ(content.tensors.size(), tensors.size());
    for (const auto& [name, tensor] : tensors) {
        const Tensor& loaded = content.tensors.at(name);
        EXPECT_EQ(loaded.dtype(), tensor.dtype()) << name;
        EXPECT_EQ(loaded.shape(), tensor.shape()) << name;
        expect_values(loaded, tensor.to_vector<double>(), 0);
    }
}

TEST(Safetensors, SavesNonContiguousTensorsAsTheirValues) {
    const Tensor x = Tensor::arange(6, {.dtype = DType::f32}).reshape({2, 3}).t();
    const auto path = std::filesystem::temp_directory_path() / "kasmina_transposed.safetensors";
    save_safetensors(path.string(), {{"x", x}});
    expect_values(load_safetensors(path.string()).tensors.at("x"), {0, 3, 1, 4, 2, 5});
    std::filesystem::remove(path);
}

TEST(Safetensors, MissingFileRaisesArtifactError) {
    EXPECT_THROW_WITH(load_safetensors("/nonexistent/file.safetensors"), ArtifactError, "cannot open");
}

TEST(Safetensors, RefusesFilesShorterThanTheLengthField) {
    expect_refused({1, 2, 3}, "shorter than the 8-byte header length");
}

TEST(Safetensors, RefusesHeaderLengthBeyondTheFile) {
    std::vector<uint8_t> bytes = file_with_header("{}", 0);
    bytes[0] = 200;
    expect_refused(bytes, "exceeds the");
}

TEST(Safetensors, RefusesHugeHeaderLengthBeforeAllocating) {
    std::vector<uint8_t> bytes = file_with_header("{}", 0);
    bytes[7] = 0x7f;
    expect_refused(bytes, "outside [2,");
}

TEST(Safetensors, RefusesInvalidJson) { expect_refused(file_with_header("{\"a\": [1,", 0), "header is not valid JSON"); }

TEST(Safetensors, RefusesDeeplyNestedJson) {
    expect_refused(file_with_header("{\"a\":" + std::string(50, '[') + std::string(50, ']') + "}", 0), "nests deeper");
}

TEST(Safetensors, RefusesUnknownDtype) {
    expect_refused(file_with_header(R"({"x":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1), "unsupported dtype 'F8'");
}

TEST(Safetensors, RefusesShapeInconsistentWithByteRange) {
    expect_refused(file_with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "(12 bytes) but data_offsets span 8 bytes");
}

TEST(Safetensors, RefusesOffsetsOutsideTheData) {
    expect_refused(file_with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside the 4-byte data section");
}

TEST(Safetensors, RefusesOverlappingTensors) {
    expect_refused(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    8),
                   "overlaps");
}

TEST(Safetensors, RefusesGapsAndTrailingBytes) {
    expect_refused(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap of 4 bytes");
    expect_refused(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "4 trailing bytes");
}

TEST(Safetensors, RefusesNegativeShapeEntries) {
    expect_refused(file_with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "non-negative integer");
}

TEST(Safetensors, RefusesNonStringMetadata) {
    expect_refused(file_with_header(R"({"__metadata__":{"k":1}})", 0), "is not a string");
}

TEST(Safetensors, RefusesInvalidBoolBytes) {
    std::vector<uint8_t> bytes = file_with_header(R"({"m":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", 1);
    bytes.back() = 7;
    expect_refused(bytes, "neither 0 nor 1");
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRefusedCleanly) {
    const std::vector<uint8_t> bytes = serialize_safetensors({{"w", Tensor::randn({4, 4})}, {"b", Tensor::zeros({4})}});
    for (size_t length = 0; length < bytes.size(); ++length)
        EXPECT_THROW(parse_safetensors(bytes.data(), length, "truncated"), ArtifactError) << "length " << length;
}
