// The module system: dotted names, parameters vs buffers, train/eval, dtype moves, state dicts
// (strict loading, errors that leave the module unchanged) and safetensors save/load.
#include <filesystem>
#include <map>

#include "layers/layers.h"
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_tensors_close;

namespace {

std::shared_ptr<nn::Sequential> small_network() {
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(4, 3), std::make_shared<nn::BatchNorm1d>(3), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Linear>(3, 2, false)});
}

// A Linear, a LayerNorm and a BatchNorm1d nested in a Sequential: parameters and buffers at depth one.
std::shared_ptr<nn::Sequential> nested_network() {
    return std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(4, 3), std::make_shared<nn::LayerNorm>(Shape{3}), std::make_shared<nn::BatchNorm1d>(3)});
}

// A state dict for `module` in which every entry differs from the module's own (each value + 1).
TensorMap shifted_state(const nn::Module& module) {
    TensorMap state;
    for (const auto& [name, tensor] : module.state_dict())
        state.emplace(name, add(tensor, Tensor::scalar(1.0, {.dtype = tensor.dtype()})));
    return state;
}

// Every parameter and buffer, element by element.
std::map<std::string, std::vector<double>> values_of(const nn::Module& module) {
    std::map<std::string, std::vector<double>> values;
    for (const auto& [name, tensor] : module.state_dict()) values[name] = tensor.to_vector<double>();
    return values;
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& entries) {
    std::vector<std::string> names;
    for (const auto& entry : entries) names.push_back(entry.first);
    return names;
}

}  // namespace

TEST(Module, ParametersAndBuffersHaveDottedNamesLikePyTorch) {
    const auto network = small_network();
    EXPECT_EQ(names_of(network->named_parameters()),
              (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight"}));
    EXPECT_EQ(names_of(network->named_buffers()),
              (std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"}));
    EXPECT_EQ(network->parameters().size(), 5u);
    for (const Tensor& p : network->parameters()) EXPECT_TRUE(p.requires_grad());
    for (const auto& [name, b] : network->named_buffers()) EXPECT_FALSE(b.requires_grad()) << name;
}

TEST(Module, MultiheadAttentionNamesMatchPyTorch) {
    nn::MultiheadAttention packed(8, 2);
    EXPECT_EQ(names_of(packed.named_parameters()),
              (std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}));
    nn::MultiheadAttention separate(8, 2, {.kdim = 5, .vdim = 6});
    EXPECT_EQ(names_of(separate.named_parameters()),
              (std::vector<std::string>{"q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight",
                                        "out_proj.bias"}));
}

TEST(Module, TrainAndEvalPropagateToChildren) {
    const auto network = small_network();
    EXPECT_TRUE((*network)[1]->is_training());
    network->eval();
    for (const auto& [name, module] : network->named_modules()) EXPECT_FALSE(module->is_training()) << name;
    network->train();
    EXPECT_TRUE((*network)[1]->is_training());
}

TEST(Module, StateDictRoundTripsThroughSafetensors) {
    const auto a = small_network(), b = small_network();
    const auto path = (std::filesystem::temp_directory_path() / "kasmina_module_state.safetensors").string();
    a->save(path);
    b->load(path);
    const TensorMap state_a = a->state_dict(), state_b = b->state_dict();
    ASSERT_EQ(state_a.size(), state_b.size());
    for (const auto& [name, tensor] : state_a) expect_tensors_close(state_b.at(name), tensor, 0);
    std::filesystem::remove(path);
}

TEST(Module, LoadingKeepsHandlesValid) {
    nn::Linear layer(2, 2);
    const Tensor handle = layer.weight;
    layer.load_state_dict({{"weight", Tensor::ones({2, 2})}, {"bias", Tensor::zeros({2})}});
    kasmina::testing::expect_values(handle, {1, 1, 1, 1});
    EXPECT_TRUE(handle.requires_grad());
}

TEST(Module, StrictLoadReportsMissingAndUnexpectedKeysAndLeavesTheModuleUnchanged) {
    nn::Linear layer(2, 2);
    const TensorMap before = layer.state_dict();
    const std::vector<double> weight_before = layer.weight.to_vector<double>();
    EXPECT_THROW_WITH(layer.load_state_dict({{"weight", Tensor::ones({2, 2})}, {"extra", Tensor::ones({1})}}), ShapeError,
                      "missing keys: bias. unexpected keys: extra.");
    EXPECT_EQ(layer.weight.to_vector<double>(), weight_before);
    // Non-strict loading accepts the subset.
    layer.load_state_dict({{"weight", Tensor::ones({2, 2})}}, /*strict=*/false);
    kasmina::testing::expect_values(layer.weight, {1, 1, 1, 1});
}

TEST(Module, MisshapenEntryRaisesWithBothShapesAndChangesNothing) {
    nn::Linear layer(2, 3);
    const std::vector<double> bias_before = layer.bias.to_vector<double>();
    EXPECT_THROW_WITH(layer.load_state_dict({{"weight", Tensor::ones({3, 3})}, {"bias", Tensor::zeros({3})}}), ShapeError,
                      "size mismatch for weight (checkpoint [3, 3], module [3, 2])");
    EXPECT_EQ(layer.bias.to_vector<double>(), bias_before);
}

TEST(Module, ToDtypeConvertsParametersAndFloatingBuffersInPlace) {
    nn::BatchNorm1d norm(3);
    const Tensor weight = norm.weight;
    norm.to(DType::f64);
    EXPECT_EQ(weight.dtype(), DType::f64);
    EXPECT_EQ(norm.running_var.dtype(), DType::f64);
    EXPECT_EQ(norm.num_batches_tracked.dtype(), DType::i64);
}

TEST(Module, ZeroGradClearsGradients) {
    nn::Linear layer(3, 2);
    sum(layer.forward(Tensor::randn({4, 3}))).backward();
    EXPECT_TRUE(layer.weight.grad().defined());
    layer.zero_grad();
    EXPECT_FALSE(layer.weight.grad().defined());
}

TEST(Module, PrintsLikePyTorch) {
    std::ostringstream stream;
    stream << *small_network();
    EXPECT_NE(stream.str().find("(0): Linear(in_features=4, out_features=3, bias=True)"), std::string::npos) << stream.str();
    EXPECT_NE(stream.str().find("(1): BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"),
              std::string::npos)
        << stream.str();
}

TEST(Module, ReplaceChildSwapsALayer) {
    const auto network = small_network();
    network->replace_child("2", std::make_shared<nn::GELU>());
    EXPECT_EQ((*network)[2]->type_name(), "GELU");
    EXPECT_THROW_WITH(network->replace_child("9", std::make_shared<nn::ReLU>()), Error, "no child module named '9'");
}

TEST(Module, ToTheCurrentDeviceKeepsParametersValid) {
    const auto network = small_network();
    const std::vector<Tensor> handles = network->parameters();
    const auto before = values_of(*network);
    network->to(Device::cpu());
    const std::vector<Tensor> after = network->parameters();
    ASSERT_EQ(after.size(), handles.size());
    for (size_t i = 0; i < handles.size(); ++i) {
        EXPECT_EQ(after[i].impl(), handles[i].impl());
        EXPECT_TRUE(handles[i].requires_grad());
        EXPECT_TRUE(handles[i].device().is_cpu());
    }
    EXPECT_EQ(values_of(*network), before);
    sum(network->forward(Tensor::randn({5, 4}))).backward();
    for (const Tensor& handle : handles) EXPECT_TRUE(handle.grad().defined());
}

TEST(Module, NestedMisshapenEntryRaisesNamingItAndChangesNothing) {
    const auto network = nested_network();
    network->forward(Tensor::randn({6, 4}));  // the BatchNorm buffers move off their initial values
    const auto before = values_of(*network);
    TensorMap state = shifted_state(*network);
    state["1.weight"] = Tensor::ones({4});
    EXPECT_THROW_WITH(network->load_state_dict(state), ShapeError,
                      "load_state_dict: error(s) loading state dict for Sequential: size mismatch for 1.weight "
                      "(checkpoint [4], module [3]).");
    EXPECT_EQ(values_of(*network), before);
}

TEST(Module, NestedMissingEntryRaisesNamingItAndChangesNothing) {
    const auto network = nested_network();
    network->forward(Tensor::randn({6, 4}));
    const auto before = values_of(*network);
    TensorMap state = shifted_state(*network);
    state.erase("2.running_var");
    EXPECT_THROW_WITH(network->load_state_dict(state), ShapeError, "missing keys: 2.running_var.");
    EXPECT_EQ(values_of(*network), before);
}

TEST(Module, NestedMissingAndMisshapenEntriesAreReportedTogether) {
    const auto network = nested_network();
    const auto before = values_of(*network);
    TensorMap state = shifted_state(*network);
    state.erase("1.bias");
    state["0.weight"] = Tensor::zeros({4, 3});
    state["2.num_batches_tracked"] = Tensor::zeros({1}, {.dtype = DType::i64});
    EXPECT_THROW_WITH(network->load_state_dict(state), ShapeError,
                      "size mismatch for 0.weight (checkpoint [4, 3], module [3, 4]), 2.num_batches_tracked (checkpoint [1], "
                      "module []). missing keys: 1.bias.");
    EXPECT_EQ(values_of(*network), before);
    // The same entries, well formed, load into every parameter and buffer.
    const TensorMap good = shifted_state(*network);
    network->load_state_dict(good);
    for (const auto& [name, values] : values_of(*network)) EXPECT_EQ(values, good.at(name).to_vector<double>()) << name;
}
