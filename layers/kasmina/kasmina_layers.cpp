#include "layers/kasmina/kasmina_layers.h"

#include <algorithm>

#include "autograd/blend.h"
#include "autograd/ops.h"
#include "runtime/grad_mode.h"

namespace kasmina::morph {

Device device_of(const nn::Module& module) {
    for (const auto& [name, tensor] : module.named_parameters()) return tensor.device();
    for (const auto& [name, tensor] : module.named_buffers()) return tensor.device();
    return Device::cpu();
}

DType dtype_of(const nn::Module& module) {
    for (const auto& [name, tensor] : module.named_parameters())
        if (is_floating(tensor.dtype())) return tensor.dtype();
    return DType::f32;
}

// ---- telemetry -----------------------------------------------------------------------------------

void KasminaLayerBase::set_telemetry(std::shared_ptr<TelemetrySink> sink, std::string name, int64_t interval) {
    if (interval <= 0) raise<Error>("set_telemetry", "interval must be positive, got ", interval);
    telemetry_sink_ = std::move(sink);
    telemetry_name_ = std::move(name);
    telemetry_interval_ = interval;
}

void KasminaLayerBase::report_telemetry(const Tensor& d) {
    if (!telemetry_sink_) return;
    auto deliver = [&] {
        const std::vector<double> statistics = telemetry_readback_.take();
        pending_report_.activation_variance = statistics[0];
        pending_report_.dead_fraction = statistics[1];
        telemetry_sink_->report(pending_report_);
    };
    if (telemetry_readback_.ready()) deliver();
    const int64_t step = bank_.step();
    if (step % telemetry_interval_ != 0 || telemetry_readback_.pending()) return;
    NoGradGuard no_grad;
    pending_report_ = LayerReport{};
    pending_report_.layer = telemetry_name_;
    pending_report_.kind = module().type_name();
    pending_report_.step = step;
    pending_report_.seeds = bank_.reports();
    if (bank_.cache()) pending_report_.cache = bank_.cache()->stats();
    const Tensor values = d.detach();
    const Tensor variance = values.numel() > 1 ? var(values) : Tensor::zeros({}, values.options());
    const Tensor dead = mean(le(values, scalar_like(values, 0.0)).to(values.dtype()));
    telemetry_readback_.start(stack({variance, dead}, 0));
    if (telemetry_readback_.ready()) deliver();  // host tensors: at once
}

// ---- signatures ----------------------------------------------------------------------------------

KernelSignature signature_of(const nn::Linear& layer) {
    KernelSignature signature;
    signature.kind = KernelKind::linear;
    signature.in_features = layer.in_features();
    signature.out_features = layer.out_features();
    return signature;
}

KernelSignature signature_of(const nn::Conv2d& layer) {
    KernelSignature signature;
    signature.kind = KernelKind::conv2d;
    signature.in_channels = layer.in_channels();
    signature.out_channels = layer.out_channels();
    signature.kernel_size = layer.kernel_size();
    signature.stride = layer.params().stride;
    signature.padding = layer.params().padding;
    signature.dilation = layer.params().dilation;
    return signature;
}

KernelSignature signature_of(const nn::MultiheadAttention& layer) {
    KernelSignature signature;
    signature.kind = KernelKind::attention;
    signature.num_heads = layer.num_heads();
    signature.head_dim = layer.head_dim();
    return signature;
}

KernelSignature signature_of(const nn::LayerNorm& layer) {
    KernelSignature signature;
    signature.kind = KernelKind::norm;
    signature.feature_shape = layer.normalized_shape();
    signature.channel_dim = -1;
    return signature;
}

KernelSignature signature_of(const nn::BatchNorm& layer) {
    KernelSignature signature;
    signature.kind = KernelKind::norm;
    signature.feature_shape = {layer.num_features()};
    signature.channel_dim = 1;
    return signature;
}

// ---- dense variants --------------------------------------------------------------------------------

namespace {
template <typename Plain, typename Layer>
std::shared_ptr<nn::Module> plain_copy(const Layer& layer, std::shared_ptr<Plain> plain) {
    plain->to(device_of(layer));
    TensorMap host_state;
    // Only the host's own weights and buffers: seed kernels are not part of the plain layer.
    for (const auto& [name, tensor] : layer.state_dict())
        if (name.rfind("seeds.", 0) != 0) host_state.emplace(name, tensor);
    plain->load_state_dict(host_state, /*strict=*/true);
    plain->train(layer.is_training());
    return plain;
}
}  // namespace

KasminaLayer::KasminaLayer(const nn::Linear& original, const KasminaOptions& options)
    : SeededLayer(options, signature_of(original), original.in_features(), original.out_features(), original.bias.defined()) {
    adopt(original);
}

std::shared_ptr<nn::Module> KasminaLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::Linear>(in_features(), out_features(), bias.defined()));
}

KasminaConv2dLayer::KasminaConv2dLayer(const nn::Conv2d& original, const KasminaOptions& options)
    : SeededLayer(options, signature_of(original), original.in_channels(), original.out_channels(), original.kernel_size(),
                  nn::Conv2dOptions{original.params().stride, original.params().padding, original.params().dilation,
                                    original.params().groups, original.bias.defined()}) {
    adopt(original);
}

std::shared_ptr<nn::Module> KasminaConv2dLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::Conv2d>(in_channels(), out_channels(), kernel_size(),
                                                          nn::Conv2dOptions{params().stride, params().padding, params().dilation,
                                                                            params().groups, bias.defined()}));
}

KasminaLayerNormLayer::KasminaLayerNormLayer(const nn::LayerNorm& original, const KasminaOptions& options)
    : SeededLayer(options, signature_of(original), original.normalized_shape(),
                  nn::LayerNormOptions{original.eps(), original.weight.defined(), original.bias.defined()}) {
    adopt(original);
}

std::shared_ptr<nn::Module> KasminaLayerNormLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::LayerNorm>(normalized_shape(),
                                                             nn::LayerNormOptions{eps(), weight.defined(), bias.defined()}));
}

Kasmina1dBatchNormLayer::Kasmina1dBatchNormLayer(const nn::BatchNorm1d& original, const KasminaOptions& options)
    : SeededLayer(options, signature_of(original), original.num_features(), original.options()) {
    adopt(original);
}

std::shared_ptr<nn::Module> Kasmina1dBatchNormLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::BatchNorm1d>(num_features(), options()));
}

Kasmina2dBatchNormLayer::Kasmina2dBatchNormLayer(const nn::BatchNorm2d& original, const KasminaOptions& options)
    : SeededLayer(options, signature_of(original), original.num_features(), original.options()) {
    adopt(original);
}

std::shared_ptr<nn::Module> Kasmina2dBatchNormLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::BatchNorm2d>(num_features(), options()));
}

// ---- attention ---------------------------------------------------------------------------------

KasminaAttentionLayer::KasminaAttentionLayer(const nn::MultiheadAttention& original, const KasminaOptions& options)
    : nn::MultiheadAttention(original.embed_dim(), original.num_heads(), original.options()),
      KasminaLayerBase(options, signature_of(original)) {
    to(device_of(original));
    to(dtype_of(original));
    bank_.set_device(device_of(original));
    bank_.set_dtype(dtype_of(original));
    load_state_dict(original.state_dict(), /*strict=*/true);
    train(original.is_training());
}

std::shared_ptr<nn::Module> KasminaAttentionLayer::make_plain() const {
    return plain_copy(*this, std::make_shared<nn::MultiheadAttention>(embed_dim(), num_heads(), options()));
}

// context [B, heads, L, head_dim]. For each head h targeted by some blending seeds S_h:
//   context_h' = blend_seeds(context_h, {kernel_i(context_h) : i in S_h}, {alpha_i})
Tensor KasminaAttentionLayer::transform_head_context(const Tensor& context) {
    bank_.begin_forward(is_training());
    if (bank_.idle() && !telemetry_on()) return context;
    const std::vector<BlendingSeed> seeds = bank_.snapshot();
    std::vector<std::vector<Tensor>> head_outputs(num_heads());
    std::vector<std::vector<double>> head_alphas(num_heads());
    for (const BlendingSeed& seed : seeds) {
        // One kernel call over all the seed's target heads: [B, T, L, head_dim].
        std::vector<int64_t> heads = seed.target_heads;
        // Slices of the context, not index_select: a device index would be copied over and range-checked
        // on the host, a sync in every forward.
        const bool consecutive = heads.back() - heads.front() + 1 == static_cast<int64_t>(heads.size()) &&
                                 std::is_sorted(heads.begin(), heads.end());
        Tensor targeted;
        if (consecutive) {
            targeted = context.narrow(1, heads.front(), static_cast<int64_t>(heads.size()));
        } else {
            std::vector<Tensor> slices;
            for (int64_t h : heads) slices.push_back(context.narrow(1, h, 1));
            targeted = cat(slices, 1);
        }
        const Tensor output =
            bank_.run_kernel(seed, targeted.shape(), targeted, [&](KernelNetwork& kernel) { return kernel.forward(targeted); });
        if (!output.defined()) continue;
        for (size_t t = 0; t < heads.size(); ++t) {
            head_outputs[heads[t]].push_back(output.select(1, static_cast<int64_t>(t)));
            head_alphas[heads[t]].push_back(seed.alpha);
        }
    }
    std::vector<Tensor> blended;
    bool changed = false;
    for (int64_t h = 0; h < num_heads(); ++h) {
        const Tensor own = context.select(1, h);
        if (head_outputs[h].empty()) {
            blended.push_back(own);
            continue;
        }
        changed = true;
        const auto& alphas = head_alphas[h];
        blended.push_back(blend_seeds(own, head_outputs[h],
                                      Tensor::from_vector<double>(alphas, {static_cast<int64_t>(alphas.size())})));
    }
    report_telemetry(context);
    return changed ? stack(blended, 1) : context;
}

}  // namespace kasmina::morph
