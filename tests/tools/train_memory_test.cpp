// Memory over training: an allocator's peak can be restarted to measure one step, and the demo
// network's training steps (wrapped with dormant seed slots, as the main job runs it) hold no more
// tensors after many steps than after the first few, on the CPU and on the GPU. kasmina-bench's
// train_memory runs the same check over 10,000 steps.
#include "layers/kasmina/wrap.h"
#include "test_util.h"
#include "tools/train/model.h"

using namespace kasmina;
using kasmina::testing::kGpu;

namespace {

void expect_reset_peak_restarts_at_todays_use(Device device) {
    Allocator& allocator = allocator_for(device);
    Tensor kept = Tensor::empty({1 << 16}, {.device = device});
    {
        Tensor passing = Tensor::empty({1 << 20}, {.device = device});
    }
    synchronize(device);
    const AllocatorStats before = allocator.stats();
    EXPECT_GE(before.peak_bytes, before.bytes_in_use + (uint64_t{4} << 20)) << "the freed 4 MiB counted in the peak";
    allocator.reset_peak();
    EXPECT_EQ(allocator.stats().peak_bytes, before.bytes_in_use);
    {
        Tensor passing = Tensor::empty({1 << 18}, {.device = device});  // 1 MiB
    }
    const AllocatorStats after = allocator.stats();
    EXPECT_GE(after.peak_bytes, before.bytes_in_use + (uint64_t{1} << 20));
    EXPECT_LT(after.peak_bytes, before.bytes_in_use + (uint64_t{4} << 20)) << "the earlier 4 MiB no longer counts";
}

// Runs warm-up steps, then more steps, and checks the tensors in use after each against after the
// warm-up; on a GPU also that the caching allocator asked the driver for no more memory.
void expect_training_holds_its_memory(Device device) {
    manual_seed(3);
    auto network = std::make_shared<train::FashionNet>(4);
    network->to(device);
    morph::MorphableModel model = morph::wrap(network);
    optim::SGD optimizer(network->parameters(), {.lr = 0.01, .momentum = 0.9});
    const Tensor images = Tensor::randn({8, 1, 28, 28}).to(device);
    const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8}).to(device);
    const auto step = [&] {
        optimizer.zero_grad();
        cross_entropy(model.forward(images), labels).backward();
        optimizer.step();
        synchronize(device);
    };
    for (int i = 0; i < 3; ++i) step();
    Allocator& allocator = allocator_for(device);
    const AllocatorStats warm = allocator.stats();
    for (int i = 0; i < 40; ++i) {
        step();
        const AllocatorStats now = allocator.stats();
        ASSERT_EQ(now.bytes_in_use, warm.bytes_in_use) << "after step " << i + 4 << " on " << device.str();
        if (device.is_cuda()) ASSERT_EQ(now.device_allocations, warm.device_allocations) << "after step " << i + 4;
    }
    EXPECT_GT(allocator.stats().allocations, warm.allocations) << "the steps allocated and freed their tensors";
}

}  // namespace

TEST(TrainMemory, ResetPeakRestartsAtTodaysUseOnTheCpu) { expect_reset_peak_restarts_at_todays_use(Device::cpu()); }

TEST(TrainMemory, ResetPeakRestartsAtTodaysUseOnCuda) {
    REQUIRE_GPU();
    expect_reset_peak_restarts_at_todays_use(kGpu);
}

TEST(TrainMemory, DemoTrainingStepsHoldNoMoreTensorsOnTheCpu) { expect_training_holds_its_memory(Device::cpu()); }

TEST(TrainMemory, DemoTrainingStepsHoldNoMoreTensorsOnCuda) {
    REQUIRE_GPU();
    expect_training_holds_its_memory(kGpu);
}
