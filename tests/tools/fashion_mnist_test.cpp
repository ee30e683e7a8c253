// The Fashion-MNIST reader: valid IDX files load, and missing, truncated or corrupt files raise an
// Error that says how to get the data set (never a crash).
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "tools/train/fashion_mnist.h"

using namespace kasmina;

namespace {

std::filesystem::path scratch(const std::string& name) {
    const auto directory = std::filesystem::temp_directory_path() / ("kasmina_idx_" + name);
    std::filesystem::remove_all(directory);
    std::filesystem::create_directories(directory);
    return directory;
}

void write_gz(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
    gzFile file = gzopen(path.string().c_str(), "wb");
    ASSERT_NE(file, nullptr);
    if (!bytes.empty()) gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(file);
}

std::vector<uint8_t> idx(uint8_t rank, const std::vector<uint32_t>& dims, size_t payload) {
    std::vector<uint8_t> bytes{0, 0, 0x08, rank};
    for (uint32_t d : dims) {
        for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(d >> shift));
    }
    for (size_t i = 0; i < payload; ++i) bytes.push_back(static_cast<uint8_t>(i % 10));
    return bytes;
}

// Writes a tiny valid data set of n images per split.
void write_dataset(const std::filesystem::path& directory, uint32_t n) {
    for (const char* split : {"train", "t10k"}) {
        write_gz(directory / (std::string(split) + "-images-idx3-ubyte.gz"), idx(3, {n, 28, 28}, n * 784));
        write_gz(directory / (std::string(split) + "-labels-idx1-ubyte.gz"), idx(1, {n}, n));
    }
}

}  // namespace

TEST(FashionMnist, LoadsValidFilesAsNormalizedImagesAndLabels) {
    const auto directory = scratch("valid");
    write_dataset(directory, 6);
    const train::FashionMnist data = train::load_fashion_mnist(directory.string());
    EXPECT_EQ(data.train.images.shape(), (Shape{6, 1, 28, 28}));
    EXPECT_EQ(data.test.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
    EXPECT_NEAR(mean(data.train.images).item(), 0.0, 1e-4);  // normalized with the training statistics
}

TEST(FashionMnist, MissingFileSaysHowToGetTheData) {
    const auto directory = scratch("missing");
    EXPECT_THROW_WITH(train::load_fashion_mnist(directory.string()), Error, "dataset-fashion-mnist");
}

TEST(FashionMnist, TruncatedFileIsRefused) {
    const auto directory = scratch("truncated");
    write_dataset(directory, 4);
    write_gz(directory / "train-images-idx3-ubyte.gz", idx(3, {4, 28, 28}, 100));
    EXPECT_THROW_WITH(train::load_fashion_mnist(directory.string()), Error, "truncated or corrupt");
}

TEST(FashionMnist, WrongMagicOrMismatchedCountsAreRefused) {
    const auto directory = scratch("magic");
    write_dataset(directory, 4);
    write_gz(directory / "t10k-labels-idx1-ubyte.gz", idx(3, {4, 1, 1}, 4));
    EXPECT_THROW_WITH(train::load_fashion_mnist(directory.string()), Error, "not an IDX file");
    write_dataset(directory, 4);
    write_gz(directory / "train-labels-idx1-ubyte.gz", idx(1, {3}, 3));
    EXPECT_THROW_WITH(train::load_fashion_mnist(directory.string()), Error, "do not match");
}

TEST(FashionMnist, NonGzipGarbageIsRefused) {
    const auto directory = scratch("garbage");
    write_dataset(directory, 2);
    std::ofstream(directory / "train-images-idx3-ubyte.gz") << "garbage";
    EXPECT_THROW(train::load_fashion_mnist(directory.string()), Error);
}
