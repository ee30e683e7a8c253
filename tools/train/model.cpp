#include "tools/train/model.h"

#include "autograd/ops.h"

namespace kasmina::train {

FashionNet::FashionNet(int64_t width) {
    if (width < 2 || width % 2 != 0)
        throw Error(make_message("FashionNet: width must be even and at least 2 (4 attention heads over 2 * width features), got ", width));
    const int64_t features = 2 * width, hidden = 4 * width;
    register_module("conv1", std::make_shared<nn::Conv2d>(1, width, 3, nn::Conv2dOptions{.padding = {1, 1}}));
    register_module("bn1", std::make_shared<nn::BatchNorm2d>(width));
    register_module("conv2", std::make_shared<nn::Conv2d>(width, features, 3, nn::Conv2dOptions{.stride = {2, 2}, .padding = {1, 1}}));
    register_module("bn2", std::make_shared<nn::BatchNorm2d>(features));
    register_module("conv3", std::make_shared<nn::Conv2d>(features, features, 3, nn::Conv2dOptions{.stride = {2, 2}, .padding = {1, 1}}));
    register_module("bn3", std::make_shared<nn::BatchNorm2d>(features));
    register_module("norm", std::make_shared<nn::LayerNorm>(Shape{features}));
    register_module("attention", std::make_shared<nn::MultiheadAttention>(features, 4, nn::MultiheadAttentionOptions{.batch_first = true}));
    register_module("fc1", std::make_shared<nn::Linear>(features, hidden));
    register_module("bn4", std::make_shared<nn::BatchNorm1d>(hidden));
    register_module("fc2", std::make_shared<nn::Linear>(hidden, 10));
}

Tensor FashionNet::stage(const std::string& conv, const std::string& norm, const Tensor& x) {
    return relu(child(norm)->forward(child(conv)->forward(x)));
}

Tensor FashionNet::forward(const Tensor& images) {
    Tensor x = stage("conv1", "bn1", images);
    x = stage("conv2", "bn2", x);
    x = stage("conv3", "bn3", x);  // [B, 2W, 7, 7]
    const int64_t batch = x.size(0), features = x.size(1);
    Tensor tokens = x.reshape({batch, features, 49}).transpose(1, 2);  // [B, 49, 2W]
    const Tensor normalized = child("norm")->forward(tokens);
    auto& attention = static_cast<nn::MultiheadAttention&>(*child("attention"));
    tokens = tokens + attention.forward(normalized, normalized, normalized, {.need_weights = false}).first;
    Tensor pooled = mean(tokens, {1});  // [B, 2W]
    pooled = relu(child("bn4")->forward(child("fc1")->forward(pooled)));
    return child("fc2")->forward(pooled);
}

}  // namespace kasmina::train
