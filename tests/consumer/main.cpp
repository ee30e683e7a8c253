// The consumer project's program: one include, a layer, a loss, gradients; prints what it checked.
#include <cmath>
#include <cstdio>

#include "kasmina.h"

int main() {
    using namespace kasmina;
    manual_seed(1);
    nn::Linear layer(3, 2);
    const Tensor x = Tensor::ones({4, 3});
    const Tensor loss = sum(layer(x));
    loss.backward();
    // d sum(x W^T + b) / d b = the batch size, for every output.
    const std::vector<float> bias_grad = layer.bias.grad().to_vector<float>();
    const bool ok = bias_grad.size() == 2 && std::abs(bias_grad[0] - 4.0f) < 1e-6f && std::abs(bias_grad[1] - 4.0f) < 1e-6f;
    std::printf("kasmina consumer: loss %.4f, bias grad [%g, %g] %s\n", loss.item(), bias_grad[0], bias_grad[1],
                ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
