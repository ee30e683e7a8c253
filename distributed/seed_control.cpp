#include "distributed/seed_control.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <nlohmann/json.hpp>

#include "layers/kasmina/artifact.h"

namespace kasmina::dist {
namespace {

using Json = nlohmann::json;

std::string to_hex(const std::vector<uint8_t>& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    text.reserve(bytes.size() * 2);
    for (const uint8_t byte : bytes) text += {digits[byte >> 4], digits[byte & 15]};
    return text;
}

std::vector<uint8_t> from_hex(const std::string& text) {
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        raise<DistributedError>("DistributedSeedCommands", "the artifact bytes of a command are not hex");
    };
    if (text.size() % 2) raise<DistributedError>("DistributedSeedCommands", "the artifact bytes of a command have odd length");
    std::vector<uint8_t> bytes(text.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]));
    return bytes;
}

}  // namespace

DistributedSeedCommands::DistributedSeedCommands(std::shared_ptr<ProcessGroup> group, morph::MorphableModel& model,
                                                 std::shared_ptr<morph::KernelStore> store)
    : group_(std::move(group)), model_(model), store_(std::move(store)) {}

namespace {
void apply(const Json& command, morph::MorphableModel& model, morph::KernelStore* store) {
    const std::string op = command.at("op");
    const std::string layer = command.at("layer");
    const int seed = command.at("seed");
    if (op == "load_kernel") {
        const uint64_t id = morph::parse_kernel_id(command.at("kernel").get<std::string>());
        const std::vector<uint8_t> bytes = from_hex(command.at("artifact"));
        if (!store->contains(id)) store->write(bytes);  // the store checks the bytes against their id
        morph::LoadOptions options{.trainable = command.at("trainable").get<bool>()};
        if (command.contains("alpha")) options.alpha = command.at("alpha").get<double>();
        model.load_kernel(layer, seed, id, options);
    } else if (op == "unload_kernel") {
        model.unload_kernel(layer, seed);
    } else if (op == "set_seed_alpha") {
        model.set_seed_alpha(layer, seed, command.at("alpha"));
    } else if (op == "ramp_alpha") {
        model.ramp_alpha(layer, seed, command.at("target"), command.at("steps"));
    } else if (op == "fossilize") {
        model.fossilize(layer, seed);
    } else {
        raise<DistributedError>("DistributedSeedCommands", "unknown command '", op, "'");
    }
}
}  // namespace

std::string DistributedSeedCommands::exchange(const std::string& sent) {
    group_->broadcast_bytes(std::vector<uint8_t>(sent.begin(), sent.end()), 0);
    return settle(sent);
}

std::string DistributedSeedCommands::settle(const std::string& command_json) {
    const Json command = Json::parse(command_json);
    const bool load = command.at("op") == "load_kernel";
    std::optional<morph::SeedState> before;
    if (load) {
        // Only a load into a DORMANT seed can be undone exactly; every rank holds the same seed state.
        before = model_.layer(command.at("layer")).seeds().state_copy();
        if (before->lifecycle(command.at("seed")) != morph::SeedLifecycle::dormant)
            raise<Error>("load_kernel", "data-parallel loads need a DORMANT seed; ", command.at("layer").get<std::string>(), " seed ",
                         command.at("seed").get<int>(), " is ", morph::lifecycle_name(before->lifecycle(command.at("seed"))));
    }
    std::string error;
    try {
        apply(command, model_, store_.get());
    } catch (const std::exception& failure) {
        error = failure.what();
        std::fprintf(stderr, "[rank %d] %s %s seed %d refused: %s\n", group_->rank(), command.at("op").get<std::string>().c_str(),
                     command.at("layer").get<std::string>().c_str(), command.at("seed").get<int>(), error.c_str());
    }
    const std::vector<int64_t> failed = group_->all_gather_flags(error.empty() ? 0 : 1);
    std::string refusing;
    for (size_t r = 0; r < failed.size(); ++r)
        if (failed[r]) refusing += make_message(refusing.empty() ? "" : ", ", r);
    if (refusing.empty()) return "";
    if (load) {
        if (error.empty()) model_.layer(command.at("layer")).seeds().revert_load(command.at("seed"), *before);
        return make_message("refused on rank(s) ", refusing, error.empty() ? "" : ": ", error, "; reverted on every rank");
    }
    if (std::count(failed.begin(), failed.end(), 0) > 0)
        raise<DistributedError>(command.at("op").get<std::string>().c_str(), "failed on rank(s) ", refusing,
                                " only: the ranks' seeds have diverged (", error, ")");
    return error;  // the same failure on every rank (their seeds are identical): an ordinary refusal
}

namespace {
Json base(const char* op, const std::string& layer, int seed) { return {{"op", op}, {"layer", layer}, {"seed", seed}}; }
}  // namespace

void DistributedSeedCommands::load_kernel(const std::string& layer, int seed, uint64_t id, const morph::LoadOptions& options) {
    if (group_->rank() != 0) raise<DistributedError>("load_kernel", "seed commands come from rank 0; rank ", group_->rank(), " serves");
    Json command = base("load_kernel", layer, seed);
    command["kernel"] = morph::format_kernel_id(id);
    command["artifact"] = to_hex(store_->read(id));
    command["trainable"] = options.trainable;
    if (options.alpha) command["alpha"] = *options.alpha;
    const std::string error = exchange(command.dump());
    if (!error.empty()) raise<ArtifactError>("load_kernel", layer, " seed ", seed, " kernel ", morph::format_kernel_id(id), ": ", error);
}

#define KASMINA_SEED_COMMAND(op_name, ...)                                                                                        \
    if (group_->rank() != 0) raise<DistributedError>(op_name, "seed commands come from rank 0; rank ", group_->rank(), " serves"); \
    Json command = base(op_name, layer, seed);                                                                                    \
    __VA_ARGS__;                                                                                                                  \
    const std::string error = exchange(command.dump());                                                                           \
    if (!error.empty()) raise<Error>(op_name, layer, " seed ", seed, ": ", error)

void DistributedSeedCommands::unload_kernel(const std::string& layer, int seed) { KASMINA_SEED_COMMAND("unload_kernel", (void)0); }
void DistributedSeedCommands::set_seed_alpha(const std::string& layer, int seed, double alpha) {
    KASMINA_SEED_COMMAND("set_seed_alpha", command["alpha"] = alpha);
}
void DistributedSeedCommands::ramp_alpha(const std::string& layer, int seed, double target, int64_t steps) {
    KASMINA_SEED_COMMAND("ramp_alpha", command["target"] = target; command["steps"] = steps);
}
void DistributedSeedCommands::fossilize(const std::string& layer, int seed) { KASMINA_SEED_COMMAND("fossilize", (void)0); }
#undef KASMINA_SEED_COMMAND

void DistributedSeedCommands::finish() {
    if (group_->rank() != 0) raise<DistributedError>("finish", "only rank 0 ends a round of seed commands");
    const std::string done = Json{{"op", "done"}}.dump();
    group_->broadcast_bytes(std::vector<uint8_t>(done.begin(), done.end()), 0);
}

int DistributedSeedCommands::serve() {
    if (group_->rank() == 0) raise<DistributedError>("serve", "rank 0 issues the seed commands; the other ranks serve");
    int applied = 0;
    while (true) {
        const std::vector<uint8_t> bytes = group_->broadcast_bytes({}, 0);
        const std::string text(bytes.begin(), bytes.end());
        if (Json::parse(text).at("op") == "done") return applied;
        if (settle(text).empty()) ++applied;
    }
}

}  // namespace kasmina::dist
