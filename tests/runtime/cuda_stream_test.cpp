// Streams and events (runtime/cuda/stream.h), the stream-ordered caching allocator and the pinned
// staging of large host <-> device copies. Each test skips itself on a machine without a GPU.
#ifdef KASMINA_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "autograd/convolution.h"
#include "kasmina.h"
#include "runtime/allocator.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/stream.h"
#include "test_util.h"

using namespace kasmina;
using cuda::Event;
using cuda::Stream;
using cuda::StreamGuard;

namespace {

using kasmina::testing::kGpu;

// Holds `stream` at a host function until release() (or destruction), so tests can look at what the
// stream's later work is waiting for without depending on timing. Gives up after 10 s: a host call
// that unexpectedly waits for the stream then fails the test instead of hanging it.
class StreamBlocker {
public:
    explicit StreamBlocker(const Stream& stream) : stream_(stream) {
        const cudaError_t status = cudaLaunchHostFunc(
            stream.raw(),
            [](void* state) {
                const auto* blocker = static_cast<const StreamBlocker*>(state);
                while (!blocker->released_.load() && std::chrono::steady_clock::now() < blocker->deadline_)
                    std::this_thread::yield();
            },
            this);
        if (status != cudaSuccess) throw DeviceError(cudaGetErrorString(status));
    }
    ~StreamBlocker() {
        release();
        cudaStreamSynchronize(stream_.raw());
    }
    void release() { released_ = true; }

private:
    Stream stream_;
    std::atomic<bool> released_{false};
    std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(10);
};

uint64_t device_allocations() { return allocator_for(kGpu).stats().device_allocations; }

void* data_of(const Tensor& t) { return t.impl()->storage->data(); }

// Bytes 0..255 in a pattern that does not repeat with any power-of-two period.
std::vector<uint8_t> byte_pattern(size_t bytes) {
    std::vector<uint8_t> values(bytes);
    uint32_t state = static_cast<uint32_t>(bytes) * 2654435761u + 1;
    for (uint8_t& value : values) {
        state = state * 1664525u + 1013904223u;
        value = static_cast<uint8_t>(state >> 24);
    }
    return values;
}

// A small network's forward and backward: cuBLAS, cuDNN, elementwise, reductions and softmax.
std::vector<Tensor> forward_and_backward(const Tensor& image, const Tensor& filter, const Tensor& weight) {
    const Tensor leaf_filter = filter.detach().set_requires_grad(true),
                 leaf_weight = weight.detach().set_requires_grad(true);
    const Tensor features = relu(conv2d(image, leaf_filter, {}, {.padding = {1, 1}}));
    const Tensor logits = matmul(features.reshape({image.size(0), features.numel() / image.size(0)}), leaf_weight);
    const Tensor loss = mean(softmax(logits, -1) * logits);
    loss.backward();
    return {logits.detach().to(Device::cpu()), leaf_filter.grad().to(Device::cpu()),
            leaf_weight.grad().to(Device::cpu())};
}

}  // namespace

TEST(CudaStream, DefaultAndPoolStreamsAreDistinctHandles) {
    REQUIRE_GPU();
    const Stream default_stream = Stream::default_stream(0), first = Stream::create(0), second = Stream::create(0);
    EXPECT_TRUE(default_stream.is_default());
    EXPECT_FALSE(first.is_default());
    EXPECT_NE(first, second);
    EXPECT_EQ(first.device(), 0);
    EXPECT_THROW(Stream::create(cuda::device_count()), DeviceError);
}

TEST(CudaStream, StreamGuardSetsAndRestoresTheCurrentStream) {
    REQUIRE_GPU();
    const Stream outer = Stream::create(0), inner = Stream::create(0);
    EXPECT_EQ(cuda::current_stream(0), Stream::default_stream(0));
    {
        StreamGuard outer_guard(outer);
        EXPECT_EQ(cuda::current_stream(0), outer);
        {
            StreamGuard inner_guard(inner);
            EXPECT_EQ(cuda::current_stream(0), inner);
        }
        EXPECT_EQ(cuda::current_stream(0), outer);
    }
    EXPECT_EQ(cuda::current_stream(0), Stream::default_stream(0));
}

TEST(CudaStream, CurrentStreamIsPerThread) {
    REQUIRE_GPU();
    const Stream side = Stream::create(0);
    StreamGuard guard(side);
    Stream seen_by_other_thread = side;
    std::thread([&] { seen_by_other_thread = cuda::current_stream(0); }).join();
    EXPECT_EQ(seen_by_other_thread, Stream::default_stream(0));
}

TEST(CudaStream, HostThreadsOnTheirOwnStreamsGetTheirOwnResults) {
    // cuBLAS and cuDNN handles carry a stream, so each host thread has its own: two threads running
    // convolutions and GEMMs at once on their own streams must each get the default stream's results.
    REQUIRE_GPU();
    manual_seed(9);
    const Tensor image = Tensor::randn({8, 3, 16, 16}).to(kGpu), filter = Tensor::randn({4, 3, 3, 3}).to(kGpu);
    const Tensor weight = Tensor::randn({4 * 16 * 16, 10}).to(kGpu);
    const std::vector<Tensor> expected = forward_and_backward(image, filter, weight);
    Event inputs_ready;
    inputs_ready.record(Stream::default_stream(0));
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
        threads.emplace_back([&] {
            const Stream own = Stream::create(0);
            inputs_ready.wait(own);
            StreamGuard guard(own);
            for (int round = 0; round < 20; ++round) {
                const std::vector<Tensor> got = forward_and_backward(image, filter, weight);
                for (size_t i = 0; i < got.size(); ++i)
                    if (max(abs(got[i] - expected[i])).item() > 1e-5) ++mismatches;
            }
        });
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(mismatches.load(), 0);
}

TEST(CudaStream, WorkOnASideStreamMatchesTheDefaultStream) {
    REQUIRE_GPU();
    manual_seed(7);
    const Tensor image = Tensor::randn({8, 3, 16, 16}).to(kGpu), filter = Tensor::randn({4, 3, 3, 3}).to(kGpu);
    const Tensor weight = Tensor::randn({4 * 16 * 16, 10}).to(kGpu);
    const std::vector<Tensor> on_default = forward_and_backward(image, filter, weight);

    const Stream side = Stream::create(0);
    Event inputs_ready;
    inputs_ready.record(Stream::default_stream(0));  // side is non-blocking: order it after the uploads
    inputs_ready.wait(side);
    std::vector<Tensor> on_side;
    {
        StreamGuard guard(side);
        on_side = forward_and_backward(image, filter, weight);
    }
    ASSERT_EQ(on_side.size(), on_default.size());
    for (size_t i = 0; i < on_side.size(); ++i) kasmina::testing::expect_tensors_close(on_side[i], on_default[i], 1e-5);
}

TEST(CudaStream, AnEventMakesAnotherStreamWaitForTheWorkBeforeIt) {
    REQUIRE_GPU();
    const Stream producer = Stream::create(0), consumer = Stream::create(0);
    // Allocate before holding the producer: cudaMalloc for a new segment may wait for the device. So
    // may loading a kernel's module on its first launch (CUDA's lazy loading), so the fill kernel runs
    // once here too (zeros alone are a memset).
    Tensor value, copied;
    {
        StreamGuard guard(producer);
        value = Tensor::zeros({1 << 20}, {.device = kGpu});
        value.fill_(1.0);
    }
    {
        StreamGuard guard(consumer);
        copied = Tensor::zeros({1 << 20}, {.device = kGpu});
    }
    synchronize(kGpu);
    StreamBlocker hold(producer);
    Event produced;
    {
        StreamGuard guard(producer);
        value.fill_(3.0);  // queued behind the blocker
        produced.record(producer);
    }
    {
        StreamGuard guard(consumer);
        produced.wait(consumer);
        copied.copy_(value);
    }
    EXPECT_FALSE(produced.query());
    EXPECT_FALSE(consumer.query());  // the copy waits for the producer's fill
    hold.release();
    consumer.synchronize();
    EXPECT_TRUE(produced.query());
    EXPECT_TRUE(consumer.query());
    const std::vector<float> values = copied.to_vector<float>();
    EXPECT_EQ(std::count(values.begin(), values.end(), 3.0f), static_cast<long>(values.size()));
}

TEST(CudaStream, EventElapsedTimeIsPositive) {
    REQUIRE_GPU();
    const Stream stream = Stream::create(0);
    StreamGuard guard(stream);
    const Tensor a = Tensor::randn({1024, 1024}).to(kGpu);
    Event start({.enable_timing = true}), end({.enable_timing = true});
    start.record(stream);
    Tensor product = a;
    for (int i = 0; i < 4; ++i) product = matmul(product, a) * 1e-3;
    end.record(stream);
    end.synchronize();
    EXPECT_GT(start.elapsed_ms(end), 0.0f);
}

TEST(CudaStream, ElapsedTimeNeedsTimingEvents) {
    REQUIRE_GPU();
    Event start, end;
    start.record(Stream::default_stream(0));
    end.record(Stream::default_stream(0));
    end.synchronize();
    EXPECT_THROW(start.elapsed_ms(end), DeviceError);
}

TEST(CudaStream, AnUnrecordedEventIsComplete) {
    REQUIRE_GPU();
    const Event event;
    EXPECT_TRUE(event.query());
    EXPECT_NO_THROW(event.synchronize());
}

// ---- reductions finished by their last block --------------------------------------------------------

// The long-row reductions (a whole-tensor sum, mean, max and min, with and without packs of four), the
// column sums of a tall matrix and batch norm's channel sums over planes run in one launch: each block
// writes a partial result and the last block of its group to finish combines them, counting finished
// blocks in counters of the stream it runs on. Each call must leave those at zero for the next one, so
// repeated calls on the default stream and on two pool streams give the same result bit for bit, which
// matches the CPU. The column sums of [512, 10000] count in more column tiles (313) than a stream's
// first counters (256) hold, so the counters grow.
TEST(CudaStream, ReductionsFinishedByTheirLastBlockRepeatOnEveryStream) {
    REQUIRE_GPU();
    const auto batch_norm_output = [](const Tensor& x) {
        const int64_t channels = x.size(1);
        const Device device = x.device();
        return batch_norm(x, Tensor::zeros({channels}).to(device), Tensor::ones({channels}).to(device), {}, {}, true,
                          0.1, 1e-5);
    };
    struct Case {
        std::string name;
        Tensor input;
        std::function<Tensor(const Tensor&)> reduce;
        double tolerance;
    };
    const std::vector<Case> cases = {
        {"sum in packs", Tensor::randn({131072}), [](const Tensor& t) { return sum(t); }, 1e-4},
        {"sum", Tensor::randn({100003}), [](const Tensor& t) { return sum(t); }, 1e-4},
        {"mean of rows", Tensor::randn({3, 40000}), [](const Tensor& t) { return mean(t, {1}); }, 1e-5},
        {"max", Tensor::randn({100003}), [](const Tensor& t) { return amax(t); }, 0},
        {"min in packs", Tensor::randn({131072}), [](const Tensor& t) { return amin(t); }, 0},
        {"column sums", Tensor::randn({1000, 300}), [](const Tensor& t) { return sum(t, {0}); }, 1e-4},
        {"column sums, counters grown", Tensor::randn({512, 10000}), [](const Tensor& t) { return sum(t, {0}); }, 1e-4},
        {"batch norm over planes", Tensor::randn({8, 16, 12, 12}) * 2.0 + 1.0, batch_norm_output, 1e-4}};
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const Tensor expected = c.reduce(c.input);
        const Tensor on_device = c.input.to(kGpu);
        cuda::synchronize(0);  // the pool streams are not ordered after the default stream's copy
        std::vector<float> first;
        for (const Stream& stream : {Stream::default_stream(0), Stream::create(0), Stream::create(0)}) {
            StreamGuard guard(stream);
            for (int repeat = 0; repeat < 2; ++repeat) {
                const Tensor result = c.reduce(on_device).to(Device::cpu());
                if (first.empty()) {
                    kasmina::testing::expect_tensors_close(result, expected, c.tolerance);
                    first = result.to_vector<float>();
                } else {
                    EXPECT_EQ(result.to_vector<float>(), first);
                }
            }
        }
    }
}

// ---- launches that overlap the previous kernel's end --------------------------------------------------

// Batch norm's passes, the column, plane and long-row sums and layer norm's warp kernels are launched
// to overlap the end of the kernel before them (kernels/cuda/cuda_launch.cuh: launch_overlapped) and
// wait for it before touching memory. Here each reads what the kernel just before it wrote (a scaled
// copy of x, then the statistics of the same pass), with every launch queued behind a held stream so
// the kernels run back to back; a read before its writer ended would show as a wrong value. The same
// chain runs once unheld first, so the held round's allocations come from the cache (a fresh device
// allocation could wait for the held stream).
TEST(CudaStream, OverlappedLaunchesReadWhatTheKernelBeforeThemWrote) {
    REQUIRE_GPU();
    const Tensor x = Tensor::randn({2048, 1024}), planes = Tensor::randn({16, 32, 24, 24});
    // Running statistics made beforehand: a copy to the device inside the held round would wait for it.
    struct Running {
        Tensor rows_mean, rows_var, planes_mean, planes_var;
    };
    const auto running_on = [](Device device) {
        return Running{Tensor::zeros({1024}).to(device), Tensor::ones({1024}).to(device),
                       Tensor::zeros({32}).to(device), Tensor::ones({32}).to(device)};
    };
    const auto chain = [](const Tensor& rows, const Tensor& images, Running& running, int step) {
        const double scale = step, shift = 0.5 * step;
        const Tensor scaled = rows * scale + shift, scaled_images = images * scale - shift;
        return std::vector<Tensor>{
            sum(scaled),                                                                       // long-row sum
            sum(scaled, {0}),                                                                  // column sums
            layer_norm(scaled, {1024}, {}, {}),                                                // one warp a row
            batch_norm(scaled, running.rows_mean, running.rows_var, {}, {}, true, 0.1, 1e-5),  // columns, rows pass
            batch_norm(scaled_images, running.planes_mean, running.planes_var, {}, {}, true, 0.1, 1e-5)};  // planes
    };
    const Tensor rows_on_device = x.to(kGpu), images_on_device = planes.to(kGpu);
    Running on_device = running_on(kGpu), on_host = running_on(Device::cpu());
    cuda::synchronize(0);
    const Stream stream = Stream::create(0);
    StreamGuard guard(stream);
    constexpr int kSteps = 6;
    const auto run_all = [&](const Tensor& rows, const Tensor& images, Running& running) {
        std::vector<std::vector<Tensor>> results;
        for (int step = 1; step <= kSteps; ++step) results.push_back(chain(rows, images, running, step));
        return results;
    };
    run_all(rows_on_device, images_on_device, on_device);
    std::vector<std::vector<Tensor>> results;
    {
        StreamBlocker blocker(stream);
        results = run_all(rows_on_device, images_on_device, on_device);
    }
    run_all(x, planes, on_host);  // the same running-statistics history as the device's
    const std::vector<std::vector<Tensor>> expected = run_all(x, planes, on_host);
    for (int step = 0; step < kSteps; ++step) {
        SCOPED_TRACE("step " + std::to_string(step + 1));
        for (size_t i = 0; i < expected[step].size(); ++i) {
            SCOPED_TRACE("result " + std::to_string(i));
            kasmina::testing::expect_tensors_close(results[step][i].to(Device::cpu()), expected[step][i], 2e-4);
        }
    }
    kasmina::testing::expect_tensors_close(on_device.rows_var.to(Device::cpu()), on_host.rows_var, 1e-4);
    kasmina::testing::expect_tensors_close(on_device.planes_mean.to(Device::cpu()), on_host.planes_mean, 1e-4);
}

// ---- the stream-ordered caching allocator ----------------------------------------------------------

TEST(CudaStreamAllocator, ABlockFreedOnOneStreamIsReusedOnlyOnThatStream) {
    REQUIRE_GPU();
    const Stream a = Stream::create(0), b = Stream::create(0);
    allocator_for(kGpu).empty_cache();  // no cached segments of this odd size on either stream
    constexpr int64_t kBytes = (37 << 20) + 4096;
    void* freed_on_a = nullptr;
    {
        StreamGuard guard(a);
        freed_on_a = data_of(Tensor::empty({kBytes}, {.dtype = DType::u8, .device = kGpu}));
    }
    {
        StreamGuard guard(b);
        const uint64_t before = device_allocations();
        const Tensor on_b = Tensor::empty({kBytes}, {.dtype = DType::u8, .device = kGpu});
        EXPECT_NE(data_of(on_b), freed_on_a);
        EXPECT_EQ(device_allocations(), before + 1);
    }
    {
        StreamGuard guard(a);
        const uint64_t before = device_allocations();
        const Tensor again_on_a = Tensor::empty({kBytes}, {.dtype = DType::u8, .device = kGpu});
        EXPECT_EQ(data_of(again_on_a), freed_on_a);
        EXPECT_EQ(device_allocations(), before);
    }
    a.synchronize();
    b.synchronize();
}

TEST(CudaStreamAllocator, RecordStreamHoldsAFreedBlockUntilTheOtherStreamFinishes) {
    REQUIRE_GPU();
    const Stream owner = Stream::create(0), user = Stream::create(0);
    allocator_for(kGpu).empty_cache();
    constexpr int64_t kFloats = (9 << 20) + 17;
    // Every block is allocated before the user stream is held: cudaMalloc for a new segment may wait
    // for the device, and so for the held stream.
    Tensor shared, spare, copied;
    {
        StreamGuard guard(owner);
        shared = Tensor::ones({kFloats}, {.device = kGpu});
        spare = Tensor::empty({kFloats}, {.device = kGpu});
    }
    {
        StreamGuard guard(user);
        copied = Tensor::zeros({kFloats}, {.device = kGpu});
    }
    synchronize(kGpu);
    spare = Tensor();  // a free block of the owner's that fits, besides `shared`'s once freed
    StreamBlocker hold(user);
    {
        StreamGuard guard(user);
        copied.copy_(shared);  // queued behind the blocker
    }
    cuda::record_stream(shared, user);
    void* held = data_of(shared);
    shared = Tensor();  // freed while the user stream still has to read it
    Tensor meanwhile;   // kept alive so that `held` is the only free block that fits afterwards
    {
        StreamGuard guard(owner);
        meanwhile = Tensor::empty({kFloats}, {.device = kGpu});
        EXPECT_NE(data_of(meanwhile), held);
    }
    hold.release();
    user.synchronize();
    {
        StreamGuard guard(owner);
        const uint64_t before = device_allocations();
        const Tensor after = Tensor::empty({kFloats}, {.device = kGpu});
        EXPECT_EQ(data_of(after), held);
        EXPECT_EQ(device_allocations(), before);
    }
    const std::vector<float> values = copied.to_vector<float>();
    EXPECT_EQ(std::count(values.begin(), values.end(), 1.0f), static_cast<long>(values.size()));
    owner.synchronize();
}

TEST(CudaStreamAllocator, EmptyCacheWaitsForHeldBlocksAndKeepsStatsRight) {
    REQUIRE_GPU();
    const Stream owner = Stream::create(0), user = Stream::create(0);
    allocator_for(kGpu).empty_cache();
    const AllocatorStats start = allocator_for(kGpu).stats();
    {
        Tensor shared;
        {
            StreamGuard guard(owner);
            shared = Tensor::zeros({(5 << 20) + 3}, {.device = kGpu});
        }
        EXPECT_GT(allocator_for(kGpu).stats().bytes_in_use, start.bytes_in_use);
        cuda::record_stream(shared, user);
    }
    owner.synchronize();
    EXPECT_EQ(allocator_for(kGpu).stats().bytes_in_use, start.bytes_in_use);
    allocator_for(kGpu).empty_cache();  // the held block is released and its segment returned
    EXPECT_EQ(allocator_for(kGpu).stats().reserved_bytes, start.reserved_bytes);
}

TEST(CudaStreamAllocator, RecordStreamRejectsCpuTensors) {
    REQUIRE_GPU();
    EXPECT_THROW(cuda::record_stream(Tensor::zeros({4}), Stream::default_stream(0)), DeviceError);
}

// ---- copies through the pinned staging ---------------------------------------------------------------

// Sizes around the staging threshold and the chunk size, odd ones, and several chunks.
std::vector<size_t> staging_sizes() {
    const size_t threshold = cuda::kStagedCopyThreshold, chunk = cuda::kStagingChunkBytes;
    return {threshold - 1, threshold,         threshold + 1, chunk - 1,    chunk,
            chunk + 1,     2 * chunk + 12345, 3 * chunk - 7, (9 << 20) + 3};
}

// Reads a device buffer back in pieces below the staging threshold (the plain copy path).
std::vector<uint8_t> read_back_in_small_pieces(const Tensor& device_bytes) {
    std::vector<uint8_t> result;
    const int64_t piece = static_cast<int64_t>(cuda::kStagedCopyThreshold / 2);
    for (int64_t start = 0; start < device_bytes.numel(); start += piece) {
        const std::vector<uint8_t> part =
            device_bytes.narrow(0, start, std::min(piece, device_bytes.numel() - start)).to_vector<uint8_t>();
        result.insert(result.end(), part.begin(), part.end());
    }
    return result;
}

TEST(CudaStagedCopy, LargeHostToDeviceCopiesAreBitExact) {
    REQUIRE_GPU();
    for (const size_t bytes : staging_sizes()) {
        const std::vector<uint8_t> pattern = byte_pattern(bytes);
        const Tensor device_bytes = Tensor::from_vector(pattern, {static_cast<int64_t>(bytes)}, kGpu);
        EXPECT_TRUE(read_back_in_small_pieces(device_bytes) == pattern) << bytes << " bytes";
    }
}

TEST(CudaStagedCopy, LargeDeviceToHostCopiesAreBitExact) {
    REQUIRE_GPU();
    for (const size_t bytes : staging_sizes()) {
        const std::vector<uint8_t> pattern = byte_pattern(bytes);
        const Tensor host = Tensor::from_vector(pattern, {static_cast<int64_t>(bytes)});
        const Tensor device_bytes = Tensor::empty({static_cast<int64_t>(bytes)}, {.dtype = DType::u8, .device = kGpu});
        const int64_t piece = static_cast<int64_t>(cuda::kStagedCopyThreshold / 2);
        for (int64_t start = 0; start < host.numel(); start += piece) {  // uploaded by the plain path
            const int64_t length = std::min(piece, host.numel() - start);
            device_bytes.narrow(0, start, length).copy_(host.narrow(0, start, length));
        }
        EXPECT_TRUE(device_bytes.to_vector<uint8_t>() == pattern) << bytes << " bytes";
    }
}

TEST(CudaStagedCopy, RoundTripsOnASideStreamAreBitExact) {
    REQUIRE_GPU();
    const Stream side = Stream::create(0);
    StreamGuard guard(side);
    for (const size_t bytes : staging_sizes()) {
        const std::vector<uint8_t> pattern = byte_pattern(bytes);
        EXPECT_TRUE(Tensor::from_vector(pattern, {static_cast<int64_t>(bytes)}, kGpu).to_vector<uint8_t>() == pattern)
            << bytes << " bytes";
    }
}

TEST(CudaStagedCopy, TheSourceMayBeReusedAsSoonAsTheCopyReturns) {
    REQUIRE_GPU();
    const size_t bytes = 3 * cuda::kStagingChunkBytes + 5;
    std::vector<uint8_t> source = byte_pattern(bytes);
    const std::vector<uint8_t> expected = source;
    const Tensor device_bytes = Tensor::empty({static_cast<int64_t>(bytes)}, {.dtype = DType::u8, .device = kGpu});
    cuda::copy_bytes(device_bytes.raw_data(), source.data(), bytes, cuda::CopyKind::host_to_device, 0);
    std::fill(source.begin(), source.end(), uint8_t{0});  // the copy must not see this
    EXPECT_TRUE(device_bytes.to_vector<uint8_t>() == expected);
}

TEST(CudaStagedCopy, PinnedHostMemoryCopiesDirectly) {
    REQUIRE_GPU();
    const size_t bytes = 2 * cuda::kStagingChunkBytes + 77;
    const std::vector<uint8_t> pattern = byte_pattern(bytes);
    uint8_t* pinned = nullptr;
    ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), bytes, cudaHostAllocDefault), cudaSuccess);
    std::memcpy(pinned, pattern.data(), bytes);
    const Tensor device_bytes = Tensor::empty({static_cast<int64_t>(bytes)}, {.dtype = DType::u8, .device = kGpu});
    cuda::copy_bytes(device_bytes.raw_data(), pinned, bytes, cuda::CopyKind::host_to_device, 0);
    std::memset(pinned, 0, bytes);
    cuda::copy_bytes(pinned, device_bytes.raw_data(), bytes, cuda::CopyKind::device_to_host, 0);
    EXPECT_EQ(std::memcmp(pinned, pattern.data(), bytes), 0);
    cudaFreeHost(pinned);
}

// Device copies in every layout the runtime meets — dense (one memcpy), converting, an expanded scalar
// (the gradient of sum()), a broadcast row, transposed, narrowed, stepped and permuted views (with
// short inner runs, and runs of 16 or more that a warp copies), and a
// strided destination — give the CPU copy's values exactly; so do fills of dense and strided views.
TEST(CudaCopy, EveryLayoutGivesTheCpuValues) {
    REQUIRE_GPU();
    const Tensor base = Tensor::randn({6, 5, 4, 3});
    const Tensor big = Tensor::randn({1000003});
    const Tensor scalar = Tensor::scalar(2.5);
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> views = {
        {"dense", [](const Tensor& t) { return t; }},
        {"transposed", [](const Tensor& t) { return t.transpose(1, 3); }},
        {"narrowed", [](const Tensor& t) { return t.narrow(1, 1, 3); }},
        {"stepped", [](const Tensor& t) { return t.slice(0, 0, 6, 2); }},
        {"permuted", [](const Tensor& t) { return t.permute({2, 0, 3, 1}); }},
        {"broadcast row", [](const Tensor& t) { return t.narrow(0, 2, 1).expand({6, 5, 4, 3}); }},
    };
    for (const auto& [name, view] : views) {
        SCOPED_TRACE(name);
        const Tensor expected = view(base).contiguous();
        for (const DType dtype : {DType::f32, DType::f64}) {
            Tensor out = Tensor::empty(expected.shape(), {.dtype = dtype, .device = kGpu});
            copy_into(out, view(base.to(kGpu)));
            EXPECT_EQ(out.to(Device::cpu()).to(DType::f32).to_vector<float>(), expected.to_vector<float>());
        }
    }
    {
        SCOPED_TRACE("runs of 16 or more contiguous on both sides (one warp per run)");
        const Tensor wide = Tensor::randn({4, 6, 40});
        const Tensor device_wide = wide.to(kGpu);
        // Each view is taken the same way of the host tensor (for the expected values) and of its copy on the GPU.
        const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> cases = {
            {"heads permuted", [](const Tensor& t) { return t.permute({1, 0, 2}); }},
            {"narrowed run", [](const Tensor& t) { return t.narrow(2, 3, 20); }},
            {"permuted and narrowed", [](const Tensor& t) { return t.permute({1, 0, 2}).narrow(2, 5, 33); }}};
        for (const auto& [name, view_of] : cases) {
            SCOPED_TRACE(name);
            const Tensor expected = view_of(wide).contiguous();
            const Tensor device_view = view_of(device_wide);
            for (const DType dtype : {DType::f32, DType::f64}) {
                Tensor out = Tensor::empty(expected.shape(), {.dtype = dtype, .device = kGpu});
                copy_into(out, device_view);
                EXPECT_EQ(out.to(Device::cpu()).to(DType::f32).to_vector<float>(), expected.to_vector<float>());
            }
        }
    }
    {
        SCOPED_TRACE("large dense and converting");
        Tensor same = Tensor::empty({1000003}, {.device = kGpu}), wider = Tensor::empty({1000003}, {.dtype = DType::f64, .device = kGpu});
        copy_into(same, big.to(kGpu));
        copy_into(wider, big.to(kGpu));
        EXPECT_EQ(same.to(Device::cpu()).to_vector<float>(), big.to_vector<float>());
        EXPECT_EQ(wider.to(Device::cpu()).to(DType::f32).to_vector<float>(), big.to_vector<float>());
    }
    {
        SCOPED_TRACE("expanded scalar");
        for (const int64_t count : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
            Tensor out = Tensor::empty({count}, {.dtype = DType::f64, .device = kGpu});
            copy_into(out, scalar.to(kGpu).expand({count}));
            const std::vector<double> values = out.to(Device::cpu()).to_vector<double>();
            EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](double v) { return v == 2.5; })) << count;
            // the same dtype into a range starting 4 bytes past a 16-byte boundary, the elements around it kept
            Tensor around = Tensor::zeros({count + 2}, {.device = kGpu});
            copy_into(around.narrow(0, 1, count), scalar.to(kGpu).expand({count}));
            const std::vector<float> floats = around.to(Device::cpu()).to_vector<float>();
            EXPECT_EQ(floats.front(), 0.0f);
            EXPECT_EQ(floats.back(), 0.0f);
            EXPECT_TRUE(std::all_of(floats.begin() + 1, floats.end() - 1, [](float v) { return v == 2.5f; })) << count;
        }
    }
    {
        SCOPED_TRACE("strided destination and fills");
        Tensor out = Tensor::zeros({5, 6}, {.device = kGpu});
        copy_into(out.t(), base.narrow(2, 0, 1).narrow(3, 0, 1).reshape({6, 5}).to(kGpu));
        EXPECT_EQ(out.to(Device::cpu()).to_vector<float>(),
                  base.narrow(2, 0, 1).narrow(3, 0, 1).reshape({6, 5}).t().contiguous().to_vector<float>());
        Tensor filled = Tensor::zeros({4, 6}, {.device = kGpu});
        {
            NoGradGuard no_grad;
            filled.narrow(1, 2, 3).fill_(1.5);
        }
        std::vector<float> expected(24, 0.0f);
        for (int r = 0; r < 4; ++r)
            for (int c = 2; c < 5; ++c) expected[r * 6 + c] = 1.5f;
        EXPECT_EQ(filled.to(Device::cpu()).to_vector<float>(), expected);
        Tensor dense = Tensor::empty({1000003}, {.device = kGpu});
        dense.fill_(-3.0);
        const std::vector<float> values = dense.to(Device::cpu()).to_vector<float>();
        EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](float v) { return v == -3.0f; }));
    }
}

#endif  // KASMINA_WITH_CUDA
