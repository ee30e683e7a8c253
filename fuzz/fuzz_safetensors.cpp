// Fuzz target: the safetensors reader. Any input must parse into consistent tensors or raise
// ArtifactError; a parsed file must serialize and parse back to the same tensors.
#include <cstdlib>
#include <cstring>

#include "fuzz/fuzz_target.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

using namespace kasmina;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    SafetensorsContent content;
    try {
        content = parse_safetensors(data, size, "fuzz input");
    } catch (const ArtifactError&) {
        return 0;
    }
    // Round trip: what was accepted must be written and read back unchanged.
    const std::vector<uint8_t> bytes = serialize_safetensors(content.tensors, content.metadata);
    const SafetensorsContent again = parse_safetensors(bytes.data(), bytes.size(), "round trip");
    if (again.tensors.size() != content.tensors.size() || again.metadata != content.metadata) std::abort();
    for (const auto& [name, tensor] : content.tensors) {
        const Tensor& other = again.tensors.at(name);
        if (other.shape() != tensor.shape() || other.dtype() != tensor.dtype()) std::abort();
        const size_t nbytes = static_cast<size_t>(tensor.numel()) * dtype_size(tensor.dtype());
        if (nbytes && std::memcmp(other.raw_data(), tensor.contiguous().raw_data(), nbytes) != 0) std::abort();
    }
    return 0;
}

namespace kasmina::fuzz {

void write_seed_inputs(const std::filesystem::path& directory) {
    write_input(directory, "empty.safetensors", serialize_safetensors({}));
    write_input(directory, "metadata.safetensors", serialize_safetensors({}, {{"format", "pt"}, {"note", "seed"}}));
    TensorMap tensors;
    tensors.emplace("weight", Tensor::arange(0.0, 6.0).to(DType::f32).reshape({2, 3}));
    tensors.emplace("steps", Tensor::arange(0.0, 3.0).to(DType::i64));
    tensors.emplace("mask", Tensor::ones({2, 2}, {.dtype = DType::boolean}));
    tensors.emplace("scalar", Tensor::full({}, 2.5, {.dtype = DType::f64}));
    tensors.emplace("bytes", Tensor::zeros({0, 4}, {.dtype = DType::u8}));
    tensors.emplace("ids", Tensor::arange(0.0, 4.0).to(DType::i32));
    write_input(directory, "mixed.safetensors", serialize_safetensors(tensors, {{"k", "v"}}));
}

}  // namespace kasmina::fuzz
