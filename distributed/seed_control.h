// Morphogenetic control across the ranks of a data-parallel job. The controller runs on rank 0 and
// issues its seed commands through DistributedSeedCommands; the other ranks call serve() at the same
// point of their loop and apply each command as it comes, so every rank changes its seeds at the same
// step. A kernel load carries the artifact's bytes (a rank whose store lacks it adds it), and is kept
// only if every rank accepted it: one refusal makes every rank revert it, and rank 0's call raises.
#pragma once

#include <memory>
#include <string>

#include "distributed/process_group.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/seed_commands.h"

namespace kasmina::dist {

class DistributedSeedCommands final : public morph::SeedCommands {
public:
    DistributedSeedCommands(std::shared_ptr<ProcessGroup> group, morph::MorphableModel& model, std::shared_ptr<morph::KernelStore> store);

    // Rank 0 only; each is a collective with the other ranks' serve().
    void load_kernel(const std::string& layer, int seed, uint64_t id, const morph::LoadOptions& options = {}) override;
    void unload_kernel(const std::string& layer, int seed) override;
    void set_seed_alpha(const std::string& layer, int seed, double alpha) override;
    void ramp_alpha(const std::string& layer, int seed, double target, int64_t steps) override;
    void fossilize(const std::string& layer, int seed) override;
    // Rank 0: ends the round; the other ranks' serve() returns.
    void finish();

    // Ranks other than 0: applies rank 0's commands until its finish(). Returns how many changed a seed.
    int serve();

private:
    // Rank 0: sends one command, then settles it.
    std::string exchange(const std::string& command_json);
    // Every rank: applies a command here and agrees with the other ranks on the outcome. Returns "" when
    // every rank applied it, else why (a load is reverted where it was applied; a failure on some ranks
    // only of another command raises DistributedError: the replicas have diverged).
    std::string settle(const std::string& command_json);

    std::shared_ptr<ProcessGroup> group_;
    morph::MorphableModel& model_;
    std::shared_ptr<morph::KernelStore> store_;
};

}  // namespace kasmina::dist
