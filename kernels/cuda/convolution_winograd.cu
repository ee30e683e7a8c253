// Winograd F(4x4, 3x3) convolutions (contract in convolution_winograd.h). With d a 6 x 6 input tile, g
// a 3 x 3 kernel and the transforms of Lavin and Gray ("Fast Algorithms for Convolutional Neural
// Networks", 2016), a 4 x 4 output tile is A^T [(G g G^T) . (B^T d B)] A: per point of the 6 x 6
// transform domain the sum over input channels is a product of U (outputs x channels) and V (channels
// x tiles), and the 36 of them run as one batched 3xTF32 GEMM. The images go in chunks whose V and M
// (the products) stay in L2 between the three kernels that write and read them.
#include "kernels/cuda/convolution_winograd.h"

#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3_gemm.cuh"
#include "kernels/settings.h"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kOutputTile = 4, kInputTile = 6, kPoints = kInputTile * kInputTile;

// The fewest output pixels over the batch taken here (the CPU's threshold, kernels/cpu/convolution.cpp).
constexpr int64_t kMinPixels = 4096;

// The bytes of V and M a chunk of images may take: well inside the L2 (50 MB on an H100), which also
// holds the chunk's input and output on their way.
constexpr int64_t kChunkBytes = int64_t{24} << 20;

// One convolution as the transforms see it: the input [N, channels, height, width], the output
// [N, outputs, out_height, out_width], 4 x 4 tiles of it, tap (0, 0) of tile (0, 0) at (-pad_h, -pad_w).
struct Geometry {
    int channels, height, width;
    int outputs, out_height, out_width;
    int pad_h, pad_w;
    int tiles_w, tiles_per_image;
    bool vector_stores;  // rows of 4 outputs as one float4 (OW a multiple of 4, the output 16-byte aligned)
};

// u[point][row][column] = (G g G^T)[point] for kernel g of (row, column): row the output channel and
// column the input channel of the convolution run; `flipped` (the input gradient) reads w [O, C, 3, 3]
// as rows C, columns O, each kernel turned by 180 degrees. In float64, rounded once.
__global__ void winograd_weights_kernel(const float* w, float* u, int outputs, int inputs, bool flipped) {
    const int rows = flipped ? inputs : outputs, columns = flipped ? outputs : inputs;
    const int64_t count = static_cast<int64_t>(rows) * columns;
    constexpr double G[kInputTile][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                         {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                         {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t row = i / columns, column = i % columns;
        const int64_t o = flipped ? column : row, c = flipped ? row : column;
        const float* kernel = w + (o * inputs + c) * 9;
        double g[3][3];
        for (int r = 0; r < 3; ++r)
            for (int s = 0; s < 3; ++s) g[r][s] = flipped ? kernel[(2 - r) * 3 + (2 - s)] : kernel[r * 3 + s];
        double gg[kInputTile][3];  // G g
        for (int a = 0; a < kInputTile; ++a)
            for (int s = 0; s < 3; ++s) gg[a][s] = G[a][0] * g[0][s] + G[a][1] * g[1][s] + G[a][2] * g[2][s];
        for (int a = 0; a < kInputTile; ++a)
            for (int b = 0; b < kInputTile; ++b)
                u[(a * kInputTile + b) * count + i] =
                    static_cast<float>(gg[a][0] * G[b][0] + gg[a][1] * G[b][1] + gg[a][2] * G[b][2]);
    }
}

// B^T applied to six values (a column or a row of a tile), in place.
__device__ __forceinline__ void input_transform(float& d0, float& d1, float& d2, float& d3, float& d4, float& d5) {
    const float t0 = 4 * d0 - 5 * d2 + d4, t1 = -4 * d1 - 4 * d2 + d3 + d4, t2 = 4 * d1 - 4 * d2 - d3 + d4;
    const float t3 = -2 * d1 - d2 + 2 * d3 + d4, t4 = 2 * d1 - d2 - 2 * d3 + d4, t5 = 4 * d1 - 5 * d3 + d5;
    d0 = t0, d1 = t1, d2 = t2, d3 = t3, d4 = t4, d5 = t5;
}

// v[point][c][t] = (B^T d B)[point] for the 6 x 6 input tile d of channel c under output tile t of the
// chunk (images first_image...), zeros outside the image and for t in [tiles, padded_tiles).
__global__ void winograd_input_kernel(const float* x, float* v, Geometry g, int first_image, int tiles,
                                      int padded_tiles) {
    const int64_t count = static_cast<int64_t>(g.channels) * padded_tiles;  // also the stride between points
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int c = static_cast<int>(i / padded_tiles), t = static_cast<int>(i % padded_tiles);
        float d[kInputTile][kInputTile] = {};
        if (t < tiles) {
            const int image = first_image + t / g.tiles_per_image, rest = t % g.tiles_per_image;
            const int top = rest / g.tiles_w * kOutputTile - g.pad_h;
            const int left = rest % g.tiles_w * kOutputTile - g.pad_w;
            const float* channel = x + (static_cast<int64_t>(image) * g.channels + c) * g.height * g.width;
#pragma unroll
            for (int a = 0; a < kInputTile; ++a) {
                const int ih = top + a;
                if (ih < 0 || ih >= g.height) continue;
#pragma unroll
                for (int b = 0; b < kInputTile; ++b) {
                    const int iw = left + b;
                    if (iw >= 0 && iw < g.width) d[a][b] = __ldg(channel + static_cast<int64_t>(ih) * g.width + iw);
                }
            }
        }
#pragma unroll
        for (int b = 0; b < kInputTile; ++b) input_transform(d[0][b], d[1][b], d[2][b], d[3][b], d[4][b], d[5][b]);
#pragma unroll
        for (int a = 0; a < kInputTile; ++a) {
            input_transform(d[a][0], d[a][1], d[a][2], d[a][3], d[a][4], d[a][5]);
#pragma unroll
            for (int b = 0; b < kInputTile; ++b) v[(a * kInputTile + b) * count + i] = d[a][b];
        }
    }
}

// A^T applied to six values: four.
__device__ __forceinline__ void output_transform(const float (&m)[kInputTile], float (&y)[kOutputTile]) {
    const float sum12 = m[1] + m[2], difference12 = m[1] - m[2];
    const float sum34 = m[3] + m[4], difference34 = m[3] - m[4];
    y[0] = m[0] + sum12 + sum34;
    y[1] = difference12 + 2 * difference34;
    y[2] = sum12 + 4 * sum34;
    y[3] = difference12 + 8 * difference34 + m[5];
}

// out[image, o, 4 x 4 tile t] = A^T m A (+ bias[o]) for m[point] = products[point][o][t].
__global__ void winograd_output_kernel(const float* products, const float* bias, float* out, Geometry g,
                                       int first_image, int tiles, int padded_tiles) {
    const int64_t count = static_cast<int64_t>(g.outputs) * tiles;
    const int64_t plane = static_cast<int64_t>(g.outputs) * padded_tiles;  // the stride between points
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int o = static_cast<int>(i / tiles), t = static_cast<int>(i % tiles);
        const float* m = products + static_cast<int64_t>(o) * padded_tiles + t;
        float columns[kOutputTile][kInputTile];  // A^T m, one row of the domain at a time
#pragma unroll
        for (int b = 0; b < kInputTile; ++b) {
            float column[kInputTile], result[kOutputTile];
#pragma unroll
            for (int a = 0; a < kInputTile; ++a) column[a] = m[(a * kInputTile + b) * plane];
            output_transform(column, result);
#pragma unroll
            for (int a = 0; a < kOutputTile; ++a) columns[a][b] = result[a];
        }
        const int image = first_image + t / g.tiles_per_image, rest = t % g.tiles_per_image;
        const int oh0 = rest / g.tiles_w * kOutputTile, ow0 = rest % g.tiles_w * kOutputTile;
        const float shift = bias != nullptr ? bias[o] : 0.0f;
        float* const plane_out = out + (static_cast<int64_t>(image) * g.outputs + o) * g.out_height * g.out_width;
#pragma unroll
        for (int a = 0; a < kOutputTile; ++a) {
            if (oh0 + a >= g.out_height) break;
            float row[kOutputTile];
            output_transform(columns[a], row);
            float* const target = plane_out + static_cast<int64_t>(oh0 + a) * g.out_width + ow0;
            if (g.vector_stores) {
                *reinterpret_cast<float4*>(target) =
                    make_float4(row[0] + shift, row[1] + shift, row[2] + shift, row[3] + shift);
                continue;
            }
#pragma unroll
            for (int b = 0; b < kOutputTile; ++b)
                if (ow0 + b < g.out_width) target[b] = row[b] + shift;
        }
    }
}

using Block = tf32x3::BlockShape<64>;
// The products' operands: U[point] (rows x columns, k contiguous) and V[point] (columns x tiles, tiles
// contiguous).
using UTile = tf32x3::DenseTile<true, Block::kBlockM, Block::kThreads>;
using VTile = tf32x3::DenseTile<false, tf32x3::kBlockN, Block::kThreads>;

constexpr int64_t round_up_4(int64_t value) { return (value + 3) / 4 * 4; }

bool fits_int(int64_t value) { return value >= 0 && value < INT_MAX / 2; }

// Whether the convolution of x [N, C, H, W] into out [N, O, OH, OW] with a 3 x 3 kernel and these
// paddings runs here (the operands' dtypes and layouts are checked by the callers).
bool geometry_applies(const Shape& x, const Shape& out, int64_t pad_h, int64_t pad_w) {
    const int64_t tiles_per_image = ((out[2] + 3) / 4) * ((out[3] + 3) / 4);
    return convolution_winograd() && tensor_cores_available() && x[1] % 4 == 0 && x[0] > 0 && x[1] > 0 &&
           out[1] > 0 && out[0] * out[2] * out[3] >= kMinPixels && pad_h >= 0 && pad_w >= 0 && pad_h <= 2 &&
           pad_w <= 2 &&
           fits_int(x[0] * x[1] * x[2] * x[3]) && fits_int(out[0] * out[1] * out[2] * out[3]) &&
           fits_int(kPoints * std::max(x[1], out[1]) * round_up_4(x[0] * tiles_per_image)) &&
           (out[1] + Block::kBlockM - 1) / Block::kBlockM <= tf32x3::kMaxGridYZ;
}

bool float32_contiguous(std::initializer_list<const Tensor*> tensors) {
    for (const Tensor* t : tensors)
        if (t->dtype() != DType::f32 || !t->is_contiguous()) return false;
    return true;
}

bool is_3x3_unit_stride(const Tensor& weight, const Conv2dParams& p) {
    return p.groups == 1 && weight.size(2) == 3 && weight.size(3) == 3 && p.stride[0] == 1 && p.stride[1] == 1 &&
           p.dilation[0] == 1 && p.dilation[1] == 1;
}

// Queues out = conv2d(x, the kernels whose transforms are u [36, O, C], padding) + bias, chunk by chunk.
void run(const Tensor& x, const Tensor& u, const Tensor& bias, int pad_h, int pad_w, const Tensor& out) {
    const int64_t images = x.size(0);
    Geometry g{static_cast<int>(x.size(1)), static_cast<int>(x.size(2)),  static_cast<int>(x.size(3)),
               static_cast<int>(out.size(1)), static_cast<int>(out.size(2)), static_cast<int>(out.size(3)),
               pad_h, pad_w, static_cast<int>((out.size(3) + 3) / 4), 0,
               out.size(3) % 4 == 0 && aligned_to(out.raw_data(), 16)};
    g.tiles_per_image = static_cast<int>((out.size(2) + 3) / 4) * g.tiles_w;
    const int64_t bytes_per_image = int64_t{kPoints} * (g.channels + g.outputs) * g.tiles_per_image * 4;
    const int64_t chunk = std::clamp<int64_t>(kChunkBytes / bytes_per_image, 1, images);
    const int64_t max_padded = round_up_4(chunk * g.tiles_per_image);
    const TensorOptions options{.dtype = DType::f32, .device = x.device()};
    const Tensor v = Tensor::empty({kPoints, g.channels, max_padded}, options);
    const Tensor products = Tensor::empty({kPoints, g.outputs, max_padded}, options);
    const float* const u_data = static_cast<const float*>(u.raw_data());
    const float* const bias_data = bias.defined() ? static_cast<const float*>(bias.raw_data()) : nullptr;
    for (int64_t first = 0; first < images; first += chunk) {
        const int count = static_cast<int>(std::min(chunk, images - first));
        const int tiles = count * g.tiles_per_image, padded = static_cast<int>(round_up_4(tiles));
        winograd_input_kernel<<<grid_for(int64_t{g.channels} * padded), kThreads, 0, launch_stream()>>>(
            static_cast<const float*>(x.raw_data()), static_cast<float*>(v.raw_data()), g, static_cast<int>(first),
            tiles, padded);
        check_launch("conv2d");
        const UTile::Source a{u_data, g.channels, int64_t{g.outputs} * g.channels};
        const VTile::Source b{static_cast<const float*>(v.raw_data()), padded, int64_t{g.channels} * padded};
        const tf32x3::GemmOutput c{static_cast<float*>(products.raw_data()), padded, int64_t{g.outputs} * padded, 0,
                                   padded, nullptr, false};
        tf32x3::gemm<Block, UTile, VTile>(a, b, c, g.outputs, padded, g.channels, kPoints);
        winograd_output_kernel<<<grid_for(int64_t{g.outputs} * tiles), kThreads, 0, launch_stream()>>>(
            static_cast<const float*>(products.raw_data()), bias_data, static_cast<float*>(out.raw_data()), g,
            static_cast<int>(first), tiles, padded);
        check_launch("conv2d");
    }
}

// The kernels' transforms [36, rows, columns] (see winograd_weights_kernel).
Tensor transformed_weights(const Tensor& weight, bool flipped) {
    const int64_t outputs = weight.size(0), inputs = weight.size(1);
    const Tensor u = Tensor::empty({kPoints, flipped ? inputs : outputs, flipped ? outputs : inputs},
                                   {.dtype = DType::f32, .device = weight.device()});
    winograd_weights_kernel<<<grid_for(outputs * inputs), kThreads, 0, launch_stream()>>>(
        static_cast<const float*>(weight.raw_data()), static_cast<float*>(u.raw_data()), static_cast<int>(outputs),
        static_cast<int>(inputs), flipped);
    check_launch("conv2d");
    return u;
}

}  // namespace

bool winograd_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                     const Tensor& out) {
    return float32_contiguous({&x, &weight, &out}) && is_3x3_unit_stride(weight, params) &&
           geometry_applies(x.shape(), out.shape(), params.padding[0], params.padding[1]);
}

void winograd_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                             const Tensor& out) {
    run(x, transformed_weights(weight, false), bias, static_cast<int>(params.padding[0]),
        static_cast<int>(params.padding[1]), out);
}

bool winograd_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                           const Tensor& grad_input) {
    return float32_contiguous({&grad_output, &weight, &grad_input}) && is_3x3_unit_stride(weight, params) &&
           geometry_applies(grad_output.shape(), grad_input.shape(), 2 - params.padding[0], 2 - params.padding[1]);
}

void winograd_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& grad_input) {
    run(grad_output, transformed_weights(weight, true), Tensor(), static_cast<int>(2 - params.padding[0]),
        static_cast<int>(2 - params.padding[1]), grad_input);
}

}  // namespace kasmina::kernels::cuda
