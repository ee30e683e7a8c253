// Fuzz target: the checkpoint loader and the restore that follows it. Any input must either restore
// a small wrapped model (a Linear with a loaded seed, a LayerNorm) or raise an Error with the model,
// its seeds and the optimizer exactly as they were (compared byte for byte through a checkpoint of
// them), and the model must still train afterwards.
#include <cmath>
#include <cstdlib>
#include <memory>

#include "autograd/ops.h"
#include "fuzz/fuzz_target.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/checkpoint.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/layers.h"
#include "runtime/error.h"

using namespace kasmina;
using namespace kasmina::morph;

namespace {

struct Subject {
    std::shared_ptr<nn::Sequential> network;
    std::unique_ptr<MorphableModel> model;
    std::unique_ptr<optim::AdamW> optimizer;
    NamedTensors parameters;

    Subject() {
        manual_seed(5);
        const auto directory = std::filesystem::temp_directory_path() / "kasmina_fuzz_checkpoint_store";
        auto store = std::make_shared<DirectoryStore>(directory.string());
        network = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
            std::make_shared<nn::Linear>(4, 3), std::make_shared<nn::LayerNorm>(Shape{3})});
        model = std::make_unique<MorphableModel>(wrap(network, {.num_seeds = 2, .cache = std::make_shared<KernelCache>(store)}));
        model->load_kernel("0", 0, store->write(serialize_artifact(make_linear_bottleneck(4, 3, 2))));
        model->ramp_alpha("0", 0, 0.5, 3);
        refresh_parameters();
        optimizer = std::make_unique<optim::AdamW>(tensors());
        train_step();
    }
    void refresh_parameters() {
        parameters.clear();
        for (auto& [name, tensor] : network->named_parameters())
            if (tensor.requires_grad()) parameters.emplace_back(name, tensor);
    }
    std::vector<Tensor> tensors() const {
        std::vector<Tensor> result;
        for (const auto& entry : parameters) result.push_back(entry.second);
        return result;
    }
    void train_step() {
        optimizer->zero_grad();
        const Tensor loss = sum(model->forward(Tensor::randn({5, 4})));
        loss.backward();
        optimizer->step();
        if (!std::isfinite(loss.item())) std::abort();
    }
    std::vector<uint8_t> snapshot() const {
        return serialize_checkpoint(capture_checkpoint(*network, *optimizer, parameters, model.get()));
    }
};

Subject& subject() {
    static Subject instance;
    return instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Subject& s = subject();
    static const std::vector<uint8_t> baseline = s.snapshot();
    const std::vector<uint8_t> before = s.snapshot();
    try {
        const TrainingCheckpoint checkpoint = parse_checkpoint(data, size, "fuzz input");
        s.parameters = restore_checkpoint(checkpoint, *s.network, *s.optimizer, s.model.get());
    } catch (const Error&) {
        if (s.snapshot() != before) std::abort();  // a refused checkpoint changed the model
        return 0;
    }
    // Accepted: put the baseline back so every input starts from the same state.
    const TrainingCheckpoint reset = parse_checkpoint(baseline.data(), baseline.size(), "baseline");
    s.parameters = restore_checkpoint(reset, *s.network, *s.optimizer, s.model.get());
    if (s.snapshot() != baseline) std::abort();
    return 0;
}

namespace kasmina::fuzz {

void write_seed_inputs(const std::filesystem::path& directory) {
    Subject& s = subject();
    write_input(directory, "wrapped_with_seed.safetensors", s.snapshot());
    s.train_step();
    write_input(directory, "after_a_step.safetensors", s.snapshot());
    TrainingCheckpoint plain = capture_checkpoint(*s.network, *s.optimizer, s.parameters, nullptr, {{"epoch", "3"}});
    write_input(directory, "without_seed_state.safetensors", serialize_checkpoint(plain));
}

}  // namespace kasmina::fuzz
