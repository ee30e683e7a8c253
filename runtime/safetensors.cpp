#include "runtime/safetensors.h"

#include "runtime/untrusted_json.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

namespace kasmina {
namespace {

using Json = nlohmann::json;

std::optional<DType> dtype_from_code(const std::string& code) {
    if (code == "F32") return DType::f32;
    if (code == "F64") return DType::f64;
    if (code == "I64") return DType::i64;
    if (code == "I32") return DType::i32;
    if (code == "U8") return DType::u8;
    if (code == "BOOL") return DType::boolean;
    return std::nullopt;
}

[[noreturn]] void refuse(const std::string& source, const std::string& problem) {
    throw ArtifactError("safetensors '" + source + "': " + problem);
}

uint64_t read_u64_le(const uint8_t* bytes) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
    return value;
}

struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin;
    uint64_t end;
};

uint64_t as_unsigned(const Json& value, const std::string& source, const std::string& what) {
    if (!value.is_number_unsigned()) {
        if (value.is_number_integer() && value.get<int64_t>() >= 0) return value.get<uint64_t>();
        refuse(source, what + " must be a non-negative integer, got " + value.dump());
    }
    return value.get<uint64_t>();
}

}  // namespace

const char* safetensors_dtype_code(DType dtype) {
    switch (dtype) {
        case DType::f32: return "F32";
        case DType::f64: return "F64";
        case DType::i64: return "I64";
        case DType::i32: return "I32";
        case DType::u8: return "U8";
        case DType::boolean: return "BOOL";
    }
    return "?";
}

SafetensorsContent parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source,
                                     const SafetensorsLimits& limits) {
    if (size < 8) refuse(source, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    if (size > limits.max_file_bytes)
        refuse(source, "file is " + std::to_string(size) + " bytes, above the limit of " + std::to_string(limits.max_file_bytes));
    const uint64_t header_length = read_u64_le(bytes);
    if (header_length < 2 || header_length > limits.max_header_bytes)
        refuse(source, "header length " + std::to_string(header_length) + " outside [2, " +
                           std::to_string(limits.max_header_bytes) + "]");
    if (header_length > size - 8)
        refuse(source, "header length " + std::to_string(header_length) + " exceeds the " + std::to_string(size - 8) +
                           " bytes after the length field");
    const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
    if (header_begin[0] != '{') refuse(source, "header does not start with '{'");
    const std::string op = "safetensors '" + source + "'";
    const Json header = parse_untrusted_json(std::string_view(header_begin, header_length), op.c_str(), "header",
                                             {.max_bytes = limits.max_header_bytes, .max_depth = 8});
    if (!header.is_object()) refuse(source, "header is not a JSON object");

    const uint64_t data_size = size - 8 - header_length;
    const uint8_t* data = bytes + 8 + header_length;
    SafetensorsContent content;
    std::vector<Entry> entries;
    if (header.size() > limits.max_tensors + 1) refuse(source, "header lists too many tensors");
    for (auto item = header.begin(); item != header.end(); ++item) {
        const std::string& name = item.key();
        const Json& value = item.value();
        if (name == "__metadata__") {
            if (!value.is_object()) refuse(source, "__metadata__ must be an object of strings");
            for (auto meta = value.begin(); meta != value.end(); ++meta) {
                if (!meta.value().is_string()) refuse(source, "__metadata__ value for '" + meta.key() + "' is not a string");
                content.metadata[meta.key()] = meta.value().get<std::string>();
            }
            continue;
        }
        if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
            refuse(source, "tensor '" + name + "' must be an object with dtype, shape and data_offsets");
        if (!value["dtype"].is_string()) refuse(source, "tensor '" + name + "' dtype is not a string");
        const std::string code = value["dtype"].get<std::string>();
        const std::optional<DType> dtype = dtype_from_code(code);
        if (!dtype) refuse(source, "tensor '" + name + "' has unsupported dtype '" + code + "' (expected F32, F64, I64, I32, U8 or BOOL)");
        const Json& shape_json = value["shape"];
        if (!shape_json.is_array() || shape_json.size() > limits.max_rank)
            refuse(source, "tensor '" + name + "' shape must be an array of at most " + std::to_string(limits.max_rank) + " sizes");
        Shape shape;
        uint64_t bytes_needed = dtype_size(*dtype);
        for (const Json& dim : shape_json) {
            const uint64_t extent = as_unsigned(dim, source, "tensor '" + name + "' shape entry");
            if (extent != 0 && bytes_needed > std::numeric_limits<uint64_t>::max() / extent)
                refuse(source, "tensor '" + name + "' shape overflows");
            bytes_needed *= extent;
            shape.push_back(static_cast<int64_t>(extent));
        }
        const Json& offsets = value["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2) refuse(source, "tensor '" + name + "' data_offsets must be [begin, end]");
        const uint64_t begin = as_unsigned(offsets[0], source, "tensor '" + name + "' data_offsets");
        const uint64_t end = as_unsigned(offsets[1], source, "tensor '" + name + "' data_offsets");
        if (begin > end || end > data_size)
            refuse(source, "tensor '" + name + "' data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                               "] outside the " + std::to_string(data_size) + "-byte data section");
        if (end - begin != bytes_needed)
            refuse(source, "tensor '" + name + "' is " + code + shape_str(shape) + " (" + std::to_string(bytes_needed) +
                               " bytes) but data_offsets span " + std::to_string(end - begin) + " bytes");
        entries.push_back({name, *dtype, std::move(shape), begin, end});
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t cursor = 0;
    for (const Entry& entry : entries) {
        if (entry.begin < cursor) refuse(source, "tensor '" + entry.name + "' overlaps the previous tensor's bytes");
        if (entry.begin > cursor)
            refuse(source, "gap of " + std::to_string(entry.begin - cursor) + " bytes before tensor '" + entry.name + "'");
        cursor = entry.end;
    }
    if (cursor != data_size)
        refuse(source, "data section has " + std::to_string(data_size - cursor) + " trailing bytes not owned by any tensor");
    for (const Entry& entry : entries) {
        Tensor tensor = Tensor::empty(entry.shape, {.dtype = entry.dtype});
        if (entry.end > entry.begin) std::memcpy(tensor.raw_data(), data + entry.begin, entry.end - entry.begin);
        if (entry.dtype == DType::boolean) {
            const uint8_t* flags = data + entry.begin;
            for (uint64_t i = 0; i < entry.end - entry.begin; ++i)
                if (flags[i] > 1) refuse(source, "tensor '" + entry.name + "' holds a BOOL byte that is neither 0 nor 1");
        }
        content.tensors.emplace(entry.name, std::move(tensor));
    }
    return content;
}

std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t max_bytes, const std::string& what) {
    std::error_code code;
    const auto file_size = std::filesystem::file_size(path, code);
    if (code) throw ArtifactError(what + " '" + path + "': cannot open (" + code.message() + ")");
    if (file_size > max_bytes)
        throw ArtifactError(what + " '" + path + "': file is " + std::to_string(file_size) +
                            " bytes, above the limit of " + std::to_string(max_bytes));
    std::ifstream stream(path, std::ios::binary);
    if (!stream) throw ArtifactError(what + " '" + path + "': cannot open for reading");
    std::vector<uint8_t> bytes(file_size);
    if (file_size > 0 && !stream.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(file_size)))
        throw ArtifactError(what + " '" + path + "': short read (the file changed while it was read?)");
    return bytes;
}

SafetensorsContent load_safetensors(const std::string& path, const SafetensorsLimits& limits) {
    const std::vector<uint8_t> bytes = read_file_bytes(path, limits.max_file_bytes, "safetensors");
    return parse_safetensors(bytes.data(), bytes.size(), path, limits);
}

std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors, const MetadataMap& metadata) {
    Json header = Json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::vector<Tensor> host;
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
        if (name == "__metadata__") throw ArtifactError("safetensors: '__metadata__' is reserved and cannot name a tensor");
        if (!tensor.defined()) throw ArtifactError("safetensors: tensor '" + name + "' is undefined");
        Tensor contiguous = Tensor::empty(tensor.shape(), {.dtype = tensor.dtype()});
        copy_into(contiguous, tensor);
        const uint64_t bytes = static_cast<uint64_t>(contiguous.numel()) * dtype_size(tensor.dtype());
        header[name] = {{"dtype", safetensors_dtype_code(tensor.dtype())},
                        {"shape", tensor.shape()},
                        {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        host.push_back(std::move(contiguous));
    }
    std::string text = header.dump();
    while (text.size() % 8 != 0) text.push_back(' ');
    std::vector<uint8_t> out(8 + text.size() + offset);
    const uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(length >> (8 * i));
    std::memcpy(out.data() + 8, text.data(), text.size());
    uint8_t* cursor = out.data() + 8 + text.size();
    for (const Tensor& tensor : host) {
        const size_t bytes = static_cast<size_t>(tensor.numel()) * dtype_size(tensor.dtype());
        if (bytes > 0) std::memcpy(cursor, tensor.raw_data(), bytes);
        cursor += bytes;
    }
    return out;
}

void write_file_atomically(const std::string& path, const std::vector<uint8_t>& bytes) {
    const std::string temporary = path + ".tmp";
    {
        std::ofstream stream(temporary, std::ios::binary | std::ios::trunc);
        if (!stream) throw ArtifactError("'" + temporary + "': cannot open for writing");
        stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        if (!stream) throw ArtifactError("'" + temporary + "': write failed");
    }
    std::error_code code;
    std::filesystem::rename(temporary, path, code);
    if (code) throw ArtifactError("'" + temporary + "': rename to '" + path + "' failed (" + code.message() + ")");
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const MetadataMap& metadata) {
    write_file_atomically(path, serialize_safetensors(tensors, metadata));
}

}  // namespace kasmina
