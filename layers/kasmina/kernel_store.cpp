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

DirectoryStore::DirectoryStore(std::string directory) : directory_(std::move(directory)) {
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
    std::ifstream stream(path, std::ios::binary);
    if (!stream) raise<ArtifactError>("DirectoryStore::read", "kernel ", format_kernel_id(id), " is not in ", describe());
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
    if (stream.bad()) raise<ArtifactError>("DirectoryStore::read", "reading '", path, "' failed");
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
        const std::string temporary = path + ".tmp";
        {
            std::ofstream stream(temporary, std::ios::binary | std::ios::trunc);
            stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
            if (!stream) raise<Error>("DirectoryStore::write", "cannot write '", temporary, "'");
        }
        std::error_code error;
        fs::rename(temporary, path, error);
        if (error) raise<Error>("DirectoryStore::write", "cannot rename '", temporary, "' to '", path, "': ", error.message());
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
