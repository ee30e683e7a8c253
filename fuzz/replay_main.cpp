// Runs a fuzz target without libFuzzer: over every file of the given files and directories (the
// committed corpus and the regression inputs of crashes found so far), so the normal and sanitizer
// builds check them on every test run. `--write-seeds DIR` regenerates the target's seed inputs.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_target.h"

namespace fs = std::filesystem;

namespace {

void replay(const fs::path& file) {
    std::ifstream stream(file, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--write-seeds") {
        kasmina::fuzz::write_seed_inputs(argv[2]);
        return 0;
    }
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE_OR_DIR... | --write-seeds DIR\n", argv[0]);
        return 2;
    }
    int count = 0;
    for (int i = 1; i < argc; ++i) {
        const fs::path path = argv[i];
        if (!fs::exists(path)) {
            std::fprintf(stderr, "%s: '%s' does not exist\n", argv[0], argv[i]);
            return 2;
        }
        if (fs::is_directory(path)) {
            for (const auto& entry : fs::recursive_directory_iterator(path))
                if (entry.is_regular_file()) replay(entry.path()), ++count;
        } else {
            replay(path), ++count;
        }
    }
    std::printf("replayed %d inputs without a crash\n", count);
    return count > 0 ? 0 : 1;
}
