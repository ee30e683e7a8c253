// A kernel store and cache in a scratch directory for the Kasmina layer tests, removed afterwards.
// The directory carries the process id, so test processes running side by side never share one.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "layers/kasmina/artifact.h"
#include "layers/kasmina/kernel_cache.h"
#include "layers/kasmina/kernel_store.h"

namespace kasmina::testing {

struct ScratchKernelStore {
    std::filesystem::path directory;
    std::shared_ptr<morph::DirectoryStore> store;
    std::shared_ptr<morph::KernelCache> cache;
    explicit ScratchKernelStore(const std::string& name)
        : directory(std::filesystem::temp_directory_path() /
                    ("kasmina_test_store_" + name + "_" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(directory);
        store = std::make_shared<morph::DirectoryStore>(directory.string());
        cache = std::make_shared<morph::KernelCache>(store);
    }
    ~ScratchKernelStore() { std::filesystem::remove_all(directory); }
    uint64_t add(const morph::KernelArtifact& artifact) { return store->write(morph::serialize_artifact(artifact)); }
};

}  // namespace kasmina::testing
