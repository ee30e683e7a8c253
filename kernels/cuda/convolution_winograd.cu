// Winograd convolutions fused into single kernels (contract in convolution_winograd.h). With the
// output cut into 2x2 tiles, each read from a 4x4 input tile d, and the 3x3 kernel g of each (output
// channel, input channel) pair, the forward is F(2x2, 3x3):
//   y = A^T [ sum over channels of (G g G^T) . (B^T d B) ] A      (. elementwise over 16 points)
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// A^T = [1 1 1 0; 0 1 -1 -1] (Lavin and Gray, 2016). The sum over channels is a GEMM per point p:
// M_p [outputs, tiles] = U_p [outputs, channels] V_p [channels, tiles], 16 of them of a quarter of
// the direct convolution's depth each, 2.25x fewer multiplications in all.
// - A small kernel transforms the weights once per call, in float64: U [16, outputs, channels].
// - The main kernel takes 32 output channels by 64 tiles a block, one warp per point (16 warps): it
//   streams U and the input through shared memory 8 channels at a time (U by cp.async, the input
//   loaded into registers a slice ahead, transformed by B^T d B and stored), each warp multiplying
//   its point's 32 x 8 by 8 x 64 on tensor cores (3xTF32, one accumulator). At the end the 16
//   products of each (output channel, tile) meet in shared memory and A^T M A (+ bias) goes out.
// The input gradient of a stride-1 convolution is a forward over grad_output with the kernel turned
// by 180 degrees and its channels swapped, padding 2 - p: the weight transform does the turning.
// The weight gradient is F(3x3, 2x2) on the same main loop (see winograd_weight_gradient_kernel).
#include "kernels/cuda/convolution_winograd.h"

#include <algorithm>
#include <array>
#include <climits>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/tf32x3.cuh"
#include "kernels/settings.h"

namespace kasmina::kernels::cuda {
namespace {

constexpr int kPoints = 16;  // the 4x4 transform points, a warp each
constexpr int kSlice = 8;    // input channels a main-loop step (GEMM depth)
constexpr int kMinChannels = 16;

// A block's product: kRows by kColumns for each of the 16 points, one point a warp, over slices of
// kSlice along the depth; each warp holds its point's kRows x kColumns (64 accumulators a thread).
// Forward: rows are output channels, columns 2x2 output tiles, the depth input channels; weight
// gradient: rows output channels, columns input channels, the depth tiles. Measured for the forward
// on an H100 at [64, 64, 56, 56] x [64, 64, 3, 3] (bench/NOTES.md): 32 x 64 beat 64 x 32 (221-231
// against 255-257 us: half the weight traffic, and no spills) and 32 x 32 with two points a warp in
// two blocks a multiprocessor (237-256).
constexpr int kRows = 32, kColumns = 64;
constexpr int kBlockThreads = 32 * kPoints;
constexpr int kFragmentsM = kRows / 16, kFragmentsN = kColumns / 8;
static_assert(kBlockThreads == kColumns * kSlice, "every thread transforms one 4x4 input tile a slice");
// The two operands of a slice in shared memory, [point][row][k] and [point][k][column], rows padded
// so that fragment loads are conflict-free: A's lanes read (row g, k t), banks 12g + t; B's read
// (k t, column g), banks 8t + g.
constexpr int kLeftLd = kSlice + 4, kRightLd = kColumns + 8;
constexpr int kLeftStage = kPoints * kRows * kLeftLd, kRightStage = kPoints * kSlice * kRightLd;
constexpr int kStageFloats = kLeftStage + kRightStage;
constexpr int kProductFloats = kPoints * kRows * kColumns;  // the forward's products at the end, in the stages' place
constexpr size_t kSharedBytes = (2 * kStageFloats > kProductFloats ? 2 * kStageFloats : kProductFloats) * sizeof(float);
constexpr int kTiles = kColumns;  // the forward's tiles a block

// The products' column for (row, tile) in shared memory: tiles XOR-swizzled by the row so that the
// accumulator stores (8 rows, 4 column pairs a warp) spread over the banks.
__device__ __forceinline__ int product_at(int point, int row, int tile) {
    return (point * kRows + row) * kTiles + (tile ^ ((row & 3) * 8));
}

constexpr int64_t round_up(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }

// u[p][o][c] = (G g G^T)[p / 4][p % 4] for the kernel g from input channel c to output channel o, in
// float64 and rounded once; zero for o >= outputs or c >= channels (the rows padded to kRows, the
// columns to kSlice, so the main loop reads whole slices). `turned`: g is w[c][o] turned by 180
// degrees (w is [channels, outputs, 3, 3]: the input gradient); else w[o][c] (w [outputs, channels, 3, 3]).
__global__ void transform_weights_kernel(const float* w, float* u, int outputs, int channels, int padded_outputs,
                                         int padded_channels, bool turned) {
    const int64_t count = static_cast<int64_t>(padded_outputs) * padded_channels;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int o = static_cast<int>(i / padded_channels), c = static_cast<int>(i % padded_channels);
        double g[3][3] = {};
        if (o < outputs && c < channels) {
            const float* kernel = w + (turned ? static_cast<int64_t>(c) * outputs + o
                                              : static_cast<int64_t>(o) * channels + c) * 9;
            for (int r = 0; r < 3; ++r)
                for (int s = 0; s < 3; ++s) g[r][s] = turned ? kernel[(2 - r) * 3 + (2 - s)] : kernel[r * 3 + s];
        }
        double gg[4][3];  // G g
        for (int s = 0; s < 3; ++s) {
            gg[0][s] = g[0][s];
            gg[1][s] = 0.5 * (g[0][s] + g[1][s] + g[2][s]);
            gg[2][s] = 0.5 * (g[0][s] - g[1][s] + g[2][s]);
            gg[3][s] = g[2][s];
        }
        for (int r = 0; r < 4; ++r) {
            const double row[4] = {gg[r][0], 0.5 * (gg[r][0] + gg[r][1] + gg[r][2]),
                                   0.5 * (gg[r][0] - gg[r][1] + gg[r][2]), gg[r][2]};
            for (int s = 0; s < 4; ++s)
                u[(static_cast<int64_t>(r * 4 + s) * padded_outputs + o) * padded_channels + c] =
                    static_cast<float>(row[s]);
        }
    }
}

// What both kernels walk: the input [N, channels, height, width], the output [N, outputs, out_height,
// out_width] cut into 2x2 tiles (tiles_h x tiles_w an image, `tiles` in all), the padding, and the
// channel counts rounded up to the blocks' multiples.
struct TileGeometry {
    int channels, padded_channels, height, width;
    int outputs, padded_outputs, out_height, out_width;
    int pad_h, pad_w;
    int tiles_w, tiles_h, tiles;
};

// The geometry of a stride-1 3x3 convolution from `input` to `output` (their shapes), the channels
// padded to channel_multiple and the outputs to kRows.
TileGeometry tile_geometry(const Tensor& input, const Tensor& output, const std::array<int64_t, 2>& padding,
                           int64_t channel_multiple) {
    TileGeometry g{};
    g.channels = static_cast<int>(input.size(1));
    g.padded_channels = static_cast<int>(round_up(g.channels, channel_multiple));
    g.height = static_cast<int>(input.size(2));
    g.width = static_cast<int>(input.size(3));
    g.outputs = static_cast<int>(output.size(1));
    g.padded_outputs = static_cast<int>(round_up(g.outputs, kRows));
    g.out_height = static_cast<int>(output.size(2));
    g.out_width = static_cast<int>(output.size(3));
    g.pad_h = static_cast<int>(padding[0]);
    g.pad_w = static_cast<int>(padding[1]);
    g.tiles_w = (g.out_width + 1) / 2;
    g.tiles_h = (g.out_height + 1) / 2;
    g.tiles = static_cast<int>(input.size(0)) * g.tiles_h * g.tiles_w;
    return g;
}

// Where tile `tile` is: its image and its position in tiles.
struct TilePlace {
    int image, y, x;
};
__device__ __forceinline__ TilePlace place_of(int tile, const TileGeometry& g) {
    TilePlace p;
    p.image = tile / (g.tiles_h * g.tiles_w);
    const int in_image = tile - p.image * g.tiles_h * g.tiles_w;
    p.y = in_image / g.tiles_w;
    p.x = in_image - p.y * g.tiles_w;
    return p;
}

struct WinogradArgs : TileGeometry {
    const float* x;     // [N, channels, height, width]
    const float* u;     // [16, padded_outputs, padded_channels]
    const float* bias;  // [outputs] or null
    float* out;         // [N, outputs, out_height, out_width]
};

// (B^T d B) row by row: the four values of e B for a row e of B^T d.
__device__ __forceinline__ void transform_row(const float (&e)[4], float (&v)[4]) {
    v[0] = e[0] - e[2];
    v[1] = e[1] + e[2];
    v[2] = e[2] - e[1];
    v[3] = e[1] - e[3];
}

// acc += this warp's point of one slice: A [kRows][kSlice] at `left` (rows of kLeftLd) times B
// [kSlice][kColumns] at `right` (rows of kRightLd), 3xTF32 into one accumulator. The A fragments are
// held, the B fragments taken one at a time; each B fragment's three passes run over both A fragments.
// (Two B fragments at a time, 2-4 MMAs apart instead of 2, measured no faster.)
__device__ __forceinline__ void multiply_slice(float (&acc)[kFragmentsM][kFragmentsN][4], const float* left,
                                               const float* right, int g, int t) {
    SplitA fa[kFragmentsM];
#pragma unroll
    for (int i = 0; i < kFragmentsM; ++i) {
        const float* top = left + (16 * i + g) * kLeftLd + t;
        const float* bottom = top + 8 * kLeftLd;
        fa[i] = split_a(top[0], bottom[0], top[4], bottom[4]);
    }
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j) {
        const SplitB fb = split_b(right[t * kRightLd + 8 * j + g], right[(t + 4) * kRightLd + 8 * j + g]);
#pragma unroll
        for (int i = 0; i < kFragmentsM; ++i) mma_tf32(acc[i][j], fa[i].small, fb.big);
#pragma unroll
        for (int i = 0; i < kFragmentsM; ++i) mma_tf32(acc[i][j], fa[i].big, fb.small);
#pragma unroll
        for (int i = 0; i < kFragmentsM; ++i) mma_tf32(acc[i][j], fa[i].big, fb.big);
    }
}

// The main loop of both kernels: `count` slices through two stages of shared memory, this warp's
// point multiplied into acc. load(stage, slice) starts a slice's copies (cp.async, committed here,
// and loads into registers); store(stage) writes what load left in registers into that stage, after
// the current slice's products, so that their latency hides behind them.
template <class Load, class Store>
__device__ __forceinline__ void run_slices(float (&acc)[kFragmentsM][kFragmentsN][4], float* shared, int count,
                                           Load&& load, Store&& store) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    auto stage_at = [&](int slice) { return shared + (slice % 2) * kStageFloats; };
    load(stage_at(0), 0);  // count >= 1
    cp_async_commit();
    store(stage_at(0));
    cp_async_wait<0>();
    __syncthreads();
    for (int slice = 0; slice < count; ++slice) {
        const bool more = slice + 1 < count;
        if (more) load(stage_at(slice + 1), slice + 1);  // into the stage every thread left at the last barrier
        cp_async_commit();
        multiply_slice(acc, stage_at(slice) + warp * kRows * kLeftLd,
                       stage_at(slice) + kLeftStage + warp * kSlice * kRightLd, lane / 4, lane % 4);
        if (more) store(stage_at(slice + 1));
        cp_async_wait<0>();
        __syncthreads();
    }
}

// (B^T d B) of a 4x4 input tile d, row i of the result for point 4i + j: put(point, value).
template <class Put>
__device__ __forceinline__ void transform_input(const float (&d)[4][4], Put&& put) {
    float e[4][4];  // B^T d
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        e[0][j] = d[0][j] - d[2][j];
        e[1][j] = d[1][j] + d[2][j];
        e[2][j] = d[2][j] - d[1][j];
        e[3][j] = d[1][j] - d[3][j];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float v[4];
        transform_row(e[i], v);
#pragma unroll
        for (int j = 0; j < 4; ++j) put(4 * i + j, v[j]);
    }
}

__global__ void __launch_bounds__(kBlockThreads, 1) winograd_kernel(WinogradArgs a) {
    extern __shared__ float4 shared_memory[];
    float* const shared = reinterpret_cast<float*>(shared_memory);
    const int thread = static_cast<int>(threadIdx.x), warp = thread / 32, lane = thread % 32;
    const int g = lane / 4, t = lane % 4;
    const int o0 = static_cast<int>(blockIdx.y) * kRows, tile0 = static_cast<int>(blockIdx.x) * kTiles;
    const int64_t plane = static_cast<int64_t>(a.height) * a.width;

    // This thread's input-transform task: a tile and a channel of the slice.
    const int task_tile = thread % kTiles, task_channel = thread / kTiles;
    const float* task_input = a.x;  // the tile's first input row, column 0, channel 0
    unsigned inside = 0;            // bit 4k + j: that row + k, column j lies in the image
    if (tile0 + task_tile < a.tiles) {
        const TilePlace p = place_of(tile0 + task_tile, a);
        const int first_row = 2 * p.y - a.pad_h, left = 2 * p.x - a.pad_w;
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j)
                if (static_cast<unsigned>(first_row + k) < static_cast<unsigned>(a.height) &&
                    static_cast<unsigned>(left + j) < static_cast<unsigned>(a.width))
                    inside |= 1u << (4 * k + j);
        task_input = a.x + static_cast<int64_t>(p.image) * a.channels * plane + static_cast<int64_t>(first_row) * a.width +
                     left;
    }

    float d[4][4];
    auto load_input = [&](int slice) {
        const int channel = slice * kSlice + task_channel;
        const unsigned mask = channel < a.channels ? inside : 0u;
        const float* const source = task_input + channel * plane;
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                d[k][j] = mask >> (4 * k + j) & 1u ? __ldg(source + k * a.width + j) : 0.0f;
    };
    auto store_input = [&](float* stage) {
        float* const right = stage + kLeftStage;
        transform_input(d, [&](int point, float v) { right[(point * kSlice + task_channel) * kRightLd + task_tile] = v; });
    };
    auto load_weights = [&](float* stage, int slice) {
        constexpr int kChunks = kPoints * kRows * kSlice / 4;
        static_assert(kChunks % kBlockThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
        for (int i = 0; i < kChunks / kBlockThreads; ++i) {
            const int index = thread + i * kBlockThreads;
            const int quarter = index % (kSlice / 4), row = index / (kSlice / 4) % kRows;
            const int point = index / (kSlice / 4 * kRows);
            const float* source = a.u + (static_cast<int64_t>(point) * a.padded_outputs + o0 + row) * a.padded_channels +
                                  slice * kSlice + quarter * 4;
            cp_async_16(stage + (point * kRows + row) * kLeftLd + quarter * 4, source, true);
        }
    };
    float acc[kFragmentsM][kFragmentsN][4] = {};
    run_slices(
        acc, shared, a.padded_channels / kSlice,
        [&](float* stage, int slice) {
            load_weights(stage, slice);
            load_input(slice);
        },
        store_input);

    // Every thread is past the loop's last barrier: the stages take the products M [16][rows][tiles].
#pragma unroll
    for (int i = 0; i < kFragmentsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragmentsN; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = 16 * i + g + 8 * h;
                *reinterpret_cast<float2*>(shared + product_at(warp, row, 8 * j + 2 * t)) =
                    make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
            }
    __syncthreads();

    // y = A^T M A (+ bias) for this thread's tile and rows thread / kTiles + r kBlockThreads / kTiles.
    const int column = thread % kTiles, tile = tile0 + column;
    if (tile >= a.tiles) return;
    const TilePlace p = place_of(tile, a);
    const int out_y = 2 * p.y, out_x = 2 * p.x;
    const bool full = out_y + 1 < a.out_height && out_x + 1 < a.out_width;
    const bool pairs = full && a.out_width % 2 == 0;  // (out_x even, so float2-aligned)
    const int64_t out_plane = static_cast<int64_t>(a.out_height) * a.out_width;
    constexpr int kRowStep = kBlockThreads / kTiles;
#pragma unroll
    for (int r = 0; r < kRows / kRowStep; ++r) {
        const int row = thread / kTiles + kRowStep * r, o = o0 + row;
        if (o >= a.outputs) break;
        float m[16];
#pragma unroll
        for (int point = 0; point < 16; ++point) m[point] = shared[product_at(point, row, column)];
        float z[4][2];  // M A, row by row
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            z[i][0] = m[4 * i] + m[4 * i + 1] + m[4 * i + 2];
            z[i][1] = m[4 * i + 1] - m[4 * i + 2] - m[4 * i + 3];
        }
        const float bias = a.bias ? a.bias[o] : 0.0f;
        float y[2][2];
#pragma unroll
        for (int b = 0; b < 2; ++b) {
            y[0][b] = z[0][b] + z[1][b] + z[2][b] + bias;
            y[1][b] = z[1][b] - z[2][b] - z[3][b] + bias;
        }
        float* const out = a.out + (static_cast<int64_t>(p.image) * a.outputs + o) * out_plane +
                           static_cast<int64_t>(out_y) * a.out_width + out_x;
        if (pairs) {
            *reinterpret_cast<float2*>(out) = make_float2(y[0][0], y[0][1]);
            *reinterpret_cast<float2*>(out + a.out_width) = make_float2(y[1][0], y[1][1]);
            continue;
        }
#pragma unroll
        for (int u = 0; u < 2; ++u)
#pragma unroll
            for (int v = 0; v < 2; ++v)
                if (out_y + u < a.out_height && out_x + v < a.out_width) out[u * a.out_width + v] = y[u][v];
    }
}

// The weight gradient. Per point p: M_p [outputs, channels] = sum over tiles of (A dy A^T)_p times
// (B^T d B)_p, dy a 2x2 tile of grad_output and d the 4x4 input tile it was computed from, and then
// dW = G^T M G (Winograd's F(3x3, 2x2), the forward's matrices in other roles: with A = (A^T)^T,
// A y = [y0, y0 + y1, y0 - y1, -y1]). The sum over tiles is split among blocks (a wave of them);
// each block writes its partial M, and a second kernel adds the parts in a fixed order and applies
// G^T M G, in float64.
struct WeightGradientArgs : TileGeometry {
    const float* x;                // [N, channels, height, width]
    const float* dy;               // [N, outputs, out_height, out_width]
    float* partial;                // [splits, 16, padded_outputs, padded_channels]
    int slices, slices_per_split;  // slices of kSlice tiles
};

__global__ void __launch_bounds__(kBlockThreads, 1) winograd_weight_gradient_kernel(WeightGradientArgs a) {
    extern __shared__ float4 shared_memory[];
    float* const shared = reinterpret_cast<float*>(shared_memory);
    const int thread = static_cast<int>(threadIdx.x), warp = thread / 32, lane = thread % 32;
    const int g = lane / 4, t = lane % 4;
    const int o0 = static_cast<int>(blockIdx.y) * kRows, c0 = static_cast<int>(blockIdx.z) * kColumns;
    const int first_slice = static_cast<int>(blockIdx.x) * a.slices_per_split;
    const int count = min(a.slices, first_slice + a.slices_per_split) - first_slice;  // >= 1: no empty splits
    const int64_t plane = static_cast<int64_t>(a.height) * a.width;
    const int64_t out_plane = static_cast<int64_t>(a.out_height) * a.out_width;

    // This thread's tasks in each slice: the input tile of tile k (thread % 8) for channel
    // thread / 8, and (threads below kRows * kSlice) grad_output's tile k for output thread / 8.
    const int k = thread % kSlice, channel = c0 + thread / kSlice, output = o0 + thread / kSlice;
    const bool has_output = thread < kRows * kSlice && output < a.outputs;
    // Tile first_slice * 8 + k, walked 8 tiles a slice: its image and position in tiles.
    int tile = first_slice * kSlice + k;
    const TilePlace first = place_of(tile, a);
    int image = first.image, tile_y = first.y, tile_x = first.x;
    float d[4][4], y[2][2];
    auto load = [&](float* /*stage*/, int slice) {
        if (slice > 0) {  // the next slice: 8 tiles on
            tile += kSlice;
            tile_x += kSlice;
            while (tile_x >= a.tiles_w) {
                tile_x -= a.tiles_w;
                if (++tile_y == a.tiles_h) tile_y = 0, ++image;
            }
        }
        const bool valid = tile < a.tiles;
        const int top = 2 * tile_y - a.pad_h, left = 2 * tile_x - a.pad_w;
        const bool channel_ok = valid && channel < a.channels;
        const float* const source = a.x + (static_cast<int64_t>(image) * a.channels + channel) * plane +
                                    static_cast<int64_t>(top) * a.width + left;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const bool row_ok = channel_ok && static_cast<unsigned>(top + r) < static_cast<unsigned>(a.height);
#pragma unroll
            for (int s = 0; s < 4; ++s)
                d[r][s] = row_ok && static_cast<unsigned>(left + s) < static_cast<unsigned>(a.width)
                              ? __ldg(source + r * a.width + s)
                              : 0.0f;
        }
        const float* const gradient = a.dy + (static_cast<int64_t>(image) * a.outputs + output) * out_plane +
                                      static_cast<int64_t>(2 * tile_y) * a.out_width + 2 * tile_x;
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int s = 0; s < 2; ++s)
                y[r][s] = has_output && valid && 2 * tile_y + r < a.out_height && 2 * tile_x + s < a.out_width
                              ? __ldg(gradient + r * a.out_width + s)
                              : 0.0f;
    };
    auto store = [&](float* stage) {
        float* const right = stage + kLeftStage;
        transform_input(d, [&](int point, float v) { right[(point * kSlice + k) * kRightLd + thread / kSlice] = v; });
        if (thread >= kRows * kSlice) return;
        float u[4][2];  // A y
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            u[0][s] = y[0][s];
            u[1][s] = y[0][s] + y[1][s];
            u[2][s] = y[0][s] - y[1][s];
            u[3][s] = -y[1][s];
        }
        float* const left = stage + (thread / kSlice) * kLeftLd + k;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float v[4] = {u[i][0], u[i][0] + u[i][1], u[i][0] - u[i][1], -u[i][1]};  // (A y A^T) row i
#pragma unroll
            for (int j = 0; j < 4; ++j) left[(4 * i + j) * kRows * kLeftLd] = v[j];
        }
    };
    float acc[kFragmentsM][kFragmentsN][4] = {};
    run_slices(acc, shared, count, load, store);

    float* const partial = a.partial + (static_cast<int64_t>(blockIdx.x) * kPoints + warp) * a.padded_outputs *
                                           a.padded_channels;
#pragma unroll
    for (int i = 0; i < kFragmentsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragmentsN; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = o0 + 16 * i + g + 8 * h, column = c0 + 8 * j + 2 * t;
                *reinterpret_cast<float2*>(partial + static_cast<int64_t>(row) * a.padded_channels + column) =
                    make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
            }
}

// grad_weight [outputs, channels, 3, 3] = G^T M G with M_p = the sum of the splits' parts in order, in
// float64. A block takes 16 (output, channel) pairs, a thread one pair's sum for one point.
constexpr int kPairsPerBlock = 16;
__constant__ double kGt[3][4] = {{1, 0.5, 0.5, 0}, {0, 0.5, -0.5, 0}, {0, 0.5, 0.5, 1}};  // G^T
__global__ void __launch_bounds__(kPoints * kPairsPerBlock) finish_weight_gradient_kernel(
    const float* partial, int splits, int padded_outputs, int padded_channels, int outputs, int channels,
    float* grad_weight) {
    __shared__ double m[kPoints][kPairsPerBlock];
    const int lane = static_cast<int>(threadIdx.x) % kPairsPerBlock, point = static_cast<int>(threadIdx.x) / kPairsPerBlock;
    const int64_t pairs = static_cast<int64_t>(outputs) * channels;
    const int64_t pair = static_cast<int64_t>(blockIdx.x) * kPairsPerBlock + lane;
    if (pair < pairs) {
        const int o = static_cast<int>(pair / channels), c = static_cast<int>(pair % channels);
        const int64_t plane = static_cast<int64_t>(padded_outputs) * padded_channels;
        const float* part = partial + point * plane + static_cast<int64_t>(o) * padded_channels + c;
        double sum = 0;
#pragma unroll 8
        for (int s = 0; s < splits; ++s) sum += part[s * kPoints * plane];  // loads ahead of the adds, in order
        m[point][lane] = sum;
    }
    __syncthreads();
    const int entry = static_cast<int>(threadIdx.x);  // (pair, r, s): 9 a pair
    if (entry >= kPairsPerBlock * 9) return;
    const int local = entry / 9, r = entry % 9 / 3, s = entry % 3;
    const int64_t out_pair = static_cast<int64_t>(blockIdx.x) * kPairsPerBlock + local;
    if (out_pair >= pairs) return;
    double value = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) value += kGt[r][i] * m[4 * i + j][local] * kGt[s][j];
    grad_weight[out_pair * 9 + r * 3 + s] = static_cast<float>(value);
}

bool fits_int(int64_t value) { return value >= 0 && value < INT_MAX / 2; }

// The geometry both passes need: float32 and contiguous, tensor cores, 3x3, stride 1, dilation 1,
// groups 1, enough channels on both sides, sizes within the kernel's 32-bit indices.
bool winograd_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& p, const Tensor& out,
                      int64_t channels, int64_t outputs) {
    if (!convolution_winograd()) return false;
    for (const Tensor* t : {&x, &weight, &out})
        if (t->dtype() != DType::f32 || !t->is_contiguous()) return false;
    if (weight.size(2) != 3 || weight.size(3) != 3 || p.groups != 1) return false;
    for (int d = 0; d < 2; ++d)
        if (p.stride[d] != 1 || p.dilation[d] != 1) return false;
    if (channels < kMinChannels || outputs < kMinChannels) return false;
    const int64_t tiles = x.size(0) * ((out.size(2) + 1) / 2) * ((out.size(3) + 1) / 2);
    return fits_int(tiles) && fits_int(round_up(outputs, kRows) * round_up(channels, kSlice)) &&
           fits_int(x.size(2) * x.size(3)) && tiles > 0 && round_up(outputs, kRows) / kRows <= 65535 &&
           tensor_cores_available();
}

// Queues out = conv2d(x, g) (+ bias), stride 1, padding `padding`, where g is `weight` as it is
// ([outputs, channels, 3, 3]) or turned and with its channels swapped (`turned`: [channels, outputs, 3, 3]).
void winograd(const Tensor& x, const Tensor& weight, bool turned, const Tensor& bias,
              const std::array<int64_t, 2>& padding, const Tensor& out) {
    WinogradArgs args{};
    static_cast<TileGeometry&>(args) = tile_geometry(x, out, padding, kSlice);
    const Tensor u = Tensor::empty({kPoints, args.padded_outputs, args.padded_channels},
                                   {.dtype = DType::f32, .device = x.device()});
    // Blocks of 64: a few thousand (output, input) pairs spread over as many multiprocessors as they can.
    transform_weights_kernel<<<grid_for(static_cast<int64_t>(args.padded_outputs) * args.padded_channels, 64), 64, 0,
                               launch_stream()>>>(static_cast<const float*>(weight.raw_data()),
                                                  static_cast<float*>(u.raw_data()), args.outputs, args.channels,
                                                  args.padded_outputs, args.padded_channels, turned);
    check_launch("conv2d");

    args.x = static_cast<const float*>(x.raw_data());
    args.u = static_cast<const float*>(u.raw_data());
    args.bias = bias.defined() ? static_cast<const float*>(bias.raw_data()) : nullptr;
    args.out = static_cast<float*>(out.raw_data());
    allow_shared_memory(winograd_kernel, kSharedBytes);
    const dim3 grid(static_cast<unsigned>((args.tiles + kTiles - 1) / kTiles),
                    static_cast<unsigned>(args.padded_outputs / kRows));
    winograd_kernel<<<grid, kBlockThreads, kSharedBytes, launch_stream()>>>(args);
    check_launch("conv2d");
}

// Queues grad_weight = the weight gradient of conv2d(x, weight) (stride 1, `padding`) for grad_output.
void winograd_weight_gradient(const Tensor& grad_output, const Tensor& x, const std::array<int64_t, 2>& padding,
                              const Tensor& grad_weight) {
    WeightGradientArgs args{};
    static_cast<TileGeometry&>(args) = tile_geometry(x, grad_output, padding, kColumns);
    args.x = static_cast<const float*>(x.raw_data());
    args.dy = static_cast<const float*>(grad_output.raw_data());
    args.slices = (args.tiles + kSlice - 1) / kSlice;
    // One wave of blocks: the sum over tiles split so that the output blocks fill the device once.
    const int output_blocks = (args.padded_outputs / kRows) * (args.padded_channels / kColumns);
    const int processors = current_device_attribute<cudaDevAttrMultiProcessorCount>();
    const int wanted = std::clamp((processors + output_blocks - 1) / output_blocks, 1, std::min(args.slices, 65535));
    args.slices_per_split = (args.slices + wanted - 1) / wanted;
    const int splits = (args.slices + args.slices_per_split - 1) / args.slices_per_split;
    const Tensor partial = Tensor::empty({splits, kPoints, args.padded_outputs, args.padded_channels},
                                         {.dtype = DType::f32, .device = x.device()});
    args.partial = static_cast<float*>(partial.raw_data());
    allow_shared_memory(winograd_weight_gradient_kernel, kSharedBytes);
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(args.padded_outputs / kRows),
                    static_cast<unsigned>(args.padded_channels / kColumns));
    winograd_weight_gradient_kernel<<<grid, kBlockThreads, kSharedBytes, launch_stream()>>>(args);
    check_launch("conv2d");
    const int64_t pairs = static_cast<int64_t>(args.outputs) * args.channels;
    finish_weight_gradient_kernel<<<static_cast<unsigned>((pairs + kPairsPerBlock - 1) / kPairsPerBlock),
                                    kPoints * kPairsPerBlock, 0, launch_stream()>>>(
        args.partial, splits, args.padded_outputs, args.padded_channels, args.outputs, args.channels,
        static_cast<float*>(grad_weight.raw_data()));
    check_launch("conv2d");
}

}  // namespace

bool winograd_conv2d_forward_applies(const Tensor& x, const Tensor& weight, const Conv2dParams& params,
                                     const Tensor& out) {
    return winograd_applies(x, weight, params, out, weight.size(1), weight.size(0));
}

void winograd_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                             const Tensor& out) {
    winograd(x, weight, false, bias, params.padding, out);
}

bool winograd_conv2d_backward_data_applies(const Tensor& grad_output, const Tensor& weight,
                                           const Conv2dParams& params, const Tensor& grad_input) {
    return params.padding[0] <= 2 && params.padding[1] <= 2 &&
           winograd_applies(grad_output, weight, params, grad_input, weight.size(0), weight.size(1));
}

void winograd_conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                                   const Tensor& grad_input) {
    const std::array<int64_t, 2> padding{2 - params.padding[0], 2 - params.padding[1]};
    winograd(grad_output, weight, true, Tensor(), padding, grad_input);
}

}  // namespace kasmina::kernels::cuda

namespace kasmina::kernels::cuda {

bool winograd_conv2d_backward_weights_applies(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                              const Tensor& grad_weight) {
    return winograd_applies(x, grad_weight, params, grad_output, grad_weight.size(1), grad_weight.size(0)) &&
           fits_int(round_up(grad_weight.size(0), kRows) * round_up(grad_weight.size(1), kColumns) * kPoints) &&
           round_up(grad_weight.size(1), kColumns) / kColumns <= 65535;
}

void winograd_conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                                      const Tensor& grad_weight) {
    winograd_weight_gradient(grad_output, x, params.padding, grad_weight);
}

}  // namespace kasmina::kernels::cuda
