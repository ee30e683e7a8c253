// The demo job: fits a 2-layer MLP to a generated regression task with the runtime's autograd and
// plain SGD, printing the loss as it falls. (The Fashion-MNIST program replaces it later.)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kasmina.h"

using namespace kasmina;

int main(int argc, char** argv) {
    int steps = 300;
    for (int i = 1; i + 1 < argc; ++i)
        if (std::string(argv[i]) == "--steps") steps = std::atoi(argv[i + 1]);
    try {
        manual_seed(7);
        // Data: y = tanh(3 x0) + 0.5 x1^2 - x2, 1024 samples of 8 features.
        const int64_t samples = 1024, features = 8, hidden = 64;
        const Tensor x = Tensor::randn({samples, features});
        Tensor target;
        {
            NoGradGuard no_grad;
            const Tensor x0 = x.select(1, 0), x1 = x.select(1, 1), x2 = x.select(1, 2);
            target = (tanh(x0 * 3.0) + x1 * x1 * 0.5 - x2).unsqueeze(1).contiguous();
        }
        // Parameters, initialized like torch.nn.Linear (uniform in +-1/sqrt(fan_in)).
        auto uniform = [](const Shape& shape, double bound) {
            NoGradGuard no_grad;
            Tensor t = (Tensor::rand(shape) * 2.0 - 1.0) * bound;
            return t.set_requires_grad(true);
        };
        Tensor w1 = uniform({hidden, features}, 1.0 / std::sqrt(double(features)));
        Tensor b1 = uniform({hidden}, 1.0 / std::sqrt(double(features)));
        Tensor w2 = uniform({1, hidden}, 1.0 / std::sqrt(double(hidden)));
        Tensor b2 = uniform({1}, 1.0 / std::sqrt(double(hidden)));
        std::vector<Tensor*> parameters{&w1, &b1, &w2, &b2};
        const double learning_rate = 0.05;
        std::printf("kasmina demo: 2-layer MLP (%lld -> %lld -> 1), %lld samples, SGD lr %.2f\n",
                    (long long)features, (long long)hidden, (long long)samples, learning_rate);
        double first_loss = 0, last_loss = 0;
        for (int step = 0; step <= steps; ++step) {
            const Tensor prediction = linear(gelu(linear(x, w1, b1)), w2, b2);
            const Tensor loss = mse_loss(prediction, target);
            for (Tensor* p : parameters) p->set_grad(Tensor());
            loss.backward();
            {
                NoGradGuard no_grad;
                for (Tensor* p : parameters) p->copy_(*p - p->grad() * learning_rate);
            }
            last_loss = loss.item();
            if (step == 0) first_loss = last_loss;
            if (step % 50 == 0) std::printf("step %4d  loss %.5f\n", step, last_loss);
        }
        std::printf("loss %.5f -> %.5f (%.1fx lower)\n", first_loss, last_loss, first_loss / last_loss);
        return last_loss < first_loss ? 0 : 1;
    } catch (const Error& error) {
        std::fprintf(stderr, "kasmina-demo: %s\n", error.what());
        return 1;
    }
}
