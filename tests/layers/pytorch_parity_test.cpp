// Layers, losses, optimizers and schedules against reference values generated with PyTorch
// (tools/fixtures/generate.py -> tests/fixtures/*.safetensors): outputs, input and parameter
// gradients and updated buffers, in train and eval mode. Each case is one parameterized test.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using Json = nlohmann::json;

namespace {

const std::string kFixtures = KASMINA_FIXTURES_DIR;

std::vector<std::string> case_names(const std::string& folder, const std::string& prefix) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(kFixtures + "/" + folder)) {
        const std::string name = entry.path().stem().string();
        if (name.rfind(prefix, 0) == 0) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

// Elementwise comparison that treats NaN == NaN (PyTorch's NaN rows must be reproduced, not hidden).
void expect_matches(const Tensor& actual, const Tensor& expected, const std::string& what, double tolerance = 2e-5) {
    ASSERT_TRUE(actual.defined()) << what << " is undefined";
    ASSERT_EQ(actual.shape(), expected.shape()) << what;
    const auto a = actual.to_vector<double>(), e = expected.to_vector<double>();
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::isnan(e[i])) {
            EXPECT_TRUE(std::isnan(a[i])) << what << " element " << i << " should be NaN, got " << a[i];
            continue;
        }
        EXPECT_NEAR(a[i], e[i], tolerance * std::max(1.0, std::abs(e[i]))) << what << " element " << i;
    }
}

Json config_of(const SafetensorsContent& content, const char* key = "config") {
    return Json::parse(content.metadata.at(key));
}

std::array<int64_t, 2> pair_of(const Json& config, const char* key, int64_t fallback) {
    if (!config.contains(key)) return {fallback, fallback};
    const Json& value = config[key];
    if (value.is_array()) return {value[0].get<int64_t>(), value[1].get<int64_t>()};
    return {value.get<int64_t>(), value.get<int64_t>()};
}

std::shared_ptr<nn::Module> build_module(const std::string& type, const Json& c) {
    if (type == "Linear") return std::make_shared<nn::Linear>(c["in_features"], c["out_features"], c.value("bias", true));
    if (type == "Conv2d")
        return std::make_shared<nn::Conv2d>(c["in_channels"], c["out_channels"], pair_of(c, "kernel_size", 1),
                                            nn::Conv2dOptions{.stride = pair_of(c, "stride", 1),
                                                              .padding = pair_of(c, "padding", 0),
                                                              .dilation = pair_of(c, "dilation", 1),
                                                              .groups = c.value("groups", 1),
                                                              .bias = c.value("bias", true)});
    if (type == "LayerNorm")
        return std::make_shared<nn::LayerNorm>(c["normalized_shape"].get<Shape>(),
                                               nn::LayerNormOptions{.eps = c.value("eps", 1e-5),
                                                                    .elementwise_affine = c.value("elementwise_affine", true),
                                                                    .bias = c.value("bias", true)});
    if (type == "BatchNorm1d" || type == "BatchNorm2d") {
        nn::BatchNormOptions options{.eps = c.value("eps", 1e-5),
                                     .momentum = 0.1,
                                     .affine = c.value("affine", true),
                                     .track_running_stats = c.value("track_running_stats", true)};
        if (c.contains("momentum")) options.momentum = c["momentum"].is_null() ? std::nullopt : std::optional<double>(c["momentum"]);
        if (type == "BatchNorm1d") return std::make_shared<nn::BatchNorm1d>(c["num_features"], options);
        return std::make_shared<nn::BatchNorm2d>(c["num_features"], options);
    }
    if (type == "MultiheadAttention")
        return std::make_shared<nn::MultiheadAttention>(c["embed_dim"], c["num_heads"],
                                                        nn::MultiheadAttentionOptions{.dropout = c.value("dropout", 0.0),
                                                                                      .bias = c.value("bias", true),
                                                                                      .batch_first = c.value("batch_first", false),
                                                                                      .kdim = c.value("kdim", 0),
                                                                                      .vdim = c.value("vdim", 0)});
    throw Error("unknown module type " + type);
}

Tensor leaf_copy(const Tensor& t, Device device = Device::cpu()) {
    Tensor copy = device.is_cpu() ? t.clone() : t.to(device);
    return copy.set_requires_grad(true);
}

// Every case runs on the CPU and, where a GPU is present, on CUDA too (the same fixtures; the GPU's
// tolerance allows for cuBLAS/cuDNN summation orders).
const Device kCuda = Device::cuda(0);
double tolerance_on(Device device) { return device.is_cpu() ? 2e-5 : 1e-4; }

#define SKIP_WITHOUT_GPU() \
    if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device"

void run_layer_case(const std::string& case_name, Device device) {
    const SafetensorsContent content = load_safetensors(kFixtures + "/layers/" + case_name + ".safetensors");
    const TensorMap& t = content.tensors;
    const double tolerance = tolerance_on(device);
    const std::string type = content.metadata.at("module");
    auto module = build_module(type, config_of(content));
    TensorMap state;
    for (const auto& [name, tensor] : t)
        if (name.rfind("param.", 0) == 0) state.emplace(name.substr(6), tensor);
    module->load_state_dict(state, /*strict=*/true);
    module->train(content.metadata.at("mode") == "train");
    module->to(device);

    std::map<std::string, Tensor> inputs;
    Tensor output, weights;
    if (type == "MultiheadAttention") {
        const Json call = config_of(content, "call");
        for (const char* name : {"query", "key", "value"}) inputs[name] = leaf_copy(t.at(name), device);
        nn::AttentionCall arguments{.need_weights = call.value("need_weights", true),
                                    .average_attn_weights = call.value("average_attn_weights", true),
                                    .is_causal = call.value("is_causal", false)};
        if (t.count("attn_mask")) arguments.attn_mask = t.at("attn_mask").to(device);
        if (t.count("key_padding_mask")) arguments.key_padding_mask = t.at("key_padding_mask").to(device);
        auto& attention = static_cast<nn::MultiheadAttention&>(*module);
        std::tie(output, weights) = attention.forward(inputs["query"], inputs["key"], inputs["value"], arguments);
        if (t.count("attn_weights")) expect_matches(weights, t.at("attn_weights"), "attn_weights", tolerance);
    } else {
        inputs["input"] = leaf_copy(t.at("input"), device);
        output = module->forward(inputs["input"]);
    }
    ASSERT_EQ(output.device(), device);
    expect_matches(output, t.at("output"), "output", tolerance);
    output.backward(t.at("grad_output").to(device));
    for (const auto& [name, input] : inputs) expect_matches(input.grad(), t.at("grad." + name), "grad." + name, tolerance);
    for (const auto& [name, parameter] : module->named_parameters())
        expect_matches(parameter.grad(), t.at("grad." + name), "grad." + name, tolerance);
    for (const auto& [name, buffer] : module->named_buffers())
        if (t.count("after." + name)) expect_matches(buffer, t.at("after." + name), "after." + name, device.is_cpu() ? 1e-6 : 1e-5);
}

class LayerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerParity, MatchesPyTorch) { run_layer_case(GetParam(), Device::cpu()); }

TEST_P(LayerParity, MatchesPyTorchOnCuda) {
    SKIP_WITHOUT_GPU();
    run_layer_case(GetParam(), kCuda);
}

std::string case_label(const ::testing::TestParamInfo<std::string>& info) {
    std::string label = info.param;
    for (char& c : label)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return label;
}

INSTANTIATE_TEST_SUITE_P(Linear, LayerParity, ::testing::ValuesIn(case_names("layers", "linear_")), case_label);
INSTANTIATE_TEST_SUITE_P(Conv2d, LayerParity, ::testing::ValuesIn(case_names("layers", "conv2d_")), case_label);
INSTANTIATE_TEST_SUITE_P(LayerNorm, LayerParity, ::testing::ValuesIn(case_names("layers", "layernorm_")), case_label);
INSTANTIATE_TEST_SUITE_P(BatchNorm, LayerParity, ::testing::ValuesIn(case_names("layers", "batchnorm")), case_label);
INSTANTIATE_TEST_SUITE_P(MultiheadAttention, LayerParity, ::testing::ValuesIn(case_names("layers", "mha_")), case_label);

class LossParity : public ::testing::TestWithParam<std::string> {};

void run_loss_case(const std::string& case_name, Device device) {
    const SafetensorsContent content = load_safetensors(kFixtures + "/layers/" + case_name + ".safetensors");
    const TensorMap& t = content.tensors;
    const Json config = config_of(content);
    const Reduction reduction = config.value("reduction", std::string("mean")) == "sum" ? Reduction::sum : Reduction::mean;
    Tensor input = leaf_copy(t.at("input"), device);
    const Tensor target = t.at("target").to(device);
    const Tensor loss = case_name.find("cross_entropy") != std::string::npos
                            ? cross_entropy(input, target, reduction, config.value("label_smoothing", 0.0))
                            : mse_loss(input, target, reduction);
    expect_matches(loss, t.at("output"), "loss", tolerance_on(device));
    loss.backward();
    expect_matches(input.grad(), t.at("grad.input"), "grad.input", tolerance_on(device));
}

TEST_P(LossParity, MatchesPyTorch) { run_loss_case(GetParam(), Device::cpu()); }

TEST_P(LossParity, MatchesPyTorchOnCuda) {
    SKIP_WITHOUT_GPU();
    run_loss_case(GetParam(), kCuda);
}

INSTANTIATE_TEST_SUITE_P(Losses, LossParity, ::testing::ValuesIn(case_names("layers", "loss_")), case_label);

class OptimizerParity : public ::testing::TestWithParam<std::string> {};

void run_optimizer_case(const std::string& case_name, Device device) {
    const SafetensorsContent content = load_safetensors(kFixtures + "/optim/" + case_name + ".safetensors");
    const TensorMap& t = content.tensors;
    const Json defaults = config_of(content, "defaults");
    const std::vector<std::string> names = Json::parse(content.metadata.at("param_names")).get<std::vector<std::string>>();
    std::vector<Tensor> parameters;
    for (const auto& name : names) parameters.push_back(leaf_copy(t.at("param." + name), device));
    std::unique_ptr<optim::Optimizer> optimizer;
    if (content.metadata.at("optimizer") == "SGD")
        optimizer = std::make_unique<optim::SGD>(parameters, optim::SGDOptions{.lr = defaults["lr"],
                                                                                .momentum = defaults["momentum"],
                                                                                .dampening = defaults["dampening"],
                                                                                .weight_decay = defaults["weight_decay"],
                                                                                .nesterov = defaults["nesterov"]});
    else
        optimizer = std::make_unique<optim::AdamW>(parameters, optim::AdamWOptions{.lr = defaults["lr"],
                                                                                    .beta1 = defaults["betas"][0],
                                                                                    .beta2 = defaults["betas"][1],
                                                                                    .eps = defaults["eps"],
                                                                                    .weight_decay = defaults["weight_decay"]});
    const int steps = std::stoi(content.metadata.at("steps"));
    for (int step = 1; step <= steps; ++step) {
        for (size_t i = 0; i < names.size(); ++i)
            parameters[i].set_grad(t.at("grad.step" + std::to_string(step) + "." + names[i]).to(device));
        optimizer->step();
        for (size_t i = 0; i < names.size(); ++i) {
            const std::string key = "after.step" + std::to_string(step) + "." + names[i];
            expect_matches(parameters[i], t.at(key), key, device.is_cpu() ? 1e-6 : 1e-5);
        }
    }
}

TEST_P(OptimizerParity, ThreeStepsMatchPyTorch) { run_optimizer_case(GetParam(), Device::cpu()); }

TEST_P(OptimizerParity, ThreeStepsMatchPyTorchOnCuda) {
    SKIP_WITHOUT_GPU();
    run_optimizer_case(GetParam(), kCuda);
}

INSTANTIATE_TEST_SUITE_P(SGD, OptimizerParity, ::testing::ValuesIn(case_names("optim", "sgd_")), case_label);
INSTANTIATE_TEST_SUITE_P(AdamW, OptimizerParity, ::testing::ValuesIn(case_names("optim", "adamw_")), case_label);

TEST(SchedulerParity, StepLRAndCosineAnnealingMatchPyTorch) {
    for (const std::string name : {"lr_step_lr", "lr_cosine_annealing"}) {
        const SafetensorsContent content = load_safetensors(kFixtures + "/optim/" + name + ".safetensors");
        const Json config = config_of(content);
        Tensor p = Tensor::zeros({1}).set_requires_grad(true);
        optim::SGD optimizer({p}, {.lr = std::stod(content.metadata.at("base_lr"))});
        std::unique_ptr<optim::LRScheduler> scheduler;
        if (content.metadata.at("scheduler") == "StepLR")
            scheduler = std::make_unique<optim::StepLR>(optimizer, config["step_size"], config["gamma"]);
        else
            scheduler = std::make_unique<optim::CosineAnnealingLR>(optimizer, config["T_max"], config["eta_min"]);
        const std::vector<double> expected = content.tensors.at("lrs").to_vector<double>();
        for (size_t epoch = 0; epoch < expected.size(); ++epoch) {
            EXPECT_NEAR(optimizer.learning_rate(), expected[epoch], 1e-12) << name << " epoch " << epoch;
            scheduler->step();
        }
    }
}

}  // namespace
