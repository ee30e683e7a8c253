// Reading and writing named tensors in the safetensors format (8-byte header length, JSON header,
// raw little-endian data). Every header is validated before any tensor is built: header length
// bounds, known dtypes, shapes consistent with byte ranges, offsets inside the data, no overlap,
// no gaps. A bad file raises ArtifactError naming the file and the problem.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace kasmina {

using TensorMap = std::map<std::string, Tensor>;
using MetadataMap = std::map<std::string, std::string>;

struct SafetensorsContent {
    TensorMap tensors;
    MetadataMap metadata;  // the "__metadata__" entry (string -> string)
};

struct SafetensorsLimits {
    uint64_t max_header_bytes = 100ull << 20;  // the reference implementation's bound
    uint64_t max_file_bytes = 64ull << 30;
    uint64_t max_tensors = 1u << 20;
    uint64_t max_rank = 16;
};

// Parses an in-memory file; `source` names it in error messages. Tensors land on the CPU.
SafetensorsContent parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source,
                                     const SafetensorsLimits& limits = {});
SafetensorsContent load_safetensors(const std::string& path, const SafetensorsLimits& limits = {});
// A whole file's bytes, its size checked against `max_bytes` before anything is allocated. Raises
// ArtifactError "<what> '<path>': ..." when it is missing, too large or cannot be read.
std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t max_bytes, const std::string& what);

// Serializes tensors (any device; copied to the host) in name order with an optional metadata map.
std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors, const MetadataMap& metadata = {});
// Writes `bytes` to "<path>.tmp", then renames it over `path`: readers see the old file or the new
// one, never a partial one. Raises ArtifactError naming the file.
void write_file_atomically(const std::string& path, const std::vector<uint8_t>& bytes);
// Writes atomically (write_file_atomically).
void save_safetensors(const std::string& path, const TensorMap& tensors, const MetadataMap& metadata = {});

// The safetensors dtype code for a dtype ("F32", "F64", "I64", "I32", "U8", "BOOL") and back.
const char* safetensors_dtype_code(DType dtype);

}  // namespace kasmina
