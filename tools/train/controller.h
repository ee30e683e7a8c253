// The controller of the training loop (the Tamiyo role): watches validation accuracy; at a plateau
// it generates kernels into the directory store (or picks the same ones already there), loads them
// into chosen seeds, ramps their alpha, and after an evaluation period keeps (fossilizes) the seeds
// whose removal would cost validation accuracy and unloads the others. Every decision is logged.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/seed_commands.h"
#include "layers/kasmina/wrap.h"

namespace kasmina::train {

struct ControllerOptions {
    double plateau_delta = 1.0;  // percentage points of validation accuracy gained per epoch below which we germinate
    // By default seeds germinate after the first epoch, 64 wide: in the demo's 6-epoch budget they need
    // the remaining epochs to train, and the width to add something (bench/NOTES.md has the sweep).
    int min_epoch = 1;           // never germinate before this epoch (1-based)
    int latest_epoch = 1;        // germinate after this epoch even without a plateau (0: only at a plateau)
    int evaluation_epochs = 1;   // epochs of training before judging germinated seeds
    double target_alpha = 0.3;
    int64_t ramp_steps = 150;
    double keep_margin = 0.0;    // a seed is kept if ablating it lowers validation accuracy by more than this
    int64_t seed_hidden = 64;    // hidden width of generated bottleneck kernels (0: 32 for linear, 16 for conv and heads)
    bool quiet_start = true;     // bottleneck kernels start with a zero last projection (no noise blended in)
    uint64_t seed = 1;
};

struct Decision {
    int epoch = 0;
    std::string action;  // "germinate", "keep", "unload", "plateau", "wait"
    std::string layer;
    int seed = -1;
    std::string kernel;  // id
    std::string reason;
};

class Controller {
public:
    enum class Phase { watching, evaluating, done };

    Controller(ControllerOptions options, std::shared_ptr<morph::KernelStore> store);
    // After each epoch: `validation_accuracy` in percent; `evaluate` measures validation accuracy now
    // (used for ablations). Returns true when the set of trainable parameters changed.
    bool after_epoch(int epoch, double validation_accuracy, morph::MorphableModel& model,
                     const std::function<double()>& evaluate);

    // Where load/ramp/keep/unload go (e.g. dist::DistributedSeedCommands, to reach every rank); by default
    // straight to the model. Ablation probes stay local and are undone before the decision.
    void set_commands(morph::SeedCommands* commands) { commands_ = commands; }

    Phase phase() const { return phase_; }
    int germination_epoch() const { return germination_epoch_; }
    const std::vector<Decision>& decisions() const { return decisions_; }
    // Serialized controller state for checkpoints (JSON text) and its inverse.
    std::string save_state() const;
    void load_state(const std::string& text);

private:
    void log(Decision decision);
    void germinate(int epoch, morph::MorphableModel& model);
    void judge(int epoch, morph::MorphableModel& model, const std::function<double()>& evaluate);

    ControllerOptions options_;
    morph::SeedCommands* commands_ = nullptr;  // null: LocalSeedCommands on the model passed in
    std::shared_ptr<morph::KernelStore> store_;
    Phase phase_ = Phase::watching;
    int germination_epoch_ = 0;
    double previous_accuracy_ = -1.0;
    std::vector<std::pair<std::string, int>> germinated_;  // (layer, seed)
    std::vector<Decision> decisions_;
};

}  // namespace kasmina::train
