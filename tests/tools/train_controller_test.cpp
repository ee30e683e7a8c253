// The main job's host network and controller without the data set: the host's width sets every layer,
// a bad width is refused by name, and the controller's defaults germinate one seed per Kasmina layer
// after the first epoch, with generated bottleneck kernels of the hidden width it was given.
#include <set>

#include "layers/kasmina/scratch_kernel_store.h"
#include "test_util.h"
#include "tools/train/controller.h"
#include "tools/train/model.h"

using namespace kasmina;

namespace {

int64_t parameter_count(nn::Module& module) {
    int64_t count = 0;
    for (const auto& [name, parameter] : module.named_parameters()) count += parameter.numel();
    return count;
}

}  // namespace

TEST(FashionNet, WidthSetsEveryLayer) {
    auto net = std::make_shared<train::FashionNet>(8);
    const Tensor logits = net->forward(Tensor::randn({3, 1, 28, 28}));
    EXPECT_EQ(logits.shape(), (Shape{3, 10}));
    // conv 1->8->16->16 (3x3, bias), batch norms 8+16+16, layer norm 16, attention 4*16*16+4*16,
    // linear 16->32, batch norm 32, linear 32->10.
    const int64_t expected = (9 * 8 + 8) + (8 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + 2 * (8 + 16 + 16) + 2 * 16 +
                             (4 * 16 * 16 + 4 * 16) + (16 * 32 + 32) + 2 * 32 + (32 * 10 + 10);
    EXPECT_EQ(parameter_count(*net), expected);
    EXPECT_GT(parameter_count(*std::make_shared<train::FashionNet>()), parameter_count(*net));
}

TEST(FashionNet, AnOddOrTooSmallWidthIsRefusedByName) {
    for (int64_t width : {7, 0, -2}) {
        try {
            train::FashionNet net(width);
            ADD_FAILURE() << "width " << width << " accepted";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find("FashionNet: width must be even"), std::string::npos) << error.what();
        }
    }
}

TEST(Controller, DefaultsGerminateAfterTheFirstEpochWithTheHiddenWidthGiven) {
    kasmina::testing::ScratchKernelStore scratch("controller_hidden");
    auto net = std::make_shared<train::FashionNet>(8);
    morph::MorphableModel model = morph::wrap(net, {.cache = scratch.cache});
    train::ControllerOptions options;
    options.seed_hidden = 12;
    train::Controller controller(options, scratch.store);
    int evaluations = 0;
    ASSERT_TRUE(controller.after_epoch(1, 80.0, model, [&] { return ++evaluations, 80.0; }));
    EXPECT_EQ(controller.phase(), train::Controller::Phase::evaluating);
    EXPECT_EQ(controller.germination_epoch(), 1);

    std::set<std::string> germinated;
    for (const train::Decision& decision : controller.decisions())
        if (decision.action == "germinate") germinated.insert(decision.layer);
    EXPECT_EQ(germinated.size(), model.kasmina_layers().size()) << "one seed per Kasmina layer";
    // Every generated bottleneck's first projection has 12 outputs (the norm kernels are affine).
    int bottlenecks = 0;
    for (const std::string& name : model.kasmina_layers()) {
        const morph::SeedReport report = model.layer(name).layer_stats()[0];
        ASSERT_EQ(report.lifecycle, morph::SeedLifecycle::active) << name;
        const std::vector<uint8_t> bytes = scratch.store->read(report.kernel_id);
        const morph::KernelArtifact artifact = morph::parse_artifact(bytes.data(), bytes.size(), name);
        if (artifact.ops.size() == 1) continue;
        ++bottlenecks;
        EXPECT_EQ(artifact.tensors.at(artifact.ops.front().weight).size(0), 12) << name << " " << artifact.name;
    }
    EXPECT_EQ(bottlenecks, 6) << "conv1-3, attention, fc1, fc2";
    EXPECT_EQ(evaluations, 0) << "germination needs no ablation";
}
