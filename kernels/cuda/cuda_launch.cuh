// Shared launch machinery of the CUDA kernels: the stream they run on, the strided offset calculator
// every elementwise kernel uses (operands broadcast to the output's shape by stride 0), grid sizing,
// block-wide reductions, and error checking after launches. Included by kernels/cuda/*.cu only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <utility>
#include <vector>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/stream.h"
#include "runtime/shape.h"
#include "runtime/tensor.h"

namespace kasmina::kernels::cuda {

constexpr int kMaxRank = 8;
constexpr int kThreads = 256;

// Where every launch, memset and cuBLAS/cuDNN call of the backend is queued: the calling thread's
// current stream on the current device (the dispatch layer made the operands' device current).
inline cudaStream_t launch_stream() { return ::kasmina::cuda::current_stream().raw(); }

// A library handle (cuBLAS, cuDNN) for the calling thread on the current device, made by `create` on
// first use. Such handles carry the stream their calls run on, so two host threads must never share
// one (one thread's GEMM could land on the other's stream); each thread keeps its own per device,
// released by `destroy` when the thread ends.
template <typename Handle, typename Create, typename Destroy>
Handle thread_device_handle(Create create, Destroy destroy) {
    struct PerThread {
        std::vector<Handle> by_device;
        Destroy destroy;
        ~PerThread() {
            for (Handle handle : by_device)
                if (handle != nullptr) destroy(handle);  // errors at thread exit have nowhere to go
        }
    };
    thread_local PerThread handles{{}, destroy};
    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    if (static_cast<int>(handles.by_device.size()) <= device) handles.by_device.resize(device + 1, nullptr);
    if (handles.by_device[device] == nullptr) handles.by_device[device] = create();
    return handles.by_device[device];
}

// A positive value of each device (an attribute, how many blocks of a kernel it holds), worked out
// the first time it is asked for on that device. Meant as a static where the value is used.
class PerDeviceValue {
  public:
    template <typename Compute>
    int64_t get(Compute&& compute) {
        int device = 0;
        KASMINA_CUDA_CHECK(cudaGetDevice(&device));
        if (device >= kDevices) return compute();
        int64_t value = known_[device].load(std::memory_order_relaxed);  // 0: not worked out yet
        if (value == 0) {
            value = compute();
            known_[device].store(value, std::memory_order_relaxed);
        }
        return value;
    }

  private:
    static constexpr int kDevices = 64;
    std::atomic<int64_t> known_[kDevices] = {};
};

// An attribute of the current device (compute capability, multiprocessor count), asked of the driver
// once per device and attribute.
template <cudaDeviceAttr kAttribute>
int current_device_attribute() {
    static PerDeviceValue known;
    return static_cast<int>(known.get([] {
        int device = 0, value = 0;
        KASMINA_CUDA_CHECK(cudaGetDevice(&device));
        KASMINA_CUDA_CHECK(cudaDeviceGetAttribute(&value, kAttribute, device));
        return value;
    }));
}

// ---- launches that overlap the previous kernel's end (programmatic dependent launch, sm_90) ----------
// A memory-bound op is a chain of short kernels, each reading what the one before wrote. Launched
// plainly, a kernel's blocks are scheduled only once the previous kernel has ended; launched with
// launch_overlapped they may be scheduled during its last blocks, so the launch and the blocks' start
// overlap that end. Such a kernel must call wait_for_previous_kernel() before it reads or writes
// global memory: that waits until the previous kernel has ended and its writes are visible (without
// the overlapped launch it does nothing).
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// kernel<<<grid, block, 0, launch_stream()>>>(args...), overlapping the previous kernel's end where the
// device can (compute capability 9 and up). Errors surface through check_launch, as with <<<>>>.
// A launch on launch_stream() with these sizes, and the attribute that overlaps it with the previous
// kernel's end (programmatic stream serialization), which devices take from compute capability 9 on.
inline cudaLaunchConfig_t stream_launch_config(dim3 grid, dim3 block, size_t shared_bytes = 0) {
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = launch_stream();
    return config;
}
inline cudaLaunchAttribute overlap_attribute() {
    cudaLaunchAttribute overlap{};
    overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    overlap.val.programmaticStreamSerializationAllowed = 1;
    return overlap;
}
inline bool overlap_available() { return current_device_attribute<cudaDevAttrComputeCapabilityMajor>() >= 9; }

template <typename... Parameters, typename... Arguments>
void launch_overlapped(void (*kernel)(Parameters...), dim3 grid, dim3 block, Arguments&&... arguments) {
    cudaLaunchConfig_t config = stream_launch_config(grid, block);
    cudaLaunchAttribute overlap = overlap_attribute();
    if (overlap_available()) {
        config.attrs = &overlap;
        config.numAttrs = 1;
    }
    (void)cudaLaunchKernelEx(&config, kernel, std::forward<Arguments>(arguments)...);
}

// kernel<<<grid, block, shared_bytes, launch_stream()>>>(args...) as a cooperative launch: every block is
// resident at once, so the kernel may wait at grid-wide barriers (cooperative_groups::this_grid().sync()).
// The grid must fit the device at once (the caller checks the occupancy). Overlapped with the previous
// kernel's end as launch_overlapped does where the driver takes both attributes (the kernel then calls
// wait_for_previous_kernel() first). Returns the launch's error (also left for check_launch), so a
// caller can fall back where the grid cannot be resident at once (cudaErrorCooperativeLaunchTooLarge:
// fewer multiprocessors than the device reports, as under MPS).
template <typename... Parameters, typename... Arguments>
cudaError_t launch_cooperative(void (*kernel)(Parameters...), dim3 grid, dim3 block, size_t shared_bytes,
                        Arguments&&... arguments) {
    cudaLaunchConfig_t config = stream_launch_config(grid, block, shared_bytes);
    cudaLaunchAttribute attributes[2] = {{}, overlap_attribute()};
    attributes[0].id = cudaLaunchAttributeCooperative;
    attributes[0].val.cooperative = 1;
    config.attrs = attributes;
    config.numAttrs = overlap_available() ? 2 : 1;
    if (config.numAttrs == 2 && cudaLaunchKernelEx(&config, kernel, arguments...) == cudaSuccess) return cudaSuccess;
    if (config.numAttrs == 2) (void)cudaGetLastError();  // the pair refused: launch without the overlap
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, std::forward<Arguments>(arguments)...);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory. Above 48 KiB a kernel must opt in on
// each device; the opt-in is asked of the driver once per kernel, device and larger size.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
    constexpr size_t kDefaultLimit = 48 * 1024;
    if (bytes <= kDefaultLimit) return;
    struct Granted {
        const void* kernel;
        int device;
        size_t bytes;
    };
    static std::mutex mutex;
    static std::vector<Granted> granted;
    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    const void* key = reinterpret_cast<const void*>(kernel);
    std::lock_guard<std::mutex> lock(mutex);
    auto found = std::find_if(granted.begin(), granted.end(),
                              [&](const Granted& g) { return g.kernel == key && g.device == device; });
    if (found != granted.end() && found->bytes >= bytes) return;
    KASMINA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    if (found != granted.end()) found->bytes = bytes;
    else granted.push_back({key, device, bytes});
}

// Element offsets of N operands for a linear index over the (merged) iteration shape.
template <int N>
struct OffsetCalculator {
    int rank = 0;
    int64_t shape[kMaxRank];
    int64_t strides[N][kMaxRank];
    bool contiguous = true;  // every operand dense and in order: offset == linear index

    __device__ __forceinline__ void offsets(int64_t linear, int64_t (&out)[N]) const {
        if (contiguous) {
            for (int k = 0; k < N; ++k) out[k] = linear;
            return;
        }
        for (int k = 0; k < N; ++k) out[k] = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const int64_t index = linear % shape[d];
            linear /= shape[d];
            for (int k = 0; k < N; ++k) out[k] += index * strides[k][d];
        }
    }
};

// Builds the calculator for `shape` with one stride vector per operand (broadcast dims stride 0),
// merging dimensions that are contiguous for every operand. Raises ShapeError above kMaxRank.
template <int N>
OffsetCalculator<N> make_offsets(const Shape& shape, const std::array<Shape, N>& strides, const char* op) {
    OffsetCalculator<N> calc;
    Shape merged_shape;
    std::array<Shape, N> merged;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 1) continue;
        bool mergeable = !merged_shape.empty();
        for (int k = 0; k < N && mergeable; ++k)
            mergeable = merged[k].back() == strides[k][d] * shape[d];
        if (mergeable) {
            merged_shape.back() *= shape[d];
            for (int k = 0; k < N; ++k) merged[k].back() = strides[k][d];
        } else {
            merged_shape.push_back(shape[d]);
            for (int k = 0; k < N; ++k) merged[k].push_back(strides[k][d]);
        }
    }
    if (merged_shape.size() > kMaxRank)
        raise<ShapeError>(op, "the CUDA backend handles up to ", kMaxRank, " non-mergeable dims, got ", shape_str(shape));
    calc.rank = static_cast<int>(merged_shape.size());
    for (int d = 0; d < calc.rank; ++d) calc.shape[d] = merged_shape[d];
    calc.contiguous = calc.rank <= 1;
    for (int k = 0; k < N; ++k)
        for (int d = 0; d < calc.rank; ++d) {
            calc.strides[k][d] = merged[k][d];
            if (calc.rank == 1 && merged[k][d] != 1) calc.contiguous = false;
        }
    return calc;
}

inline unsigned grid_for(int64_t count, int threads = kThreads) {
    const int64_t blocks = (count + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

// Raises DeviceError naming `op` if the last launch failed.
inline void check_launch(const char* op) {
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
        raise<DeviceError>(op, "CUDA kernel launch failed: ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    return value;
}

// The sum over the warp, in every lane (butterfly shuffles).
template <typename T>
__device__ __forceinline__ T warp_all_sum(T value) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

// Whether `pointer` is a multiple of `bytes` (vector loads and stores need it).
inline bool aligned_to(const void* pointer, size_t bytes) { return reinterpret_cast<uintptr_t>(pointer) % bytes == 0; }

// ---- packed access: kPack consecutive elements (16 bytes at most) moved by one load or store ---------

// kPack consecutive elements moved as one access.
template <typename T, int kPack>
struct alignas(sizeof(T) * kPack) Pack {
    T v[kPack];
};

template <typename T, int kPack>
__device__ __forceinline__ Pack<T, kPack> load_pack(const T* data, int64_t i) {
    if (data == nullptr) return Pack<T, kPack>{};
    return *reinterpret_cast<const Pack<T, kPack>*>(data + i);
}

// Stores a pack marked evict-first in L2 (st.global.cs): for a pass whose output is not read again soon
// while its input is, so the output does not push out input lines still to be re-read from L2.
template <typename T, int kPack>
__device__ __forceinline__ void store_pack_streaming(T* data, int64_t i, const Pack<T, kPack>& value) {
    static_assert(sizeof(value) <= 16 && (sizeof(value) & (sizeof(value) - 1)) == 0, "a pack is 1 to 16 bytes");
    void* address = data + i;
    if constexpr (sizeof(value) == 16) {
        const auto* w = reinterpret_cast<const uint32_t*>(&value);
        asm volatile("st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(address), "r"(w[0]), "r"(w[1]), "r"(w[2]),
                     "r"(w[3])
                     : "memory");
    } else if constexpr (sizeof(value) == 8) {
        const auto* w = reinterpret_cast<const uint32_t*>(&value);
        asm volatile("st.global.cs.v2.b32 [%0], {%1, %2};" ::"l"(address), "r"(w[0]), "r"(w[1]) : "memory");
    } else if constexpr (sizeof(value) == 4) {
        asm volatile("st.global.cs.b32 [%0], %1;" ::"l"(address), "r"(*reinterpret_cast<const uint32_t*>(&value))
                     : "memory");
    } else {
        *reinterpret_cast<Pack<T, kPack>*>(address) = value;
    }
}

// The widest pack (16 bytes at most) that `extent` elements split into with every pointer aligned to it
// (null pointers are not read per element and do not count): a braced list or any range of pointers.
template <typename T, typename Pointers = std::initializer_list<const void*>>
int pack_for(int64_t extent, const Pointers& pointers) {
    constexpr int kWidest = static_cast<int>(16 / sizeof(T));
    if (kWidest < 2 || extent % kWidest != 0) return 1;
    for (const void* pointer : pointers)
        if (pointer != nullptr && !aligned_to(pointer, 16)) return 1;
    return kWidest;
}

// Calls fn.template operator()<kPack>() with kPack = pack (1, or 16 bytes of T).
template <typename T, typename Fn>
void with_pack(int pack, Fn&& fn) {
    constexpr int kWidest = static_cast<int>(16 / sizeof(T));
    if (pack == kWidest && kWidest > 1) fn.template operator()<kWidest>();
    else fn.template operator()<1>();
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread receives the result.
template <typename T>
__device__ T block_sum(T value) {
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    value = warp_sum(value);
    __syncthreads();  // partial may still be read by a previous call
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    T total = lane < warps ? partial[lane] : T(0);
    total = warp_sum(total);
    return __shfl_sync(0xffffffffu, total, 0);
}

template <typename T>
__device__ __forceinline__ T device_max(T a, T b) {
    if (a != a) return a;  // NaN wins, as on the CPU
    if (b != b) return b;
    return a > b ? a : b;
}

template <typename T>
__device__ T block_max(T value) {
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) value = device_max(value, __shfl_down_sync(0xffffffffu, value, offset));
    __syncthreads();
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    T total = lane < warps ? partial[lane] : partial[0];
    for (int offset = 16; offset > 0; offset >>= 1) total = device_max(total, __shfl_down_sync(0xffffffffu, total, offset));
    return __shfl_sync(0xffffffffu, total, 0);
}

// ---- the last block to finish combines the partial results ------------------------------------------
// A reduction whose blocks each write a partial result and whose last block to finish (of a group: a
// row, a column tile, a channel) adds them up runs in one launch instead of two. The counters are
// per stream: kernels of one stream run one after another, and each leaves its counters at zero.

// `count` counters, all zero, for kernels queued on the calling thread's current stream
// (kernels/cuda/block_counters.cu).
unsigned* stream_block_counters(int64_t count);

// Called by every thread of a block after it has written its partial result: true in all of them when
// this block is the last of the `blocks` sharing `counter` to get here (the counter is then reset to 0).
// The last block reads the others' partial results through load_from_l2 (L1 is not kept coherent).
__device__ __forceinline__ bool last_block_of(unsigned* counter, unsigned blocks) {
    __shared__ bool last;
    __threadfence();  // this block's partial results, before its count
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        last = atomicAdd(counter, 1u) == blocks - 1;
        if (last) atomicExch(counter, 0u);
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// Starts moving the line holding *pointer into L2, so that a later load waits less.
template <typename T>
__device__ __forceinline__ void prefetch_to_l2(const T* pointer) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(pointer));
}

template <typename T>
__device__ __forceinline__ T load_from_l2(const T* pointer) {
    return __ldcg(pointer);
}

// ---- column sums: out[c] = sum over r of value(r, c), for tall matrices ------------------------------
// Blocks of 32 columns x 8 row-lanes each sum a chunk of rows; with several chunks, each writes
// partial[chunk][c] and the last block of a column tile to finish adds its chunks (8 lanes a column, in
// chunk order, so the result does not depend on which block finished last) and hands each total to the
// store. The accumulator is whatever value() returns: a float, or a PairSum when one pass over the data
// yields two sums.
constexpr int kColumnTile = 32, kRowLanes = 8;

// Two sums carried through one pass (e.g. sum dy and sum dy * xhat).
template <typename T>
struct PairSum {
    T first, second;
    __host__ __device__ PairSum& operator+=(const PairSum& other) {
        first += other.first;
        second += other.second;
        return *this;
    }
};

template <typename T>
__device__ __forceinline__ PairSum<T> load_from_l2(const PairSum<T>* pointer) {
    return {__ldcg(&pointer->first), __ldcg(&pointer->second)};
}

template <typename Acc, typename Value, typename Store>
__global__ void column_sums_kernel(Value value, int64_t rows, int64_t cols, int64_t rows_per_chunk, Acc* partial,
                                   unsigned* counters, Store store) {
    __shared__ Acc tile[kRowLanes][kColumnTile];
    wait_for_previous_kernel();
    const int64_t c = blockIdx.x * static_cast<int64_t>(kColumnTile) + threadIdx.x;
    // The 8 lanes' sums added in lane order by lane 0.
    const auto add_lanes = [&](Acc total) {
        tile[threadIdx.y][threadIdx.x] = total;
        __syncthreads();
        if (threadIdx.y == 0)
            for (int lane = 1; lane < kRowLanes; ++lane) total += tile[lane][threadIdx.x];
        return total;
    };
    const int64_t first = blockIdx.y * rows_per_chunk, last = min(rows, first + rows_per_chunk);
    Acc total{};
    if (c < cols) {
#pragma unroll 4  // four rows' loads in flight: bn1d's statistics 53.7 -> 47.4 us forward (H100, with the map)
        for (int64_t r = first + threadIdx.y; r < last; r += kRowLanes) total += value(r, c);
    }
    total = add_lanes(total);
    const bool owner = threadIdx.y == 0 && c < cols;
    if (gridDim.y == 1) {
        if (owner) store(c, total);
        return;
    }
    if (owner) partial[blockIdx.y * cols + c] = total;
    if (!last_block_of(counters + blockIdx.x, gridDim.y)) return;
    total = Acc{};
    if (c < cols)
        for (int64_t chunk = threadIdx.y; chunk < gridDim.y; chunk += kRowLanes) total += load_from_l2(partial + chunk * cols + c);
    total = add_lanes(total);
    if (owner) store(c, total);
}

// The common column_sums operands: the elements of a row-major matrix, and a (scaled) store.
template <typename T>
struct MatrixElement {
    const T* x;
    int64_t cols;
    __device__ T operator()(int64_t r, int64_t c) const { return x[r * cols + c]; }
};

template <typename T>
struct StoreScaled {
    T* out;
    T scale = T(1);
    __device__ void operator()(int64_t c, T value) const { out[c] = value * scale; }
};

// Both sums of a PairSum, each scaled; a null destination drops its sum.
template <typename T>
struct StorePairScaled {
    T *first, *second;
    T scale = T(1);
    __device__ void operator()(int64_t c, PairSum<T> value) const {
        if (first) first[c] = value.first * scale;
        if (second) second[c] = value.second * scale;
    }
};

// Chunks of rows a column tile splits into; `scratch` must hold at least column_chunks(rows, cols) * cols
// accumulators.
inline int64_t column_chunks(int64_t rows, int64_t cols) {
    if (rows <= 256) return 1;  // the partials' round trip would cost more than these rows
    const int64_t tiles = (cols + kColumnTile - 1) / kColumnTile;
    const int64_t wanted = std::max<int64_t>(1, 1024 / std::max<int64_t>(tiles, 1));  // ~1024 blocks in flight
    return std::min<int64_t>(wanted, std::max<int64_t>(1, (rows + 63) / 64));         // >= 64 rows per chunk
}

// One launch: the chunks' partial sums and, in each column tile's last block, their totals.
template <typename Acc, typename Value, typename Store>
void column_sums(Value value, int64_t rows, int64_t cols, Acc* scratch, Store store) {
    const int64_t chunks = column_chunks(rows, cols);
    const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
    const unsigned tiles = static_cast<unsigned>((cols + kColumnTile - 1) / kColumnTile);
    unsigned* counters = chunks > 1 ? stream_block_counters(tiles) : nullptr;
    launch_overlapped(column_sums_kernel<Acc, Value, Store>, dim3(tiles, static_cast<unsigned>(chunks)),
                      dim3(kColumnTile, kRowLanes), value, rows, cols, rows_per_chunk, scratch, counters, store);
}

}  // namespace kasmina::kernels::cuda
