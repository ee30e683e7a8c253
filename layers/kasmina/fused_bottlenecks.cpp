#include "layers/kasmina/fused_bottlenecks.h"

#include <algorithm>
#include <bit>

#include "autograd/convolution.h"
#include "autograd/ops.h"
#include "runtime/grad_mode.h"

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

FusedWeightsCache::Weights FusedWeightsCache::get(const std::vector<uint64_t>& key, const std::function<Weights()>& build) {
    {
        std::lock_guard lock(mutex_);
        for (auto it = entries_.begin(); it != entries_.end(); ++it)
            if (it->first == key) {
                std::rotate(it, it + 1, entries_.end());
                return entries_.back().second;
            }
    }
    Weights built = build();
    std::lock_guard lock(mutex_);
    if (entries_.size() == kEntries) entries_.erase(entries_.begin());
    entries_.emplace_back(key, built);
    return built;
}

// With U_i, V_i the first and second projections' weights, b_i, c_i their biases and w_i the shares:
//   h   = act(project(x, cat_i U_i (output dim), cat_i b_i))
//   out = project(h, cat_i w_i V_i (input dim), sum_i w_i c_i)
// which is sum_i w_i * (project(act(project(x, U_i, b_i)), V_i) + c_i).
Tensor run_fused_bottlenecks(const std::vector<const KernelNetwork*>& networks, const std::vector<double>& shares,
                             const Tensor& input, FusedWeightsCache* cache) {
    if (networks.empty() || networks.size() != shares.size())
        raise<Error>("run_fused_bottlenecks", "need one share per network, got ", networks.size(), " networks and ",
                     shares.size(), " shares");
    const std::optional<BottleneckForm> form = bottleneck_form(*networks[0]);
    if (!form) raise<Error>("run_fused_bottlenecks", "kernel 0 is not a projection-activation-projection bottleneck");
    // Each network's own weights (a bias undefined where its form has none).
    struct Own {
        Tensor first_weight, first_bias, second_weight, second_bias;
    };
    std::vector<Own> own;
    bool records_gradients = false;
    for (size_t i = 0; i < networks.size(); ++i) {
        const KernelNetwork& network = *networks[i];
        if (bottleneck_form(network) != form)
            raise<Error>("run_fused_bottlenecks", "kernel ", i, " does not have the form of kernel 0");
        const std::vector<KernelOp>& ops = network.ops();
        own.push_back({network.weight(ops[0].weight), form->first_bias ? network.weight(ops[0].bias) : Tensor(),
                       network.weight(ops[2].weight), form->second_bias ? network.weight(ops[2].bias) : Tensor()});
        for (const Tensor& weight : {own.back().first_weight, own.back().first_bias, own.back().second_weight,
                                     own.back().second_bias})
            records_gradients = records_gradients || (weight.defined() && weight.requires_grad());
    }
    records_gradients = records_gradients && GradMode::is_enabled();
    const auto build = [&] {
        FusedWeightsCache::Weights built;
        std::vector<Tensor> first_weights, first_biases, second_weights;
        for (size_t i = 0; i < networks.size(); ++i) {
            first_weights.push_back(own[i].first_weight);
            second_weights.push_back(own[i].second_weight * shares[i]);
            if (form->first_bias) first_biases.push_back(own[i].first_bias);
            if (form->second_bias) {
                const Tensor scaled = own[i].second_bias * shares[i];
                built.second_bias = built.second_bias.defined() ? built.second_bias + scaled : scaled;
            }
            for (const Tensor& weight : {own[i].first_weight, own[i].first_bias, own[i].second_weight, own[i].second_bias})
                if (weight.defined()) built.sources.push_back(weight);
        }
        built.first_weight = cat(first_weights, 0);
        built.first_bias = form->first_bias ? cat(first_biases, 0) : Tensor();
        built.second_weight = cat(second_weights, 1);
        return built;
    };
    FusedWeightsCache::Weights fused;
    if (cache == nullptr || records_gradients) {
        fused = build();
    } else {
        // The key: each network, its share (bits) and each weight's data and version. The entry holds the
        // weights themselves, so no other storage can take their addresses while it lives.
        std::vector<uint64_t> key;
        for (size_t i = 0; i < networks.size(); ++i) {
            key.push_back(reinterpret_cast<uintptr_t>(networks[i]));
            key.push_back(std::bit_cast<uint64_t>(shares[i]));
            for (const Tensor& weight : {own[i].first_weight, own[i].first_bias, own[i].second_weight, own[i].second_bias}) {
                if (!weight.defined()) continue;
                key.push_back(reinterpret_cast<uintptr_t>(weight.raw_data()));
                key.push_back(weight.version());
            }
        }
        fused = cache->get(key, build);
    }
    Tensor hidden = project(*form, input, fused.first_weight, fused.first_bias, form->first_conv);
    hidden = form->activation == KernelOpType::relu ? relu(hidden) : gelu(hidden);
    return project(*form, hidden, fused.second_weight, fused.second_bias, form->second_conv);
}

}  // namespace kasmina::morph
