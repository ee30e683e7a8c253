// Kernel stores: where artifacts come from, addressed by kernel id (the content hash of the file).
// The embedded default is a directory of "<id>.safetensors" files plus an index ("index.json"); the
// interface lets other stores (remote, in-memory) plug into the kernel cache.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kasmina::morph {

class KernelStore {
public:
    virtual ~KernelStore() = default;
    virtual bool contains(uint64_t id) const = 0;
    // The artifact file's bytes; raises ArtifactError when absent, unreadable, or when the bytes no
    // longer hash to `id` (the file was changed or corrupted).
    virtual std::vector<uint8_t> read(uint64_t id) const = 0;
    // Stores `bytes` under their content hash and returns it (storing the same bytes twice is a no-op).
    virtual uint64_t write(const std::vector<uint8_t>& bytes) = 0;
    virtual std::vector<uint64_t> list() const = 0;
    virtual std::string describe() const = 0;  // for messages, e.g. "directory store 'store/'"
};

class DirectoryStore final : public KernelStore {
public:
    // Creates the directory if needed; raises Error if it cannot. Files above `max_artifact_bytes`
    // are refused before they are read.
    explicit DirectoryStore(std::string directory, uint64_t max_artifact_bytes = 64ull << 20);
    bool contains(uint64_t id) const override;
    std::vector<uint8_t> read(uint64_t id) const override;
    uint64_t write(const std::vector<uint8_t>& bytes) override;  // atomic: temp file, then rename
    std::vector<uint64_t> list() const override;
    std::string describe() const override;

    std::string path_of(uint64_t id) const;  // "<directory>/<16 hex digits>.safetensors"
    const std::string& directory() const { return directory_; }

private:
    void update_index(uint64_t id, const std::vector<uint8_t>& bytes);  // under mutex_

    std::string directory_;
    uint64_t max_artifact_bytes_;
    mutable std::mutex mutex_;
};

}  // namespace kasmina::morph
