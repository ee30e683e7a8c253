#include "layers/kasmina/kernel_store.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "layers/kasmina/artifact.h"
#include "runtime/error.h"

namespace kasmina::morph {

namespace fs = std::filesystem;
using Json = nlohmann::json;

DirectoryStore::DirectoryStore(std::string directory, uint64_t max_artifact_bytes)
    : directory_(std::move(directory)), max_artifact_bytes_(max_artifact_bytes) {
    std::error_code error;
    fs::create_directories(directory_, error);
    if (error || !fs::is_directory(directory_))
        raise<Error>("DirectoryStore", "cannot create or open the store directory '", directory_, "'",
                     error ? ": " + error.message() : "");
}

std::string DirectoryStore::path_of(uint64_t id) const {
    return (fs::path(directory_) / (format_kernel_id(id) + ".safetensors")).string();
}

std::string DirectoryStore::describe() const { return "directory store '" + directory_ + "'"; }

bool DirectoryStore::contains(uint64_t id) const {
    std::error_code error;
    return fs::is_regular_file(path_of(id), error);
}

std::vector<uint8_t> DirectoryStore::read(uint64_t id) const {
    const std::string path = path_of(id);
    std::error_code error;
    if (!fs::is_regular_file(path, error))
        raise<ArtifactError>("DirectoryStore::read", "kernel ", format_kernel_id(id), " is not in ", describe());
    const std::vector<uint8_t> bytes = read_file_bytes(path, max_artifact_bytes_, "DirectoryStore::read: kernel artifact");
    const uint64_t actual = content_hash(bytes.data(), bytes.size());
    if (actual != id)
        raise<ArtifactError>("DirectoryStore::read", "'", path, "' hashes to ", format_kernel_id(actual),
                             ", not its id: the file was modified or corrupted");
    return bytes;
}

uint64_t DirectoryStore::write(const std::vector<uint8_t>& bytes) {
    const uint64_t id = content_hash(bytes.data(), bytes.size());
    std::lock_guard lock(mutex_);
    const std::string path = path_of(id);
    if (!contains(id)) {
        try {
            write_file_atomically(path, bytes);
        } catch (const ArtifactError& error) {
            raise<Error>("DirectoryStore::write", error.what());
        }
    }
    update_index(id, bytes);
    return id;
}

// index.json: {"<id>": {"name", "kind", "parameters", "bytes"}} for the artifacts written here. The
// directory listing stays the source of truth; the index is for people browsing a store.
void DirectoryStore::update_index(uint64_t id, const std::vector<uint8_t>& bytes) {
    const fs::path index_path = fs::path(directory_) / "index.json";
    Json index = Json::object();
    if (std::ifstream existing(index_path); existing) {
        try {
            index = Json::parse(existing);
        } catch (const Json::exception&) {
            index = Json::object();  // a damaged index is rebuilt from what we write next
        }
        if (!index.is_object()) index = Json::object();
    }
    Json entry{{"bytes", bytes.size()}};
    try {
        const KernelArtifact artifact = parse_artifact(bytes.data(), bytes.size(), path_of(id));
        entry.update({{"name", artifact.name},
                      {"kind", kernel_kind_name(artifact.signature.kind)},
                      {"parameters", artifact.parameter_count}});
    } catch (const Error&) {
        entry["valid"] = false;  // stored as given; the cache refuses it at load time
    }
    index[format_kernel_id(id)] = entry;
    const std::string temporary = index_path.string() + ".tmp";
    {
        std::ofstream stream(temporary, std::ios::trunc);
        stream << index.dump(2) << "\n";
    }
    std::error_code error;
    fs::rename(temporary, index_path, error);
}

std::vector<uint64_t> DirectoryStore::list() const {
    std::vector<uint64_t> ids;
    for (const auto& entry : fs::directory_iterator(directory_)) {
        const fs::path& path = entry.path();
        if (path.extension() != ".safetensors" || path.stem().string().size() != 16) continue;
        try {
            ids.push_back(parse_kernel_id(path.stem().string()));
        } catch (const Error&) {
        }
    }
    std::sort(ids.begin(), ids.end());
    return ids;
}

}  // namespace kasmina::morph
