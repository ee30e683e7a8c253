#include "tools/train/fashion_mnist.h"

#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "runtime/error.h"

namespace kasmina::train {
namespace {

const char* kHowToGet =
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist; tools/demo does it), "
    "or point --data-dir / KASMINA_FASHION_MNIST_DIR at a folder holding the four *-ubyte.gz files";

struct GzipCloser {
    void operator()(gzFile_s* file) const { gzclose(file); }
};

uint32_t big_endian(const uint8_t* bytes) {
    return (uint32_t(bytes[0]) << 24) | (uint32_t(bytes[1]) << 16) | (uint32_t(bytes[2]) << 8) | uint32_t(bytes[3]);
}

}  // namespace

std::string fashion_mnist_directory(const std::string& flag) {
    if (!flag.empty()) return flag;
    if (const char* environment = std::getenv("KASMINA_FASHION_MNIST_DIR"); environment != nullptr && *environment) return environment;
    return "/usr/share/datasets/fashion-mnist";
}

std::vector<uint8_t> read_idx_gz(const std::string& path, uint8_t expected_rank, std::vector<int64_t>& dims) {
    if (!std::filesystem::exists(path)) raise<Error>("fashion-mnist", "file '", path, "' not found; ", kHowToGet);
    std::unique_ptr<gzFile_s, GzipCloser> file(gzopen(path.c_str(), "rb"));
    if (!file) raise<Error>("fashion-mnist", "cannot open '", path, "'; ", kHowToGet);
    auto read_exactly = [&](void* buffer, size_t bytes) {
        size_t done = 0;
        while (done < bytes) {
            const int chunk = static_cast<int>(std::min<size_t>(bytes - done, 1 << 30));
            const int got = gzread(file.get(), static_cast<uint8_t*>(buffer) + done, static_cast<unsigned>(chunk));
            if (got <= 0) {
                int code = 0;
                const char* message = gzerror(file.get(), &code);
                raise<Error>("fashion-mnist", "'", path, "' is truncated or corrupt after ", done, " of ", bytes,
                             " bytes (", code != 0 ? message : "unexpected end of file", "); ", kHowToGet);
            }
            done += static_cast<size_t>(got);
        }
    };
    uint8_t header[4];
    read_exactly(header, 4);
    if (header[0] != 0 || header[1] != 0 || header[2] != 0x08 || header[3] != expected_rank)
        raise<Error>("fashion-mnist", "'", path, "' is not an IDX file of unsigned bytes with ", int(expected_rank),
                     " dimensions (magic ", int(header[2]), "/", int(header[3]), "); ", kHowToGet);
    dims.clear();
    int64_t count = 1;
    for (int d = 0; d < expected_rank; ++d) {
        uint8_t size[4];
        read_exactly(size, 4);
        dims.push_back(big_endian(size));
        count *= dims.back();
        if (count > (int64_t(1) << 31)) raise<Error>("fashion-mnist", "'", path, "' declares an implausible size");
    }
    std::vector<uint8_t> payload(static_cast<size_t>(count));
    read_exactly(payload.data(), payload.size());
    uint8_t extra;
    if (gzread(file.get(), &extra, 1) > 0) raise<Error>("fashion-mnist", "'", path, "' has trailing data; ", kHowToGet);
    return payload;
}

namespace {

Dataset load_split(const std::string& directory, const std::string& prefix) {
    std::vector<int64_t> image_dims, label_dims;
    const std::vector<uint8_t> pixels = read_idx_gz(directory + "/" + prefix + "-images-idx3-ubyte.gz", 3, image_dims);
    const std::vector<uint8_t> classes = read_idx_gz(directory + "/" + prefix + "-labels-idx1-ubyte.gz", 1, label_dims);
    if (image_dims[1] != 28 || image_dims[2] != 28 || image_dims[0] != label_dims[0])
        raise<Error>("fashion-mnist", prefix, " images [", image_dims[0], ", ", image_dims[1], ", ", image_dims[2], "] and ",
                     label_dims[0], " labels do not match (expected N x 28 x 28 and N labels)");
    const int64_t n = image_dims[0];
    Dataset split;
    split.images = Tensor::empty({n, 1, 28, 28});
    float* out = split.images.data<float>();
    for (size_t i = 0; i < pixels.size(); ++i) out[i] = static_cast<float>(pixels[i]) / 255.0f;
    split.labels = Tensor::empty({n}, {.dtype = DType::i64});
    int64_t* labels = split.labels.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
        if (classes[i] > 9) raise<Error>("fashion-mnist", prefix, " label ", i, " is ", int(classes[i]), " (expected 0..9)");
        labels[i] = classes[i];
    }
    return split;
}

// Normalizes both splits with the training set's pixel mean and std (in place).
void normalize(FashionMnist& data) {
    const Tensor& images = data.train.images;
    const float* values = images.data<float>();
    double sum = 0, squares = 0;
    const int64_t count = images.numel();
    for (int64_t i = 0; i < count; ++i) {
        sum += values[i];
        squares += static_cast<double>(values[i]) * values[i];
    }
    const double mean = sum / count, std = std::sqrt(squares / count - mean * mean);
    for (Dataset* split : {&data.train, &data.test}) {
        float* pixels = split->images.data<float>();
        for (int64_t i = 0; i < split->images.numel(); ++i) pixels[i] = static_cast<float>((pixels[i] - mean) / std);
    }
}

}  // namespace

FashionMnist load_fashion_mnist(const std::string& directory) {
    FashionMnist data{load_split(directory, "train"), load_split(directory, "t10k")};
    normalize(data);
    return data;
}

}  // namespace kasmina::train
