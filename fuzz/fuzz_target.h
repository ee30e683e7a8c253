// What every fuzz target in fuzz/ provides besides libFuzzer's entry point: a writer for its seed
// inputs (valid files the fuzzer mutates from), so the committed corpus can be regenerated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace kasmina::fuzz {

// Writes this target's seed inputs into `directory` (created if needed).
void write_seed_inputs(const std::filesystem::path& directory);

inline void write_input(const std::filesystem::path& directory, const std::string& name, const std::vector<uint8_t>& bytes) {
    std::filesystem::create_directories(directory);
    std::ofstream(directory / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace kasmina::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
