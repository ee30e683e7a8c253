// Embedding kasmina in your own training loop: wrap a model, train, load a kernel into a seed,
// ramp its alpha in, and keep training (the README shows this file; CI compiles and runs it).
#include <cstdio>

#include "kasmina.h"

using namespace kasmina;

int main() {
    manual_seed(0);
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(16, 32), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(32, 4)});
    auto store = std::make_shared<morph::DirectoryStore>("example-kernels");  // <id>.safetensors files
    morph::MorphableModel morphable = morph::wrap(model, {.cache = std::make_shared<morph::KernelCache>(store)});

    const Tensor x = Tensor::randn({256, 16});
    const Tensor target = tanh(matmul(x, Tensor::randn({16, 4})));
    optim::AdamW optimizer(model->parameters(), {.lr = 1e-2});
    auto train = [&](int steps) {
        double last = 0;
        for (int step = 0; step < steps; ++step) {
            optimizer.zero_grad();
            const Tensor loss = mse_loss(morphable.forward(x), target);
            loss.backward();
            optimizer.step();
            last = loss.item();
        }
        return last;
    };
    std::printf("loss after 100 steps: %.4f\n", train(100));

    // Germinate: a bottleneck MLP kernel for layer "0" (Linear 16 -> 32), ramped in over 50 steps.
    const uint64_t id = store->write(morph::serialize_artifact(morph::make_linear_bottleneck(16, 32, 8)));
    morphable.load_kernel("0", /*seed=*/0, id, {.alpha = 0.0});
    morphable.ramp_alpha("0", 0, /*target=*/0.3, /*steps=*/50);
    optimizer.set_parameters(model->parameters());  // the kernel's weights train too
    std::printf("loss after 100 more steps with a seed: %.4f\n", train(100));

    for (const morph::SeedReport& seed : morphable.layer("0").layer_stats())
        std::printf("seed %d: %s alpha %.2f kernel %s\n", seed.seed, morph::lifecycle_name(seed.lifecycle), seed.alpha,
                    morph::format_kernel_id(seed.kernel_id).c_str());
    return 0;
}
