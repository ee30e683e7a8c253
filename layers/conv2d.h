// nn.Conv2d (NCHW, zero padding): weight [out, in/groups, kh, kw], bias [out], PyTorch init.
#pragma once

#include <array>

#include "kernels/convolution.h"
#include "layers/module.h"

namespace kasmina::nn {

struct Conv2dOptions {
    std::array<int64_t, 2> stride{1, 1};
    std::array<int64_t, 2> padding{0, 0};
    std::array<int64_t, 2> dilation{1, 1};
    int64_t groups = 1;
    bool bias = true;
};

class Conv2d : public Module {
public:
    Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel_size, Conv2dOptions options = {});
    Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv2dOptions options = {})
        : Conv2d(in_channels, out_channels, {kernel_size, kernel_size}, options) {}
    std::string type_name() const override { return "Conv2d"; }
    std::string extra_repr() const override;
    Tensor forward(const Tensor& input) override;  // [N, C, H, W] or unbatched [C, H, W]

    int64_t in_channels() const { return in_channels_; }
    int64_t out_channels() const { return out_channels_; }
    const kernels::Conv2dParams& params() const { return params_; }
    std::array<int64_t, 2> kernel_size() const { return kernel_size_; }
    Tensor weight;
    Tensor bias;

private:
    int64_t in_channels_, out_channels_;
    std::array<int64_t, 2> kernel_size_;
    kernels::Conv2dParams params_;
};

}  // namespace kasmina::nn
