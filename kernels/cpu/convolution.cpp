// 2-D convolution on the CPU: oneDNN primitives for float32 (forward with the bias fused, backward
// data, backward weights with the bias gradient fused; cached per geometry, layouts chosen by oneDNN;
// Winograd F(4x4, 3x3) for the 3x3 convolutions it serves, see set_convolution_winograd), direct
// OpenMP loops for float64 (gradient checks). Operands arrive contiguous (NCHW activations,
// OIHW weights) with shapes checked by kernels/convolution.cpp.
#include "kernels/convolution.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cpu/onednn_utils.h"
#include "kernels/settings.h"

namespace kasmina::kernels::cpu {
namespace {

using dnnl::memory;

// ---- float32 through oneDNN ----------------------------------------------------------------------

// oneDNN's view of Conv2dParams: dilation counts the gaps between taps (PyTorch dilation - 1).
struct Geometry {
    memory::dims strides, dilates, padding_l, padding_r;
};

Geometry geometry(const Conv2dParams& params) {
    return {{params.stride[0], params.stride[1]},
            {params.dilation[0] - 1, params.dilation[1] - 1},
            {params.padding[0], params.padding[1]},
            {params.padding[0], params.padding[1]}};
}

std::string params_key(const Conv2dParams& params) {
    return make_message("s", params.stride[0], ",", params.stride[1], "p", params.padding[0], ",", params.padding[1],
                        "d", params.dilation[0], ",", params.dilation[1], "g", params.groups, "w",
                        convolution_winograd() ? 1 : 0);
}

// The fewest output pixels over the batch (N * OH * OW) for which Winograd is tried. Measured with
// 2 threads on AVX-512 (oneDNN's jit_wino_4x3): [8, 32, 32, 32] -> 32 takes 341 / 360 / 348 us
// (forward / backward data / backward weights) against the direct kernel's 660 / 649 / 764, and
// [256, 32, 4, 4] 188 / 174 / 176 against 229 / 236 / 366; at [8, 32, 8, 8] the forward is slower
// (41.5 against 35.4 us): the transforms outweigh the products saved.
constexpr int64_t kWinogradMinPixels = 4096;

// The fewest input and output channels for which Winograd is tried: its transforms cost per channel what
// the products save per pair of channels. The demo network's first convolution ([256, 1, 28, 28] -> 32)
// took 7.4 ms by Winograd against 1.5 ms direct; [8, 16, 28, 28] -> 16 was still faster by Winograd.
constexpr int64_t kWinogradMinChannels = 16;

// Whether a float32 convolution asks oneDNN for Winograd first.
bool winograd_candidate(const Shape& weight, const Shape& out, const Conv2dParams& params) {
    return convolution_winograd() && params.groups == 1 && weight[2] == 3 && weight[3] == 3 &&
           weight[0] >= kWinogradMinChannels && weight[1] >= kWinogradMinChannels &&
           params.stride[0] == 1 && params.stride[1] == 1 && params.dilation[0] == 1 && params.dilation[1] == 1 &&
           out[0] * out[2] * out[3] >= kWinogradMinPixels;
}

// make(algorithm) for the convolution with this weight, output and parameters: Winograd where it is a
// candidate and oneDNN implements it, else the direct kernel (oneDNN has Winograd only with AVX-512).
template <typename Make>
auto with_algorithm(const Shape& weight, const Shape& out, const Conv2dParams& params, Make&& make) {
    if (winograd_candidate(weight, out, params)) {
        try {
            return make(dnnl::algorithm::convolution_winograd);
        } catch (const dnnl::error&) {  // no Winograd implementation for this shape or ISA
        }
    }
    return make(dnnl::algorithm::convolution_direct);
}

// activations [N, C, H, W] as nchw
memory::desc activation_desc(const Shape& shape) {
    return memory::desc(memory::dims(shape.begin(), shape.end()), memory::data_type::f32, memory::format_tag::nchw);
}

// weight [O, C / G, KH, KW] as oihw, or as goihw [G, O / G, C / G, KH, KW] when grouped (same bytes)
memory::desc weight_desc(const Shape& shape, int64_t groups) {
    if (groups == 1)
        return memory::desc(memory::dims(shape.begin(), shape.end()), memory::data_type::f32, memory::format_tag::oihw);
    return memory::desc({groups, shape[0] / groups, shape[1], shape[2], shape[3]}, memory::data_type::f32,
                        memory::format_tag::goihw);
}

memory::desc bias_desc(int64_t channels) {
    return memory::desc({channels}, memory::data_type::f32, memory::format_tag::x);
}

// Tensors hold plain layouts, but primitives are created with "any" so oneDNN picks its blocked or
// channels-last layouts, and execute() reorders around them. At x[8, 32, 32, 32], 32 out, 3x3 with 2
// threads (bench/bench_convolution.cpp) that runs the forward ~1.6x and forward + backward ~2.3x faster
// than plain nchw / oihw, where oneDNN falls back to im2col + GEMM.
memory::desc any_layout(const memory::desc& plain) {
    return memory::desc(plain.dims(), memory::data_type::f32, memory::format_tag::any);
}

// The forward's activations in oneDNN's channel-blocked layout (nChw16c with AVX-512, nChw8c without)
// when the channels fill whole blocks: its direct kernel is as fast as the channels-last kernel "any"
// picks, and reordering to and from the blocked layout is ~3x cheaper (60 vs 180 us at [8, 32, 32, 32],
// 2 threads; the forward went 851 -> 736 us). Grouped or odd channel counts keep "any".
memory::desc forward_activation_layout(const Shape& shape, int64_t groups) {
    static const bool avx512 = (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & dnnl_cpu_isa_avx512_core) ==
                               static_cast<unsigned>(dnnl_cpu_isa_avx512_core);
    const int64_t block = avx512 ? 16 : 8;
    const memory::desc plain = activation_desc(shape);
    if (groups != 1 || shape[1] % block != 0) return any_layout(plain);
    return memory::desc(plain.dims(), memory::data_type::f32, avx512 ? memory::format_tag::nChw16c : memory::format_tag::nChw8c);
}

dnnl::convolution_forward::primitive_desc forward_descriptor(dnnl::prop_kind kind, dnnl::algorithm algorithm,
                                                             const Shape& x, const Shape& weight, bool with_bias,
                                                             const Shape& out, const Conv2dParams& params) {
    const Geometry g = geometry(params);
    const dnnl::convolution_forward::desc desc(
        kind, algorithm, forward_activation_layout(x, params.groups),
        any_layout(weight_desc(weight, params.groups)), with_bias ? bias_desc(weight[0]) : memory::desc(),
        forward_activation_layout(out, params.groups), g.strides, g.dilates, g.padding_l, g.padding_r);
    return {desc, onednn::engine()};
}

// The layout `primitive` expects for execution argument `argument`.
memory::desc argument_desc(const dnnl::primitive& primitive, int argument) {
    const dnnl_memory_desc_t* desc =
        dnnl_primitive_desc_query_md(primitive.get_primitive_desc(), dnnl_query_exec_arg_md, argument);
    return memory::desc(*desc);
}

struct Argument {
    int index;
    memory user;  // the tensor's own memory, in its plain layout
};

// Weights converted to a primitive's layout, with the plain bytes they were converted from. A call that
// brings the same bytes as a kept conversion (inference with fixed weights, the backward after its
// forward, two seeds of one shape taking turns) skips the conversion, which for Winograd is the weight
// transform (0.21-0.27 ms at [32, 32, 3, 3] and [32, 64, 3, 3], against 0.45-0.66 ms for the
// convolution it serves). Comparing bytes, not versions, keeps it right whatever wrote the weights.
struct ConvertedWeights {
    memory buffer;
    std::vector<char> source;
};

// The most weight conversions kept per primitive and thread (the most recently used).
constexpr size_t kKeptConversions = 4;

// `user` converted to `desc` by `convert`, or a kept conversion of the same bytes; `kept` holds them
// for one primitive, the most recently used last.
template <typename Convert>
memory converted_weights(std::vector<ConvertedWeights>& kept, const memory& user, const memory::desc& desc,
                         Convert&& convert) {
    const size_t bytes = user.get_desc().get_size();
    const char* data = static_cast<const char*>(user.get_data_handle());
    for (auto it = kept.begin(); it != kept.end(); ++it)
        if (it->buffer.get_desc() == desc && it->source.size() == bytes &&
            std::memcmp(it->source.data(), data, bytes) == 0) {
            std::rotate(it, it + 1, kept.end());
            return kept.back().buffer;
        }
    // A miss converts into the least recently used entry once all are in use, so weights that change
    // every call (training) cost no allocation after the first few calls.
    if (!kept.empty() && kept.front().buffer.get_desc() != desc) kept.clear();
    if (kept.size() < kKeptConversions)
        kept.push_back({memory(desc, onednn::engine()), {}});
    else
        std::rotate(kept.begin(), kept.begin() + 1, kept.end());
    ConvertedWeights& entry = kept.back();
    entry.source.assign(data, data + bytes);
    convert(entry.buffer);
    return entry.buffer;
}

// Runs `primitive` on plain-layout tensors: inputs in another layout than the primitive's are
// reordered into it first (the weights only when no kept conversion has their bytes), outputs
// reordered back after. Reorders are cached under `key`.
void execute(const std::string& key, const dnnl::primitive& primitive, const std::vector<Argument>& inputs,
             const std::vector<Argument>& outputs) {
    auto reorder = [&](int index, const char* direction, const memory& from, const memory& to) {
        const dnnl::primitive converter = onednn::cached_primitive(key + "|" + direction + std::to_string(index),
                                                                   [&] { return dnnl::reorder(from, to); });
        converter.execute(onednn::stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
    };
    // Staging buffers in the primitive's layouts, kept per thread and argument: a fresh allocation per
    // call would page-fault its way through megabytes on every convolution.
    thread_local std::unordered_map<std::string, memory> staging_buffers;
    thread_local std::unordered_map<std::string, std::vector<ConvertedWeights>> weight_conversions;
    auto staging_for = [&](const char* direction, int index, const memory::desc& desc) {
        const std::string name = key + "|" + direction + std::to_string(index);
        auto found = staging_buffers.find(name);
        if (found == staging_buffers.end() || found->second.get_desc() != desc)
            found = staging_buffers.insert_or_assign(name, memory(desc, onednn::engine())).first;
        return found->second;
    };
    std::unordered_map<int, memory> arguments;
    for (const Argument& input : inputs) {
        const memory::desc wanted = argument_desc(primitive, input.index);
        if (wanted == input.user.get_desc()) {
            arguments.emplace(input.index, input.user);
            continue;
        }
        if (input.index == DNNL_ARG_WEIGHTS) {
            const auto convert = [&](const memory& to) { reorder(input.index, "in", input.user, to); };
            arguments.emplace(input.index, converted_weights(weight_conversions[key], input.user, wanted, convert));
            continue;
        }
        const memory converted = staging_for("in", input.index, wanted);
        reorder(input.index, "in", input.user, converted);
        arguments.emplace(input.index, converted);
    }
    std::vector<std::pair<const Argument*, memory>> write_back;  // (output, staging in the primitive's layout)
    for (const Argument& output : outputs) {
        const memory::desc produced = argument_desc(primitive, output.index);
        if (produced == output.user.get_desc()) {
            arguments.emplace(output.index, output.user);
            continue;
        }
        const memory staging = staging_for("out", output.index, produced);
        arguments.emplace(output.index, staging);
        write_back.emplace_back(&output, staging);
    }
    primitive.execute(onednn::stream(), arguments);
    for (const auto& [output, staging] : write_back) reorder(output->index, "out", staging, output->user);
    onednn::stream().wait();
}

memory wrap(const memory::desc& desc, const Tensor& tensor) { return onednn::wrap(desc, tensor); }

void onednn_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                    const Tensor& out) {
    const std::string key = onednn::geometry_key("conv2d_forward", {&x, &weight, &bias, &out}, params_key(params));
    const dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        return with_algorithm(weight.shape(), out.shape(), params, [&](dnnl::algorithm algorithm) {
            return dnnl::convolution_forward(forward_descriptor(dnnl::prop_kind::forward_inference, algorithm,
                                                                x.shape(), weight.shape(), bias.defined(), out.shape(),
                                                                params));
        });
    });
    std::vector<Argument> inputs{{DNNL_ARG_SRC, wrap(activation_desc(x.shape()), x)},
                                 {DNNL_ARG_WEIGHTS, wrap(weight_desc(weight.shape(), params.groups), weight)}};
    if (bias.defined()) inputs.push_back({DNNL_ARG_BIAS, wrap(bias_desc(bias.size(0)), bias)});
    execute(key, primitive, inputs, {{DNNL_ARG_DST, wrap(activation_desc(out.shape()), out)}});
}

void onednn_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                          const Tensor& grad_input) {
    const std::string key =
        onednn::geometry_key("conv2d_backward_data", {&grad_output, &weight, &grad_input}, params_key(params));
    const dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        return with_algorithm(weight.shape(), grad_output.shape(), params, [&](dnnl::algorithm algorithm) {
            const auto hint = forward_descriptor(dnnl::prop_kind::forward_training, algorithm, grad_input.shape(),
                                                 weight.shape(), false, grad_output.shape(), params);
            const Geometry g = geometry(params);
            const dnnl::convolution_backward_data::desc desc(
                algorithm, any_layout(activation_desc(grad_input.shape())),
                any_layout(weight_desc(weight.shape(), params.groups)),
                any_layout(activation_desc(grad_output.shape())), g.strides, g.dilates, g.padding_l, g.padding_r);
            return dnnl::convolution_backward_data(
                dnnl::convolution_backward_data::primitive_desc(desc, onednn::engine(), hint));
        });
    });
    execute(key, primitive,
            {{DNNL_ARG_DIFF_DST, wrap(activation_desc(grad_output.shape()), grad_output)},
             {DNNL_ARG_WEIGHTS, wrap(weight_desc(weight.shape(), params.groups), weight)}},
            {{DNNL_ARG_DIFF_SRC, wrap(activation_desc(grad_input.shape()), grad_input)}});
}

void onednn_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                             const Tensor& grad_weight, const Tensor& grad_bias) {
    const std::string key = onednn::geometry_key("conv2d_backward_weights",
                                                 {&grad_output, &x, &grad_weight, &grad_bias}, params_key(params));
    const dnnl::primitive primitive = onednn::cached_primitive(key, [&] {
        const bool with_bias = grad_bias.defined();
        return with_algorithm(grad_weight.shape(), grad_output.shape(), params, [&](dnnl::algorithm algorithm) {
            const auto hint = forward_descriptor(dnnl::prop_kind::forward_training, algorithm, x.shape(),
                                                 grad_weight.shape(), with_bias, grad_output.shape(), params);
            const Geometry g = geometry(params);
            const dnnl::convolution_backward_weights::desc desc(
                algorithm, any_layout(activation_desc(x.shape())),
                any_layout(weight_desc(grad_weight.shape(), params.groups)),
                with_bias ? bias_desc(grad_weight.size(0)) : memory::desc(),
                any_layout(activation_desc(grad_output.shape())), g.strides, g.dilates, g.padding_l, g.padding_r);
            return dnnl::convolution_backward_weights(
                dnnl::convolution_backward_weights::primitive_desc(desc, onednn::engine(), hint));
        });
    });
    std::vector<Argument> outputs{
        {DNNL_ARG_DIFF_WEIGHTS, wrap(weight_desc(grad_weight.shape(), params.groups), grad_weight)}};
    if (grad_bias.defined()) outputs.push_back({DNNL_ARG_DIFF_BIAS, wrap(bias_desc(grad_bias.size(0)), grad_bias)});
    execute(key, primitive,
            {{DNNL_ARG_SRC, wrap(activation_desc(x.shape()), x)},
             {DNNL_ARG_DIFF_DST, wrap(activation_desc(grad_output.shape()), grad_output)}},
            outputs);
}

// oneDNN failures (none expected for checked shapes) surface as kasmina errors naming the op.
template <typename Fn>
void guarded(const char* op, Fn&& fn) {
    try {
        fn();
    } catch (const dnnl::error& error) {
        raise<Error>(op, "oneDNN failed: ", error.what());
    }
}

// ---- direct loops (float64) ----------------------------------------------------------------------

// Sizes of one convolution, read from its operands' shapes.
struct Extents {
    int64_t batch, channels, height, width;                    // input [N, C, H, W]
    int64_t out_channels, group_channels, kernel_h, kernel_w;  // weight [O, C / G, KH, KW]
    int64_t out_h, out_w;                                      // output [N, O, OH, OW]
    int64_t groups, group_out_channels;                        // G, O / G
};

Extents extents(const Shape& input, const Shape& weight, const Shape& output, int64_t groups) {
    return {input[0],  input[1],  input[2],  input[3],  weight[0], weight[1],
            weight[2], weight[3], output[2], output[3], groups,    weight[0] / groups};
}

// Input row/column read by output position `out` through kernel tap `tap`; may lie in the padding.
inline int64_t input_index(int64_t out, int64_t tap, int64_t axis, const Conv2dParams& params) {
    return out * params.stride[axis] - params.padding[axis] + tap * params.dilation[axis];
}

constexpr int64_t parallel_threshold = 1 << 15;  // multiply-adds below which threads cost more than they save

// out[n, o] = bias[o] + sum over the group's channels c and taps (kh, kw) of weight[o, c, kh, kw] * x[n, g*C/G + c]
template <typename T>
void direct_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                    const Tensor& out) {
    const Extents e = extents(x.shape(), weight.shape(), out.shape(), params.groups);
    const T* px = x.data<T>();
    const T* pw = weight.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T* po = out.data<T>();
    const int64_t work = out.numel() * e.group_channels * e.kernel_h * e.kernel_w;
#pragma omp parallel for collapse(2) schedule(static) if (work > parallel_threshold)
    for (int64_t n = 0; n < e.batch; ++n) {
        for (int64_t o = 0; o < e.out_channels; ++o) {
            const int64_t group = o / e.group_out_channels;
            T* plane = po + (n * e.out_channels + o) * e.out_h * e.out_w;
            for (int64_t i = 0; i < e.out_h * e.out_w; ++i) plane[i] = pb ? pb[o] : T(0);
            for (int64_t c = 0; c < e.group_channels; ++c) {
                const T* input = px + (n * e.channels + group * e.group_channels + c) * e.height * e.width;
                const T* taps = pw + (o * e.group_channels + c) * e.kernel_h * e.kernel_w;
                for (int64_t kh = 0; kh < e.kernel_h; ++kh) {
                    for (int64_t kw = 0; kw < e.kernel_w; ++kw) {
                        const T tap = taps[kh * e.kernel_w + kw];
                        for (int64_t oh = 0; oh < e.out_h; ++oh) {
                            const int64_t ih = input_index(oh, kh, 0, params);
                            if (ih < 0 || ih >= e.height) continue;
                            for (int64_t ow = 0; ow < e.out_w; ++ow) {
                                const int64_t iw = input_index(ow, kw, 1, params);
                                if (iw >= 0 && iw < e.width) plane[oh * e.out_w + ow] += tap * input[ih * e.width + iw];
                            }
                        }
                    }
                }
            }
        }
    }
}

// grad_input[n, c] = sum over the group's output channels o and taps of weight[o, c, kh, kw] * grad[n, o, ...]
// scattered back to the input positions the taps read. Each thread owns whole (n, c) planes.
template <typename T>
void direct_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                          const Tensor& grad_input) {
    const Extents e = extents(grad_input.shape(), weight.shape(), grad_output.shape(), params.groups);
    const T* pg = grad_output.data<T>();
    const T* pw = weight.data<T>();
    T* pi = grad_input.data<T>();
    const int64_t work = grad_output.numel() * e.group_channels * e.kernel_h * e.kernel_w;
#pragma omp parallel for collapse(2) schedule(static) if (work > parallel_threshold)
    for (int64_t n = 0; n < e.batch; ++n) {
        for (int64_t c = 0; c < e.channels; ++c) {
            const int64_t group = c / e.group_channels, local = c % e.group_channels;
            T* plane = pi + (n * e.channels + c) * e.height * e.width;
            for (int64_t i = 0; i < e.height * e.width; ++i) plane[i] = T(0);
            for (int64_t o = group * e.group_out_channels; o < (group + 1) * e.group_out_channels; ++o) {
                const T* grad = pg + (n * e.out_channels + o) * e.out_h * e.out_w;
                const T* taps = pw + (o * e.group_channels + local) * e.kernel_h * e.kernel_w;
                for (int64_t kh = 0; kh < e.kernel_h; ++kh) {
                    for (int64_t kw = 0; kw < e.kernel_w; ++kw) {
                        const T tap = taps[kh * e.kernel_w + kw];
                        for (int64_t oh = 0; oh < e.out_h; ++oh) {
                            const int64_t ih = input_index(oh, kh, 0, params);
                            if (ih < 0 || ih >= e.height) continue;
                            for (int64_t ow = 0; ow < e.out_w; ++ow) {
                                const int64_t iw = input_index(ow, kw, 1, params);
                                if (iw >= 0 && iw < e.width) plane[ih * e.width + iw] += tap * grad[oh * e.out_w + ow];
                            }
                        }
                    }
                }
            }
        }
    }
}

// grad_weight[o, c, kh, kw] = sum over n, oh, ow of grad[n, o, oh, ow] * x[n, g * C/G + c, ih, iw]
template <typename T>
void direct_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                             const Tensor& grad_weight) {
    const Extents e = extents(x.shape(), grad_weight.shape(), grad_output.shape(), params.groups);
    const T* pg = grad_output.data<T>();
    const T* px = x.data<T>();
    T* pw = grad_weight.data<T>();
    const int64_t work = grad_output.numel() * e.group_channels * e.kernel_h * e.kernel_w;
#pragma omp parallel for collapse(2) schedule(static) if (work > parallel_threshold)
    for (int64_t o = 0; o < e.out_channels; ++o) {
        for (int64_t local = 0; local < e.group_channels; ++local) {
            const int64_t c = (o / e.group_out_channels) * e.group_channels + local;
            T* taps = pw + (o * e.group_channels + local) * e.kernel_h * e.kernel_w;
            for (int64_t kh = 0; kh < e.kernel_h; ++kh) {
                for (int64_t kw = 0; kw < e.kernel_w; ++kw) {
                    T sum = T(0);
                    for (int64_t n = 0; n < e.batch; ++n) {
                        const T* grad = pg + (n * e.out_channels + o) * e.out_h * e.out_w;
                        const T* input = px + (n * e.channels + c) * e.height * e.width;
                        for (int64_t oh = 0; oh < e.out_h; ++oh) {
                            const int64_t ih = input_index(oh, kh, 0, params);
                            if (ih < 0 || ih >= e.height) continue;
                            for (int64_t ow = 0; ow < e.out_w; ++ow) {
                                const int64_t iw = input_index(ow, kw, 1, params);
                                if (iw >= 0 && iw < e.width) sum += grad[oh * e.out_w + ow] * input[ih * e.width + iw];
                            }
                        }
                    }
                    taps[kh * e.kernel_w + kw] = sum;
                }
            }
        }
    }
}

// grad_bias[o] = sum over n, oh, ow of grad[n, o, oh, ow]
template <typename T>
void direct_backward_bias(const Tensor& grad_output, const Tensor& grad_bias) {
    const int64_t batch = grad_output.size(0), out_channels = grad_output.size(1);
    const int64_t plane = grad_output.size(2) * grad_output.size(3);
    const T* pg = grad_output.data<T>();
    T* pb = grad_bias.data<T>();
#pragma omp parallel for schedule(static) if (grad_output.numel() > parallel_threshold)
    for (int64_t o = 0; o < out_channels; ++o) {
        T sum = T(0);
        for (int64_t n = 0; n < batch; ++n) {
            const T* grad = pg + (n * out_channels + o) * plane;
            for (int64_t i = 0; i < plane; ++i) sum += grad[i];
        }
        pb[o] = sum;
    }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                    const Tensor& out) {
    if (x.dtype() == DType::f32) {
        guarded("conv2d", [&] { onednn_forward(x, weight, bias, params, out); });
        return;
    }
    dispatch_floating(x.dtype(), "conv2d", [&]<typename T>() { direct_forward<T>(x, weight, bias, params, out); });
}

void conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                          const Tensor& grad_input) {
    if (grad_output.dtype() == DType::f32) {
        guarded("conv2d_backward", [&] { onednn_backward_data(grad_output, weight, params, grad_input); });
        return;
    }
    dispatch_floating(grad_output.dtype(), "conv2d_backward",
                      [&]<typename T>() { direct_backward_data<T>(grad_output, weight, params, grad_input); });
}

void conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                             const Tensor& grad_weight, const Tensor& grad_bias) {
    // The bias gradient alone is a plain reduction; oneDNN fuses it only into the weight gradient.
    if (grad_output.dtype() == DType::f32 && grad_weight.defined()) {
        guarded("conv2d_backward", [&] { onednn_backward_weights(grad_output, x, params, grad_weight, grad_bias); });
        return;
    }
    dispatch_floating(grad_output.dtype(), "conv2d_backward", [&]<typename T>() {
        if (grad_weight.defined()) direct_backward_weights<T>(grad_output, x, params, grad_weight);
        if (grad_bias.defined()) direct_backward_bias<T>(grad_output, grad_bias);
    });
}

}  // namespace kasmina::kernels::cpu
