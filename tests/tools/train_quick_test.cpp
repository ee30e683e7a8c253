// The main job end to end in quick mode (a few hundred steps on a Fashion-MNIST subset): the loss
// falls, the controller germinates seeds and ramps their alpha, a run interrupted after epoch 1 and
// resumed from its checkpoint reproduces the uninterrupted run's losses exactly, and the JSON
// report and telemetry hold the documented fields. Skips when the data set is not installed.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"
#include "tools/train/fashion_mnist.h"

using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool data_available() {
    const fs::path directory = kasmina::train::fashion_mnist_directory();
    return fs::exists(directory / "train-images-idx3-ubyte.gz") && fs::exists(directory / "t10k-labels-idx1-ubyte.gz");
}

int run_train(const std::string& arguments, const fs::path& log) {
    const std::string command = std::string(KASMINA_TRAIN_BINARY) + " --device cpu --quick " + arguments + " >" +
                                log.string() + " 2>&1";
    return std::system(command.c_str());
}

Json read_json(const fs::path& path) {
    std::ifstream stream(path);
    return Json::parse(stream);
}

}  // namespace

TEST(TrainQuick, LearnsGerminatesAndResumesBitForBit) {
    if (!data_available()) GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    const fs::path root = fs::temp_directory_path() / "kasmina_train_quick";
    fs::remove_all(root);
    const fs::path straight = root / "straight", resumed = root / "resumed";
    ASSERT_EQ(run_train("--out " + straight.string(), root.string() + ".straight.log"), 0)
        << std::ifstream(root.string() + ".straight.log").rdbuf();
    ASSERT_EQ(run_train("--out " + resumed.string() + " --stop-after 1", root.string() + ".first.log"), 0);
    ASSERT_EQ(run_train("--out " + resumed.string() + " --resume", root.string() + ".second.log"), 0)
        << std::ifstream(root.string() + ".second.log").rdbuf();

    const Json report = read_json(straight / "report.json");
    for (const char* field : {"config", "history", "accuracy_before_germination", "final_test_accuracy", "seconds",
                              "decisions", "seeds", "cache", "unsupported_layers"})
        EXPECT_TRUE(report.contains(field)) << field;
    const Json& history = report.at("history");
    ASSERT_EQ(history.size(), 3u);
    EXPECT_LT(history[2].at("loss").get<double>(), history[0].at("loss").get<double>());
    EXPECT_GT(report.at("final_test_accuracy").get<double>(), 60.0);

    // Germination after epoch 1: kernels generated into the store, loaded, ramped from alpha 0.
    int germinated = 0;
    for (const Json& decision : report.at("decisions"))
        if (decision.at("action") == "germinate") {
            ++germinated;
            EXPECT_EQ(decision.at("epoch").get<int>(), 1);
            EXPECT_NE(decision.at("reason").get<std::string>().find("alpha 0 ->"), std::string::npos);
        }
    EXPECT_GE(germinated, 5) << "one seed per Kasmina layer";
    // Each germination went through the cache (layers of the same shape share one kernel id: a hit).
    const Json& cache = report.at("cache");
    EXPECT_GE(cache.at("misses").get<int>() + cache.at("hits").get<int>(), germinated);
    EXPECT_GE(cache.at("misses").get<int>(), 1);
    EXPECT_FALSE(report.at("seeds").empty()) << "kept (fossilized) seeds are listed";
    bool ramped = false;
    std::ifstream telemetry(straight / "telemetry.jsonl");
    for (std::string line; std::getline(telemetry, line);) {
        const Json entry = Json::parse(line);
        for (const Json& seed : entry.at("seeds"))
            if (seed.at("lifecycle") == "ACTIVE" && seed.at("alpha").get<double>() > 0.0) ramped = true;
    }
    EXPECT_TRUE(ramped) << "telemetry shows an ACTIVE seed with alpha > 0";

    // Interrupted after epoch 1 and resumed: the same losses and accuracies, exactly.
    const Json resumed_history = read_json(resumed / "report.json").at("history");
    ASSERT_EQ(resumed_history.size(), 3u);
    for (size_t epoch = 0; epoch < 3; ++epoch) {
        EXPECT_EQ(resumed_history[epoch].at("loss").get<double>(), history[epoch].at("loss").get<double>()) << epoch;
        EXPECT_EQ(resumed_history[epoch].at("test_accuracy").get<double>(), history[epoch].at("test_accuracy").get<double>());
    }
    EXPECT_EQ(read_json(straight / "report.json").at("config").at("width").get<int>(), 32);

    // A host of another width cannot resume the checkpoint: the run says which width it holds.
    const fs::path mismatch_log = root.string() + ".mismatch.log";
    EXPECT_NE(run_train("--out " + resumed.string() + " --resume --width 16", mismatch_log), 0);
    std::stringstream mismatch;
    mismatch << std::ifstream(mismatch_log).rdbuf();
    EXPECT_NE(mismatch.str().find("holds a host of width 32; this run asks for --width 16"), std::string::npos) << mismatch.str();
    fs::remove_all(root);
}
