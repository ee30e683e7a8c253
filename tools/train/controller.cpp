#include "tools/train/controller.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "layers/kasmina/blueprints.h"
#include "runtime/grad_mode.h"

namespace kasmina::train {
namespace {

// A bottleneck whose last projection is zero outputs zeros: ramping it in only scales the layer's own
// output by (1 - alpha) — which a following batch norm undoes — instead of blending in noise, and the
// kernel grows from there (the zero-initialized residual branch).
morph::KernelArtifact quiet(morph::KernelArtifact artifact) {
    for (auto op = artifact.ops.rbegin(); op != artifact.ops.rend(); ++op) {
        if (op->weight.empty()) continue;
        NoGradGuard no_grad;
        artifact.tensors.at(op->weight).zero_();
        if (!op->bias.empty()) artifact.tensors.at(op->bias).zero_();
        break;
    }
    return artifact;
}

// The blueprint that fits a layer of the demo network (any layer Kasmina wraps).
morph::KernelArtifact blueprint(morph::KasminaLayerBase& layer, double alpha, int64_t hidden, Generator* generator) {
    nn::Module& module = layer.module();
    auto width = [&](int64_t standard) { return hidden > 0 ? hidden : standard; };
    if (auto* linear = dynamic_cast<nn::Linear*>(&module))
        return morph::make_linear_bottleneck(linear->in_features(), linear->out_features(), width(32), alpha, "fc-bottleneck", generator);
    if (auto* conv = dynamic_cast<nn::Conv2d*>(&module))
        return morph::make_conv_bottleneck(conv->in_channels(), conv->out_channels(), width(16), conv->kernel_size(), conv->params().stride,
                                           conv->params().padding, conv->params().dilation, alpha, "conv-bottleneck", generator);
    if (auto* attention = dynamic_cast<nn::MultiheadAttention*>(&module))
        return morph::make_attention_head_mlp(attention->num_heads(), attention->head_dim(), width(16), {0, 2}, alpha, "head-mlp", generator);
    if (auto* norm = dynamic_cast<nn::LayerNorm*>(&module))
        return morph::make_norm_affine(norm->normalized_shape(), -1, alpha, "feature-affine", generator);
    auto& batch_norm = dynamic_cast<nn::BatchNorm&>(module);
    return morph::make_norm_affine({batch_norm.num_features()}, 1, alpha, "channel-affine", generator);
}

morph::KernelArtifact blueprint_for(morph::KasminaLayerBase& layer, const ControllerOptions& options, Generator* generator) {
    morph::KernelArtifact artifact = blueprint(layer, options.target_alpha, options.seed_hidden, generator);
    const bool affine = artifact.ops.size() == 1;  // the norm kernels start as the identity already
    return options.quiet_start && !affine ? quiet(std::move(artifact)) : artifact;
}

}  // namespace

Controller::Controller(ControllerOptions options, std::shared_ptr<morph::KernelStore> store)
    : options_(options), store_(std::move(store)) {}

void Controller::log(Decision decision) {
    std::printf("  [controller] epoch %d: %s%s%s%s%s — %s\n", decision.epoch, decision.action.c_str(),
                decision.layer.empty() ? "" : " ", decision.layer.c_str(),
                decision.seed >= 0 ? (" seed " + std::to_string(decision.seed)).c_str() : "",
                decision.kernel.empty() ? "" : (" kernel " + decision.kernel).c_str(), decision.reason.c_str());
    decisions_.push_back(std::move(decision));
}

bool Controller::after_epoch(int epoch, double accuracy, morph::MorphableModel& model, const std::function<double()>& evaluate) {
    const double gain = previous_accuracy_ < 0 ? 100.0 : accuracy - previous_accuracy_;
    previous_accuracy_ = accuracy;
    if (phase_ == Phase::watching) {
        const bool deadline = options_.latest_epoch > 0 && epoch >= options_.latest_epoch;
        if (epoch < options_.min_epoch || (gain >= options_.plateau_delta && !deadline)) {
            log({epoch, "wait", "", -1, "",
                 make_message("validation ", accuracy, "% (", gain >= 100 ? std::string("first epoch") : make_message("+", gain, " points"),
                              "); no plateau")});
            return false;
        }
        if (gain < options_.plateau_delta)
            log({epoch, "plateau", "", -1, "", make_message("validation gain ", gain, " points < ", options_.plateau_delta)});
        else
            log({epoch, "deadline", "", -1, "",
                 gain >= 100 ? make_message("validation ", accuracy, "% after the first epoch; germinating by the latest epoch set (",
                                            options_.latest_epoch, ")")
                             : make_message("no plateau by epoch ", options_.latest_epoch, " (gain ", gain, " points); germinating anyway")});
        germinate(epoch, model);
        return true;
    }
    if (phase_ == Phase::evaluating && epoch >= germination_epoch_ + options_.evaluation_epochs) {
        judge(epoch, model, evaluate);
        return true;
    }
    return false;
}

void Controller::germinate(int epoch, morph::MorphableModel& model) {
    morph::LocalSeedCommands local(model);
    morph::SeedCommands& commands = commands_ ? *commands_ : local;
    Generator generator(options_.seed * 7919 + static_cast<uint64_t>(epoch));
    for (const std::string& name : model.kasmina_layers()) {
        morph::KasminaLayerBase& layer = model.layer(name);
        const morph::KernelArtifact artifact = blueprint_for(layer, options_, &generator);
        const std::vector<uint8_t> bytes = morph::serialize_artifact(artifact);
        const uint64_t id = morph::content_hash(bytes.data(), bytes.size());
        const bool known = store_->contains(id);
        if (!known) store_->write(bytes);
        const int seed = 0;
        try {
            commands.load_kernel(name, seed, id, {.alpha = 0.0});
            commands.ramp_alpha(name, seed, options_.target_alpha, options_.ramp_steps);
            germinated_.emplace_back(name, seed);
            log({epoch, "germinate", name, seed, morph::format_kernel_id(id),
                 make_message(known ? "picked from the store" : "generated", ", ", artifact.name, ", ", artifact.parameter_count,
                              " parameters, alpha 0 -> ", options_.target_alpha, " over ", options_.ramp_steps, " steps")});
        } catch (const Error& error) {
            log({epoch, "refused", name, seed, morph::format_kernel_id(id), error.what()});
        }
    }
    germination_epoch_ = epoch;
    phase_ = Phase::evaluating;
}

void Controller::judge(int epoch, morph::MorphableModel& model, const std::function<double()>& evaluate) {
    morph::LocalSeedCommands local(model);
    morph::SeedCommands& commands = commands_ ? *commands_ : local;
    const double with_all = evaluate();
    for (const auto& [name, seed] : germinated_) {
        morph::KasminaLayerBase& layer = model.layer(name);
        const morph::SeedReport report = layer.layer_stats()[seed];
        if (report.lifecycle != morph::SeedLifecycle::active) {
            log({epoch, "unload", name, seed, morph::format_kernel_id(report.kernel_id),
                 make_message("seed is ", morph::lifecycle_name(report.lifecycle))});
            if (report.lifecycle == morph::SeedLifecycle::error_recovery) commands.unload_kernel(name, seed);
            continue;
        }
        // Ablation: validation accuracy with this seed's alpha at 0, everything else as is.
        layer.set_seed_alpha(seed, 0.0);
        const double without = evaluate();
        const double contribution = with_all - without;
        if (contribution > options_.keep_margin) {
            layer.set_seed_alpha(seed, report.alpha);  // the probe undone
            commands.fossilize(name, seed);
            log({epoch, "keep", name, seed, morph::format_kernel_id(report.kernel_id),
                 make_message("fossilized at alpha ", report.alpha, ": removing it costs ", contribution, " points")});
        } else {
            layer.set_seed_alpha(seed, report.alpha);  // the probe undone, then the decision for every rank
            commands.unload_kernel(name, seed);
            log({epoch, "unload", name, seed, morph::format_kernel_id(report.kernel_id),
                 make_message("removing it changes validation by ", -contribution, " points (no help)")});
        }
    }
    phase_ = Phase::done;
}

std::string Controller::save_state() const {
    nlohmann::json germinated = nlohmann::json::array();
    for (const auto& [name, seed] : germinated_) germinated.push_back({name, seed});
    nlohmann::json decisions = nlohmann::json::array();
    for (const Decision& d : decisions_)
        decisions.push_back({{"epoch", d.epoch}, {"action", d.action}, {"layer", d.layer}, {"seed", d.seed}, {"kernel", d.kernel},
                             {"reason", d.reason}});
    return nlohmann::json{{"phase", static_cast<int>(phase_)},
                          {"germination_epoch", germination_epoch_},
                          {"previous_accuracy", previous_accuracy_},
                          {"germinated", germinated},
                          {"decisions", decisions}}
        .dump();
}

void Controller::load_state(const std::string& text) {
    const nlohmann::json state = nlohmann::json::parse(text);
    phase_ = static_cast<Phase>(state.at("phase").get<int>());
    germination_epoch_ = state.at("germination_epoch");
    previous_accuracy_ = state.at("previous_accuracy");
    germinated_.clear();
    for (const auto& entry : state.at("germinated")) germinated_.emplace_back(entry[0].get<std::string>(), entry[1].get<int>());
    decisions_.clear();
    for (const auto& d : state.at("decisions"))
        decisions_.push_back({d.at("epoch"), d.at("action"), d.at("layer"), d.at("seed"), d.at("kernel"), d.at("reason")});
}

}  // namespace kasmina::train
