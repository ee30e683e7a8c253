// The Kasmina layers: each owns the computation of the standard layer it replaces (weights and
// buffers copied from it, so with no seed blending its output is identical, bit for bit) plus
// seed slots whose kernels are blended into the output (SPEC.md, "Kasmina layers").
//   KasminaLayer (Linear), KasminaConv2dLayer, KasminaLayerNormLayer, Kasmina1dBatchNormLayer,
//   Kasmina2dBatchNormLayer: kernels map the layer's input (norms: its normalized output) to the
//   layer's output shape. KasminaAttentionLayer: kernels transform their target heads' context.
#pragma once

#include <memory>
#include <string>

#include "layers/conv2d.h"
#include "layers/kasmina/seed_bank.h"
#include "layers/kasmina/telemetry.h"
#include "layers/linear.h"
#include "layers/multihead_attention.h"
#include "layers/normalization.h"

namespace kasmina::morph {

struct KasminaOptions {
    int num_seeds = 4;
    std::shared_ptr<KernelCache> cache;
};

// What wrap() and controllers see of any Kasmina layer.
class KasminaLayerBase {
public:
    virtual ~KasminaLayerBase() = default;
    virtual nn::Module& module() = 0;
    virtual const nn::Module& module() const = 0;
    // A plain standard layer with this layer's current host weights and buffers (for unwrap()).
    virtual std::shared_ptr<nn::Module> make_plain() const = 0;

    SeedBank& seeds() { return bank_; }
    const SeedBank& seeds() const { return bank_; }
    void load_kernel(int seed, uint64_t id, const LoadOptions& options = {}) { bank_.load_kernel(seed, id, options); }
    void unload_kernel(int seed) { bank_.unload_kernel(seed); }
    void set_seed_alpha(int seed, double alpha) { bank_.set_seed_alpha(seed, alpha); }
    void ramp_alpha(int seed, double target, int64_t steps) { bank_.ramp_alpha(seed, target, steps); }
    void fossilize(int seed) { bank_.fossilize(seed); }
    void freeze_kernel(int seed) { bank_.freeze_kernel(seed); }
    std::vector<SeedReport> layer_stats() const { return bank_.reports(); }

    // Reports every `interval` training steps to `sink` under `name`; a null sink turns telemetry off.
    // On a GPU the two activation statistics come back without a sync: the report of step s reaches the
    // sink at the first forward after their copy to the host has landed.
    void set_telemetry(std::shared_ptr<TelemetrySink> sink, std::string name, int64_t interval = 1);

protected:
    KasminaLayerBase(const KasminaOptions& options, KernelSignature signature)
        : bank_(options.num_seeds, std::move(signature), options.cache) {}
    bool telemetry_on() const { return telemetry_sink_ != nullptr; }
    void report_telemetry(const Tensor& d);

    SeedBank bank_;

private:
    std::shared_ptr<TelemetrySink> telemetry_sink_;
    std::string telemetry_name_;
    int64_t telemetry_interval_ = 1;
    LayerReport pending_report_;  // waiting for its activation statistics in telemetry_readback_
    Readback telemetry_readback_;
};

// The device and floating dtype of a module's first parameter or buffer (CPU, float32 without any).
Device device_of(const nn::Module& module);
DType dtype_of(const nn::Module& module);

// Where dense variants' kernels read from.
enum class KernelInput { layer_input, layer_output };

// The shared mechanism of the dense variants: host forward, then (only if a seed blends) run the
// kernels and blend in one pass.
template <typename Host, KernelInput Reads>
class SeededLayer : public Host, public KasminaLayerBase {
public:
    Tensor forward(const Tensor& input) override {
        const Tensor d = Host::forward(input);
        if (bank_.idle() && !telemetry_on()) {
            bank_.begin_forward(this->is_training());
            return d;
        }
        bank_.begin_forward(this->is_training());
        const Tensor& kernel_input = Reads == KernelInput::layer_input ? input : d;
        Tensor out = bank_.blend(d, kernel_input);
        report_telemetry(d);
        return out;
    }
    nn::Module& module() override { return *this; }
    const nn::Module& module() const override { return *this; }

protected:
    template <typename... HostArguments>
    SeededLayer(const KasminaOptions& options, KernelSignature signature, HostArguments&&... arguments)
        : Host(std::forward<HostArguments>(arguments)...), KasminaLayerBase(options, std::move(signature)) {}
    // Copies the original's weights, buffers, mode and device.
    void adopt(const Host& original) {
        this->to(device_of(original));
        this->to(dtype_of(original));  // a float64 original stays float64
        bank_.set_device(device_of(original));
        bank_.set_dtype(dtype_of(original));
        this->load_state_dict(original.state_dict(), /*strict=*/true);
        this->train(original.is_training());
    }
    std::vector<std::pair<std::string, Tensor>> dynamic_parameters() const override { return bank_.kernel_parameters(); }
    void on_device_changed(Device device) override { bank_.set_device(device); }
    void on_dtype_changed(DType dtype) override { bank_.set_dtype(dtype); }
};

class KasminaLayer final : public SeededLayer<nn::Linear, KernelInput::layer_input> {
public:
    KasminaLayer(const nn::Linear& original, const KasminaOptions& options);
    std::string type_name() const override { return "KasminaLayer"; }
    std::shared_ptr<nn::Module> make_plain() const override;
};

class KasminaConv2dLayer final : public SeededLayer<nn::Conv2d, KernelInput::layer_input> {
public:
    KasminaConv2dLayer(const nn::Conv2d& original, const KasminaOptions& options);
    std::string type_name() const override { return "KasminaConv2dLayer"; }
    std::shared_ptr<nn::Module> make_plain() const override;
};

class KasminaLayerNormLayer final : public SeededLayer<nn::LayerNorm, KernelInput::layer_output> {
public:
    KasminaLayerNormLayer(const nn::LayerNorm& original, const KasminaOptions& options);
    std::string type_name() const override { return "KasminaLayerNormLayer"; }
    std::shared_ptr<nn::Module> make_plain() const override;
};

class Kasmina1dBatchNormLayer final : public SeededLayer<nn::BatchNorm1d, KernelInput::layer_output> {
public:
    Kasmina1dBatchNormLayer(const nn::BatchNorm1d& original, const KasminaOptions& options);
    std::string type_name() const override { return "Kasmina1dBatchNormLayer"; }
    std::shared_ptr<nn::Module> make_plain() const override;
};

class Kasmina2dBatchNormLayer final : public SeededLayer<nn::BatchNorm2d, KernelInput::layer_output> {
public:
    Kasmina2dBatchNormLayer(const nn::BatchNorm2d& original, const KasminaOptions& options);
    std::string type_name() const override { return "Kasmina2dBatchNormLayer"; }
    std::shared_ptr<nn::Module> make_plain() const override;
};

// Head-sliced: a kernel names the heads it targets and transforms those heads' context
// [batch, target, head_dim] before the output projection; untouched heads pass through. Each head's
// context is blended with the alphas of the seeds that target it.
class KasminaAttentionLayer final : public nn::MultiheadAttention, public KasminaLayerBase {
public:
    KasminaAttentionLayer(const nn::MultiheadAttention& original, const KasminaOptions& options);
    std::string type_name() const override { return "KasminaAttentionLayer"; }
    nn::Module& module() override { return *this; }
    const nn::Module& module() const override { return *this; }
    std::shared_ptr<nn::Module> make_plain() const override;
    // The per-head context after the seeds' kernels are blended in: [B, heads, L, head_dim] -> same.
    Tensor blended_head_context(const Tensor& context) { return transform_head_context(context); }

protected:
    Tensor transform_head_context(const Tensor& context) override;
    std::vector<std::pair<std::string, Tensor>> dynamic_parameters() const override { return bank_.kernel_parameters(); }
    void on_device_changed(Device device) override { bank_.set_device(device); }
    void on_dtype_changed(DType dtype) override { bank_.set_dtype(dtype); }
};

// The signature a layer offers to kernels (kind and shapes), checked against every artifact it loads.
KernelSignature signature_of(const nn::Linear& layer);
KernelSignature signature_of(const nn::Conv2d& layer);
KernelSignature signature_of(const nn::MultiheadAttention& layer);
KernelSignature signature_of(const nn::LayerNorm& layer);
KernelSignature signature_of(const nn::BatchNorm& layer);

}  // namespace kasmina::morph
