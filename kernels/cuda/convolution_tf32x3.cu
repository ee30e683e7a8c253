// Implicit-GEMM convolutions on the 3xTF32 main loop (contract in convolution_tf32x3.h), blocks of
// 64 x 128 outputs (four warps; two blocks a multiprocessor), for NCHW float32. The reduction over
// taps runs as (r, s, c), channel fastest, so a 32-deep slice is (mostly) one tap of 32 channels; the
// weights are reordered to [O, KH, KW, C] to match (a small kernel, each call).
// - forward: out[o, (image, pixel)] = W[o, (r, s, c)] im2col[(r, s, c), (image, pixel)], the output
//   channels as rows (m = O), the pixels of every image as columns (n = N * OH * OW, written straight
//   into NCHW through the GEMM's column groups), the bias added per row;
// - input gradient (stride 1): the forward over grad_output with the kernel flipped and its input
//   and output channels swapped;
// - weight gradient: dW[o, (r, s, c)] = dY[o, (image, pixel)] im2col[(image, pixel), (r, s, c)], the
//   long sum over images and pixels split among blocks and added in a fixed order, then reordered
//   back to [O, C, KH, KW].
// The im2col entries are gathered 4 bytes at a time (cp.async, zero-filled outside the image).
#include "kernels/cuda/convolution_tf32x3.h"

#include <climits>
#include <initializer_list>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3_gemm.cuh"

namespace kasmina::kernels::cuda {
namespace {

using tf32x3::kBlockK;
using tf32x3::kBlockN;
using Block = tf32x3::BlockShape<64>;
constexpr int kThreadsPerBlock = Block::kThreads;
static_assert(kThreadsPerBlock == kBlockN, "the im2col loaders give each thread one column or one lane of rows");

// n / d for 0 <= n < 2^31 and d >= 1 by a multiply-high, an add and a shift (Granlund and Montgomery's method
// for a divisor known at launch): the loaders below divide by the same few sizes every slice, and a
// 32-bit division takes about twenty instructions.
struct Divisor {
    uint32_t multiplier = 1, shift = 0;

    Divisor() = default;
    explicit Divisor(int d) {
        while ((uint32_t{1} << shift) < static_cast<uint32_t>(d)) ++shift;
        multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
    }
    __device__ int divide(int n) const {
        return static_cast<int>((__umulhi(static_cast<uint32_t>(n), multiplier) + static_cast<uint32_t>(n)) >> shift);
    }
};

// An image batch read as an im2col matrix, and the convolution that reads it.
struct ImageSource {
    const float* x;                  // [N, channels, height, width]
    int channels, height, width;     // of the input
    int out_width, pixels;           // of the output: OW and OH * OW
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    Divisor by_channels, by_out_width, by_pixels, by_kernel_w;

    __device__ int64_t image_offset(int image) const {
        return static_cast<int64_t>(image) * channels * height * width;
    }
    __device__ bool inside(int ih, int iw) const {
        return static_cast<unsigned>(ih) < static_cast<unsigned>(height) &&
               static_cast<unsigned>(iw) < static_cast<unsigned>(width);
    }
};

// B (k, n) of the forward: k = (r, s, channel), channel fastest (the weights are reordered to
// match), n = (image, output pixel); entry x[image, channel, oh * stride_h - pad_h + r * dilation_h,
// ow * stride_w - pad_w + s * dilation_w], zero outside the image. Each thread gathers one column:
// its pixel is the same in every slice, so its position is worked out once, and along k only the
// channel moves (one plane further each step) until the tap changes, so whether the entry lies in
// the image is decided once per tap. Pixels contiguous in shared memory, as in the image: a warp
// reads 32 neighbouring pixels and writes 32 neighbouring floats.
struct Im2colColumnsTile : tf32x3::TileLayout<false, kBlockN> {
    using Source = ImageSource;

    struct Loader {
        ImageSource g;
        const float* image;  // this thread's image
        int top, left;       // the input position of tap (0, 0) for this thread's pixel
        bool valid;          // the column exists

        __device__ Loader(const Source& source, int /*batch*/, int n0, int n_count) : g(source) {
            const int column = n0 + static_cast<int>(threadIdx.x);
            valid = column < n_count;
            const int image_index = valid ? g.by_pixels.divide(column) : 0;
            const int pixel = valid ? column - image_index * g.pixels : 0;
            const int oh = g.by_out_width.divide(pixel), ow = pixel - oh * g.out_width;
            top = oh * g.stride_h - g.pad_h;
            left = ow * g.stride_w - g.pad_w;
            image = g.x + g.image_offset(image_index);
        }

        __device__ void stage(float* tile, int k0, int k_end) const {
            const int plane_size = g.height * g.width;
            const int tap = g.by_channels.divide(k0);
            int channel = k0 - tap * g.channels, r = g.by_kernel_w.divide(tap), s = tap - r * g.kernel_w;
            int ih = top + r * g.dilation_h, iw = left + s * g.dilation_w;
            bool in_image = valid && g.inside(ih, iw);
            int64_t offset = static_cast<int64_t>(channel) * plane_size + ih * g.width + iw;
            float* const column = tile + threadIdx.x;
            if (k0 + kBlockK <= k_end && channel + kBlockK <= g.channels) {
                // The whole slice is one tap: one pixel of 32 consecutive channel planes, two
                // instructions an entry (the address and the copy).
                const float* source = in_image ? image + offset : g.x;
                const int step = in_image ? plane_size : 0;
#pragma unroll
                for (int kk = 0; kk < kBlockK; ++kk) cp_async_4(column + kk * kLd, source + kk * step, in_image);
                return;
            }
#pragma unroll 8
            for (int kk = 0; kk < kBlockK; ++kk) {
                const bool inside = in_image && k0 + kk < k_end;
                cp_async_4(column + kk * kLd, inside ? image + offset : g.x, inside);
                offset += plane_size;
                if (++channel == g.channels) {  // the next tap, from channel 0
                    channel = 0;
                    iw += g.dilation_w;
                    if (++s == g.kernel_w) {
                        s = 0;
                        iw = left;
                        ih += g.dilation_h;
                        ++r;
                    }
                    in_image = valid && g.inside(ih, iw);
                    offset = static_cast<int64_t>(ih) * g.width + iw;
                }
            }
        }
    };
};

// B (k, n) of the weight gradient: k = (image, output pixel), n = (r, s, channel), channel fastest
// (the gradient comes out in the forward's reordered layout and is put back after), the transpose of
// the forward's. In each slice lane l of every warp takes pixel k0 + l (worked out once a slice) and
// warp w the 32 taps 32w..32w+31 of the block: along them only the channel moves until the tap
// (r, s) changes, so the address steps by a plane and whether the entry lies in the image is decided
// once per tap. With C a multiple of 32 the 32 taps share one (r, s): two instructions an entry. k
// contiguous in shared memory (rows of 36): a warp writes 32 neighbouring floats and reads 32
// neighbouring pixels.
struct Im2colRowsTile : tf32x3::TileLayout<true, kBlockN> {
    static constexpr int kRowsPerWarp = kBlockN / (kThreadsPerBlock / 32);
    using Source = ImageSource;

    struct Loader {
        ImageSource g;
        int first_channel, first_r, first_s;  // this warp's first tap
        int taps_left;                        // taps from this warp's first on that exist

        __device__ Loader(const Source& source, int /*batch*/, int n0, int n_count) : g(source) {
            const int first = n0 + static_cast<int>(threadIdx.x / 32) * kRowsPerWarp;
            const int tap = g.by_channels.divide(first);
            first_channel = first - tap * g.channels;
            first_r = g.by_kernel_w.divide(tap);
            first_s = tap - first_r * g.kernel_w;
            taps_left = n_count - first;
        }

        __device__ void stage(float* tile, int k0, int k_end) const {
            const int lane = static_cast<int>(threadIdx.x % 32);
            const int first_row = static_cast<int>(threadIdx.x / 32) * kRowsPerWarp;
            const int position = k0 + lane, plane_size = g.height * g.width;
            const bool valid = position < k_end;
            const int image_index = valid ? g.by_pixels.divide(position) : 0;
            const int pixel = valid ? position - image_index * g.pixels : 0;
            const int oh = g.by_out_width.divide(pixel), ow = pixel - oh * g.out_width;
            const int top = oh * g.stride_h - g.pad_h, left = ow * g.stride_w - g.pad_w;
            const float* const image = g.x + g.image_offset(image_index);
            int channel = first_channel, r = first_r, s = first_s;
            const float* source = g.x;
            int step = 0;
            bool inside = false;
            auto locate = [&](int done) {  // the tap changed (or the first): where it reads, if anywhere
                const int ih = top + r * g.dilation_h, iw = left + s * g.dilation_w;
                inside = valid && done < taps_left && g.inside(ih, iw);
                source = inside ? image + static_cast<int64_t>(channel) * plane_size + ih * g.width + iw : g.x;
                step = inside ? plane_size : 0;
            };
            locate(0);
            float* const column = tile + first_row * kLd + lane;
            if (g.channels % kRowsPerWarp == 0) {  // the warp's rows are 32 channels of one tap
#pragma unroll
                for (int i = 0; i < kRowsPerWarp; ++i) cp_async_4(column + i * kLd, source + i * step, inside);
                return;
            }
#pragma unroll 8
            for (int i = 0; i < kRowsPerWarp; ++i) {
                cp_async_4(column + i * kLd, source, inside);
                source += step;
                if (++channel == g.channels) {  // the same for the whole warp
                    channel = 0;
                    if (++s == g.kernel_w) s = 0, ++r;
                    locate(i + 1);
                }
            }
        }
    };
};

// A (m, k) of the weight gradient: grad_output [N, O, P] as (o, (image, pixel)), k contiguous within
// an image. P is a multiple of 4, so a 16-byte chunk never straddles two images.
struct ImageRowsTile : tf32x3::TileLayout<true, Block::kBlockM> {
    static constexpr int kChunks = Block::kBlockM * kBlockK / 4;
    static_assert(kChunks % kThreadsPerBlock == 0, "every thread copies the same number of chunks");

    struct Source {
        const float* data;
        int pixels, channels;  // P and O
        Divisor by_pixels;
    };

    struct Loader {
        Source source;
        int m0, m_count;

        __device__ Loader(const Source& s, int /*batch*/, int first_row, int rows)
            : source(s), m0(first_row), m_count(rows) {}

        __device__ void stage(float* tile, int k0, int k_end) const {
#pragma unroll
            for (int i = 0; i < kChunks / kThreadsPerBlock; ++i) {
                const int index = static_cast<int>(threadIdx.x) + i * kThreadsPerBlock;
                const int row = index / (kBlockK / 4), inner = index % (kBlockK / 4) * 4;
                const int position = k0 + inner;
                const bool inside = m0 + row < m_count && position < k_end;
                const int image = inside ? source.by_pixels.divide(position) : 0;
                const int64_t offset = (static_cast<int64_t>(image) * source.channels + m0 + row) * source.pixels +
                                       (position - image * source.pixels);
                cp_async_16(tile + row * kLd + inner, inside ? source.data + offset : source.data, inside);
            }
        }
    };
};

using WeightTile = tf32x3::DenseTile<true, Block::kBlockM, kThreadsPerBlock>;

// The GEMMs that gather the image (all three passes) in two stages: the image operand is gathered 4
// bytes at a time and read again by the taps around each pixel, so it gains from a larger L1. Measured
// on an H100 at [64, 64, 56, 56] x [64, 64, 3, 3]: forward 293-298 -> 275-277 us (with one accumulator
// for the cross terms, three stages made no change against four); weight gradient 386 -> 377 us under
// ncu (the benchmark's fwd+bwd within its noise).
using GatheringBlock = tf32x3::BlockShape<64, 2>;

bool fits_int(int64_t value) { return value >= 0 && value < INT_MAX / 2; }

bool float32_on_tensor_cores(std::initializer_list<const Tensor*> tensors) {
    for (const Tensor* t : tensors)
        if (t->dtype() != DType::f32 || !t->is_contiguous()) return false;
    return tensor_cores_available();
}

ImageSource image_source(const Tensor& x, const Shape& weight, const Shape& out, const Conv2dParams& p) {
    auto to_int = [](int64_t v) { return static_cast<int>(v); };
    return {static_cast<const float*>(x.raw_data()),
            to_int(x.size(1)), to_int(x.size(2)), to_int(x.size(3)),
            to_int(out[3]), to_int(out[2] * out[3]),
            to_int(weight[2]), to_int(weight[3]),
            to_int(p.stride[0]), to_int(p.stride[1]), to_int(p.padding[0]), to_int(p.padding[1]),
            to_int(p.dilation[0]), to_int(p.dilation[1]),
            Divisor(to_int(x.size(1))), Divisor(to_int(out[3])), Divisor(to_int(out[2] * out[3])),
            Divisor(to_int(weight[3]))};
}

// The sizes every im2col GEMM indexes in int: the image, the product's sides, the tap offsets.
bool geometry_fits(const Shape& x, const Shape& weight, const Shape& out) {
    const int64_t taps = weight[1] * weight[2] * weight[3], pixels = out[2] * out[3];
    return fits_int(x[1] * x[2] * x[3]) && fits_int(x[0] * pixels) && fits_int(taps) && fits_int(weight[0]) &&
           (weight[0] + Block::kBlockM - 1) / Block::kBlockM <= tf32x3::kMaxGridYZ && x[0] > 0 && weight[0] > 0 &&
           pixels > 0 && taps > 0;
}

Conv2dParams input_gradient_params(const Tensor& weight, const Conv2dParams& p) {
    Conv2dParams flipped = p;
    for (int d = 0; d < 2; ++d) flipped.padding[d] = p.dilation[d] * (weight.size(2 + d) - 1) - p.padding[d];
    return flipped;
}

// How weights move between PyTorch's layout [O, C, KH, KW] and the GEMMs' [rows, KH, KW, columns]
// (columns fastest, the order of the im2col rows above).
enum class WeightOrder {
    forward,        // [O, C, KH, KW] -> [O, KH, KW, C]
    input_gradient,  // [O, C, KH, KW] -> [C, KH, KW, O], the kernel turned by 180 degrees: the input
                     // gradient of a stride-1 convolution as a forward over grad_output
    restore,         // [O, KH, KW, C] -> [O, C, KH, KW] (the weight gradient)
};

// out = w in the order `order` asks for; outputs, inputs, taps_h, taps_w are O, C, KH, KW.
__global__ void reorder_weights_kernel(const float* w, float* out, int outputs, int inputs, int taps_h, int taps_w,
                                       WeightOrder order) {
    const bool flipped = order == WeightOrder::input_gradient;
    const int columns = flipped ? outputs : inputs;
    const int64_t count = static_cast<int64_t>(outputs) * inputs * taps_h * taps_w;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t rest = i;
        const int column = static_cast<int>(rest % columns);
        rest /= columns;
        int s = static_cast<int>(rest % taps_w);
        rest /= taps_w;
        int r = static_cast<int>(rest % taps_h);
        const int row = static_cast<int>(rest / taps_h);
        const int o = flipped ? column : row, c = flipped ? row : column;
        if (flipped) r = taps_h - 1 - r, s = taps_w - 1 - s;
        const int64_t standard = ((static_cast<int64_t>(o) * inputs + c) * taps_h + r) * taps_w + s;
        if (order == WeightOrder::restore) out[standard] = w[i];
        else out[i] = w[standard];
    }
}

// Queues out = w reordered; `standard` is the shape [O, C, KH, KW] of the one in PyTorch's layout.
void reorder_weights(const Tensor& w, const Tensor& out, const Shape& standard, WeightOrder order) {
    reorder_weights_kernel<<<grid_for(w.numel()), kThreads, 0, launch_stream()>>>(
        static_cast<const float*>(w.raw_data()), static_cast<float*>(out.raw_data()), static_cast<int>(standard[0]),
        static_cast<int>(standard[1]), static_cast<int>(standard[2]), static_cast<int>(standard[3]), order);
    check_launch("conv2d");
}

// The weights reordered (and flipped) for the forward's GEMM, as [rows, KH, KW, columns].
Tensor reordered_weights(const Tensor& weight, bool flipped) {
    const int64_t rows = weight.size(flipped ? 1 : 0), columns = weight.size(flipped ? 0 : 1);
    const Tensor out = Tensor::empty({rows, weight.size(2), weight.size(3), columns},
                                     {.dtype = DType::f32, .device = weight.device()});
    reorder_weights(weight, out, weight.shape(), flipped ? WeightOrder::input_gradient : WeightOrder::forward);
    return out;
}

// The forward's GEMM with the weights already reordered ([O, KH, KW, C] for x [N, C, H, W]).
void forward_gemm(const Tensor& x, const Tensor& reordered, const Tensor& bias, const Conv2dParams& params,
                  const Tensor& out) {
    const Shape weight_shape{reordered.size(0), reordered.size(3), reordered.size(1), reordered.size(2)};
    const int64_t outputs = weight_shape[0], taps = reordered.numel() / outputs;
    const int64_t pixels = out.size(2) * out.size(3), columns = x.size(0) * pixels;
    const WeightTile::Source w{static_cast<const float*>(reordered.raw_data()), taps, 0};
    const tf32x3::GemmOutput output{static_cast<float*>(out.raw_data()),
                                    pixels,
                                    0,
                                    outputs * pixels,
                                    pixels,
                                    bias.defined() ? static_cast<const float*>(bias.raw_data()) : nullptr,
                                    true};
    tf32x3::gemm<GatheringBlock, WeightTile, Im2colColumnsTile>(w, image_source(x, weight_shape, out.shape(), params),
                                                             output, outputs, columns, taps, 1);
}

}  // namespace

bool tf32x3_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& out) {
    if (params.groups != 1 || !float32_on_tensor_cores({&x, &weight, &out})) return false;
    const int64_t taps = weight.size(1) * weight.size(2) * weight.size(3);
    return taps % 4 == 0 && geometry_fits(x.shape(), weight.shape(), out.shape());
}

void tf32x3_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                           const Tensor& out) {
    forward_gemm(x, reordered_weights(weight, false), bias, params, out);
}

bool tf32x3_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                         const Tensor& grad_input) {
    if (params.stride[0] != 1 || params.stride[1] != 1 || params.groups != 1) return false;
    const Conv2dParams flipped = input_gradient_params(weight, params);
    if (flipped.padding[0] < 0 || flipped.padding[1] < 0) return false;
    if (!float32_on_tensor_cores({&grad_output, &weight, &grad_input})) return false;
    const Shape flipped_weight{weight.size(1), weight.size(0), weight.size(2), weight.size(3)};
    const int64_t taps = weight.size(0) * weight.size(2) * weight.size(3);
    return taps % 4 == 0 && geometry_fits(grad_output.shape(), flipped_weight, grad_input.shape());
}

void tf32x3_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                 const Tensor& grad_input) {
    forward_gemm(grad_output, reordered_weights(weight, true), Tensor(), input_gradient_params(weight, params),
                 grad_input);
}

bool tf32x3_conv2d_backward_weights_applies(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                            const Tensor& grad_weight) {
    if (params.groups != 1 || !float32_on_tensor_cores({&grad_output, &x, &grad_weight})) return false;
    const int64_t pixels = grad_output.size(2) * grad_output.size(3);
    return pixels % 4 == 0 && aligned_to(grad_output.raw_data(), 16) &&
           geometry_fits(x.shape(), grad_weight.shape(), grad_output.shape());
}

void tf32x3_conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                    const Tensor& grad_weight) {
    const int64_t outputs = grad_weight.size(0), taps = grad_weight.size(1) * grad_weight.size(2) * grad_weight.size(3);
    const int64_t pixels = grad_output.size(2) * grad_output.size(3), positions = x.size(0) * pixels;
    const ImageRowsTile::Source dy{static_cast<const float*>(grad_output.raw_data()), static_cast<int>(pixels),
                                   static_cast<int>(outputs), Divisor(static_cast<int>(pixels))};
    const Tensor reordered = Tensor::empty({outputs, grad_weight.size(2), grad_weight.size(3), grad_weight.size(1)},
                                           {.dtype = DType::f32, .device = grad_weight.device()});
    const tf32x3::GemmOutput output{static_cast<float*>(reordered.raw_data()), taps, 0, 0, taps, nullptr, false};
    const ImageSource image = image_source(x, grad_weight.shape(), grad_output.shape(), params);
    tf32x3::gemm<GatheringBlock, ImageRowsTile, Im2colRowsTile>(dy, image, output, outputs, taps, positions, 1);
    reorder_weights(reordered, grad_weight, grad_weight.shape(), WeightOrder::restore);
}

}  // namespace kasmina::kernels::cuda
