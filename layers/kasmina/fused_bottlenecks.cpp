#include "layers/kasmina/fused_bottlenecks.h"

#include "autograd/convolution.h"
#include "autograd/ops.h"

namespace kasmina::morph {

namespace {
bool same_conv(const kernels::Conv2dParams& a, const kernels::Conv2dParams& b) {
    return a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation && a.groups == b.groups;
}

Tensor project(const BottleneckForm& form, const Tensor& x, const Tensor& weight, const Tensor& bias,
               const kernels::Conv2dParams& params) {
    return form.projection == KernelOpType::linear ? linear(x, weight, bias) : conv2d(x, weight, bias, params);
}
}  // namespace

bool BottleneckForm::operator==(const BottleneckForm& other) const {
    return projection == other.projection && activation == other.activation && first_bias == other.first_bias &&
           second_bias == other.second_bias && same_conv(first_conv, other.first_conv) &&
           same_conv(second_conv, other.second_conv);
}

std::optional<BottleneckForm> bottleneck_form(const KernelNetwork& network) {
    const std::vector<KernelOp>& ops = network.ops();
    if (ops.size() != 3) return std::nullopt;
    const KernelOpType projection = ops[0].type;
    if (projection != KernelOpType::linear && projection != KernelOpType::conv2d) return std::nullopt;
    if (ops[2].type != projection) return std::nullopt;
    if (ops[1].type != KernelOpType::relu && ops[1].type != KernelOpType::gelu) return std::nullopt;
    BottleneckForm form{projection, ops[1].type};
    if (projection == KernelOpType::conv2d) {
        // Concatenating grouped convolutions' weights would regroup their channels.
        if (ops[0].conv.groups != 1 || ops[2].conv.groups != 1) return std::nullopt;
        form.first_conv = ops[0].conv;
        form.second_conv = ops[2].conv;
    }
    form.first_bias = !ops[0].bias.empty();
    form.second_bias = !ops[2].bias.empty();
    return form;
}

// With U_i, V_i the first and second projections' weights, b_i, c_i their biases and w_i the shares:
//   h   = act(project(x, cat_i U_i (output dim), cat_i b_i))
//   out = project(h, cat_i w_i V_i (input dim), sum_i w_i c_i)
// which is sum_i w_i * (project(act(project(x, U_i, b_i)), V_i) + c_i).
Tensor run_fused_bottlenecks(const std::vector<const KernelNetwork*>& networks, const std::vector<double>& shares,
                             const Tensor& input) {
    if (networks.empty() || networks.size() != shares.size())
        raise<Error>("run_fused_bottlenecks", "need one share per network, got ", networks.size(), " networks and ",
                     shares.size(), " shares");
    const std::optional<BottleneckForm> form = bottleneck_form(*networks[0]);
    if (!form) raise<Error>("run_fused_bottlenecks", "kernel 0 is not a projection-activation-projection bottleneck");
    std::vector<Tensor> first_weights, first_biases, second_weights;
    Tensor second_bias;
    for (size_t i = 0; i < networks.size(); ++i) {
        const KernelNetwork& network = *networks[i];
        if (bottleneck_form(network) != form)
            raise<Error>("run_fused_bottlenecks", "kernel ", i, " does not have the form of kernel 0");
        const std::vector<KernelOp>& ops = network.ops();
        first_weights.push_back(network.weight(ops[0].weight));
        if (form->first_bias) first_biases.push_back(network.weight(ops[0].bias));
        second_weights.push_back(network.weight(ops[2].weight) * shares[i]);
        if (form->second_bias) {
            const Tensor scaled = network.weight(ops[2].bias) * shares[i];
            second_bias = second_bias.defined() ? second_bias + scaled : scaled;
        }
    }
    const Tensor first_bias = form->first_bias ? cat(first_biases, 0) : Tensor();
    Tensor hidden = project(*form, input, cat(first_weights, 0), first_bias, form->first_conv);
    hidden = form->activation == KernelOpType::relu ? relu(hidden) : gelu(hidden);
    return project(*form, hidden, cat(second_weights, 1), second_bias, form->second_conv);
}

}  // namespace kasmina::morph
