// Fashion-MNIST from its IDX files (gzip-compressed, as Debian's dataset-fashion-mnist installs
// them): images as float32 [N, 1, 28, 28] normalized with the training set's mean and std, labels
// as int64 [N]. Missing or corrupt files raise an Error that says how to get them.
#pragma once

#include <string>

#include "runtime/tensor.h"

namespace kasmina::train {

struct Dataset {
    Tensor images;  // float32 [N, 1, 28, 28]
    Tensor labels;  // int64 [N], classes 0..9
    int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct FashionMnist {
    Dataset train;
    Dataset test;
};

// The directory to read: `flag` if given, else $KASMINA_FASHION_MNIST_DIR, else the Debian location.
std::string fashion_mnist_directory(const std::string& flag = "");
FashionMnist load_fashion_mnist(const std::string& directory);

// Reads one gzip-compressed IDX file into bytes after validating its header (exposed for tests).
// Returns the dimension sizes in `dims` and the payload (one byte per element).
std::vector<uint8_t> read_idx_gz(const std::string& path, uint8_t expected_rank, std::vector<int64_t>& dims);

}  // namespace kasmina::train
