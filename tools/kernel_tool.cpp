// kasmina-kernel: makes kernel artifacts from the blueprints, and inspects or verifies artifact files.
//   kasmina-kernel make --kind linear --in 128 --out 128 --hidden 32 --out-dir store/
//   kasmina-kernel make --kind conv2d --in 32 --out 64 --hidden 16 --kernel 3 --stride 2 --padding 1 --out-dir store/
//   kasmina-kernel make --kind attention --heads 4 --head-dim 16 --hidden 16 --targets 0,2 --out-dir store/
//   kasmina-kernel make --kind norm --features 64 --channel-dim 1 --out-dir store/
//   kasmina-kernel inspect FILE      kasmina-kernel verify FILE
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/kernel_store.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

void usage(FILE* stream) {
    std::fprintf(stream,
                 "usage: kasmina-kernel make --kind linear|conv2d|attention|norm [sizes] --out-dir DIR\n"
                 "                           [--alpha X] [--seed N] [--name TEXT]\n"
                 "         linear:    --in N --out N --hidden N\n"
                 "         conv2d:    --in C --out C --hidden C --kernel K[,K] [--stride S[,S]] [--padding P[,P]]\n"
                 "                    [--dilation D[,D]]   (the host conv's geometry; the kernel honours it)\n"
                 "         attention: --heads H --head-dim D --hidden N --targets h[,h...]\n"
                 "         norm:      --features N[,N...] --channel-dim 1 (BatchNorm) | -1 (LayerNorm)\n"
                 "       kasmina-kernel inspect FILE   print an artifact's description\n"
                 "       kasmina-kernel verify FILE    validate an artifact (exit 0 when valid, 1 otherwise)\n");
}

std::vector<int64_t> integers(const std::string& flag, const std::string& text) {
    std::vector<int64_t> values;
    std::stringstream stream(text);
    std::string piece;
    while (std::getline(stream, piece, ',')) {
        char* end = nullptr;
        const long long value = std::strtoll(piece.c_str(), &end, 10);
        if (piece.empty() || *end != '\0') throw Error(make_message(flag, " expects integers separated by commas, got '", text, "'"));
        values.push_back(value);
    }
    if (values.empty()) throw Error(make_message(flag, " needs a value"));
    return values;
}

// Command-line options after the sub-command, as flag -> value.
class Options {
public:
    Options(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            const std::string flag = argv[i];
            if (flag.rfind("--", 0) != 0 || i + 1 >= argc) throw Error("expected --flag VALUE, got '" + flag + "'");
            values_[flag] = argv[++i];
        }
    }
    bool has(const std::string& flag) const { return values_.count(flag) != 0; }
    std::string text(const std::string& flag) const {
        const auto found = values_.find(flag);
        if (found == values_.end()) throw Error("missing " + flag);
        used_[flag] = true;
        return found->second;
    }
    std::string text(const std::string& flag, const std::string& fallback) const { return has(flag) ? text(flag) : fallback; }
    int64_t integer(const std::string& flag) const {
        const std::vector<int64_t> values = integers(flag, text(flag));
        if (values.size() != 1) throw Error(flag + " expects one integer");
        return values[0];
    }
    std::array<int64_t, 2> pair(const std::string& flag, int64_t fallback) const {
        if (!has(flag)) return {fallback, fallback};
        const std::vector<int64_t> values = integers(flag, text(flag));
        if (values.size() == 1) return {values[0], values[0]};
        if (values.size() == 2) return {values[0], values[1]};
        throw Error(flag + " expects one or two integers");
    }
    void check_all_used() const {
        for (const auto& [flag, value] : values_)
            if (!used_.count(flag)) throw Error("unknown or unused option " + flag);
    }

private:
    std::map<std::string, std::string> values_;
    mutable std::map<std::string, bool> used_;
};

int make(const Options& options) {
    const std::string kind = options.text("--kind");
    const double alpha = std::strtod(options.text("--alpha", "0.3").c_str(), nullptr);
    Generator generator(static_cast<uint64_t>(std::strtoull(options.text("--seed", "1").c_str(), nullptr, 10)));
    const std::string directory = options.text("--out-dir");
    const bool named = options.has("--name");
    const std::string name = named ? options.text("--name") : "";
    KernelArtifact artifact;
    if (kind == "linear") {
        artifact = make_linear_bottleneck(options.integer("--in"), options.integer("--out"), options.integer("--hidden"), alpha,
                                          named ? name : "linear-bottleneck", &generator);
    } else if (kind == "conv2d") {
        artifact = make_conv_bottleneck(options.integer("--in"), options.integer("--out"), options.integer("--hidden"),
                                        options.pair("--kernel", 3), options.pair("--stride", 1), options.pair("--padding", 0),
                                        options.pair("--dilation", 1), alpha, named ? name : "conv-bottleneck", &generator);
    } else if (kind == "attention") {
        artifact = make_attention_head_mlp(options.integer("--heads"), options.integer("--head-dim"), options.integer("--hidden"),
                                           integers("--targets", options.text("--targets")), alpha,
                                           named ? name : "head-context-mlp", &generator);
    } else if (kind == "norm") {
        artifact = make_norm_affine(integers("--features", options.text("--features")), options.integer("--channel-dim"), alpha,
                                    named ? name : "norm-affine", &generator);
    } else {
        throw Error("--kind must be linear, conv2d, attention or norm, got '" + kind + "'");
    }
    options.check_all_used();
    DirectoryStore store(directory);
    const uint64_t id = store.write(serialize_artifact(artifact));
    std::printf("%s %s (%s, %lld parameters)\n", format_kernel_id(id).c_str(), store.path_of(id).c_str(), artifact.name.c_str(),
                static_cast<long long>(artifact.parameter_count));
    return 0;
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream stream(path, std::ios::binary);
    if (!stream) throw ArtifactError("cannot open '" + path + "'");
    return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    try {
        if (command == "make") return make(Options(argc, argv, 2));
        if ((command == "inspect" || command == "verify") && argc == 3) {
            const std::vector<uint8_t> bytes = read_file(argv[2]);
            const uint64_t id = content_hash(bytes.data(), bytes.size());
            try {
                const KernelArtifact artifact = parse_artifact(bytes.data(), bytes.size(), argv[2]);
                if (command == "verify")
                    std::printf("%s: valid %s kernel, id %s, %lld parameters\n", argv[2], kernel_kind_name(artifact.signature.kind),
                                format_kernel_id(id).c_str(), static_cast<long long>(artifact.parameter_count));
                else
                    std::printf("file:            %s\nid:              %s\nbytes:           %zu\n%s", argv[2],
                                format_kernel_id(id).c_str(), bytes.size(), describe_artifact(artifact).c_str());
                return 0;
            } catch (const ArtifactError& error) {
                std::fprintf(stderr, "%s: INVALID: %s\n", argv[2], error.what());
                return 1;
            }
        }
        usage(stderr);
        return 2;
    } catch (const Error& error) {
        std::fprintf(stderr, "kasmina-kernel: %s\n", error.what());
        return 2;
    }
}
