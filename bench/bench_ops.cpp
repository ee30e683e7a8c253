// CPU op benchmarks at the BENCHMARKS.md CPU sizes: matmul/linear (x[256,512] -> 512), softmax,
// elementwise and reductions over [2048,512]; forward alone and forward + backward. On the GPU (skipped
// without one): the host's cost of queueing small pieces of work (no sync inside the loop), the part of
// a layer's latency an idle GPU waits for.
#include <benchmark/benchmark.h>

#include "kasmina.h"

#ifdef KASMINA_WITH_CUDA
#include <cuda_runtime.h>

#include "runtime/cuda/stream.h"
#endif

using namespace kasmina;

namespace {

void set_bytes(benchmark::State& state, int64_t bytes) { state.SetBytesProcessed(state.iterations() * bytes); }

void BM_Matmul(benchmark::State& state) {
    const Tensor a = Tensor::randn({256, 512}), b = Tensor::randn({512, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(matmul(a, b));
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 256 * 512 * 512 * state.iterations(), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul)->Unit(benchmark::kMicrosecond);

void BM_LinearForward(benchmark::State& state) {
    const Tensor x = Tensor::randn({256, 512}), w = Tensor::randn({512, 512}), b = Tensor::randn({512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(linear(x, w, b));
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 256 * 512 * 512 * state.iterations(), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_LinearForward)->Unit(benchmark::kMicrosecond);

void BM_LinearForwardBackward(benchmark::State& state) {
    Tensor x = Tensor::randn({256, 512}).set_requires_grad(true);
    Tensor w = Tensor::randn({512, 512}).set_requires_grad(true), b = Tensor::randn({512}).set_requires_grad(true);
    for (auto _ : state) {
        x.set_grad({});
        w.set_grad({});
        b.set_grad({});
        sum(linear(x, w, b)).backward();
    }
}
BENCHMARK(BM_LinearForwardBackward)->Unit(benchmark::kMicrosecond);

void BM_Softmax(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(softmax(x, -1));
    set_bytes(state, 2 * x.numel() * 4);
}
BENCHMARK(BM_Softmax)->Unit(benchmark::kMicrosecond);

void BM_SoftmaxForwardBackward(benchmark::State& state) {
    Tensor x = Tensor::randn({2048, 512}).set_requires_grad(true);
    const Tensor grad = Tensor::randn({2048, 512});
    for (auto _ : state) {
        x.set_grad({});
        softmax(x, -1).backward(grad);
    }
}
BENCHMARK(BM_SoftmaxForwardBackward)->Unit(benchmark::kMicrosecond);

void BM_Add(benchmark::State& state) {
    const Tensor a = Tensor::randn({2048, 512}), b = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(a + b);
    set_bytes(state, 3 * a.numel() * 4);
}
BENCHMARK(BM_Add)->Unit(benchmark::kMicrosecond);

void BM_AddBroadcastRow(benchmark::State& state) {
    const Tensor a = Tensor::randn({2048, 512}), b = Tensor::randn({512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(a + b);
    set_bytes(state, 2 * a.numel() * 4);
}
BENCHMARK(BM_AddBroadcastRow)->Unit(benchmark::kMicrosecond);

void BM_Mul(benchmark::State& state) {
    const Tensor a = Tensor::randn({2048, 512}), b = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(a * b);
    set_bytes(state, 3 * a.numel() * 4);
}
BENCHMARK(BM_Mul)->Unit(benchmark::kMicrosecond);

void BM_Gelu(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(gelu(x));
    set_bytes(state, 2 * x.numel() * 4);
}
BENCHMARK(BM_Gelu)->Unit(benchmark::kMicrosecond);

void BM_Relu(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(relu(x));
    set_bytes(state, 2 * x.numel() * 4);
}
BENCHMARK(BM_Relu)->Unit(benchmark::kMicrosecond);

void BM_GeluForwardBackward(benchmark::State& state) {
    Tensor x = Tensor::randn({2048, 512}).set_requires_grad(true);
    const Tensor grad = Tensor::randn({2048, 512});
    for (auto _ : state) {
        x.set_grad({});
        gelu(x).backward(grad);
    }
}
BENCHMARK(BM_GeluForwardBackward)->Unit(benchmark::kMicrosecond);

void BM_SumLastDim(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(sum(x, {-1}));
    set_bytes(state, x.numel() * 4);
}
BENCHMARK(BM_SumLastDim)->Unit(benchmark::kMicrosecond);

void BM_SumFirstDim(benchmark::State& state) {
    const Tensor x = Tensor::randn({2048, 512});
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(sum(x, {0}));
    set_bytes(state, x.numel() * 4);
}
BENCHMARK(BM_SumFirstDim)->Unit(benchmark::kMicrosecond);

void BM_CrossEntropyForwardBackward(benchmark::State& state) {
    Tensor logits = Tensor::randn({256, 10}).set_requires_grad(true);
    Generator generator(1);
    const Tensor target = clamp(Tensor::rand({256}, {.dtype = DType::f64}, &generator) * 10.0, 0.0, 9.0).to(DType::i64);
    for (auto _ : state) {
        logits.set_grad({});
        cross_entropy(logits, target).backward();
    }
}
BENCHMARK(BM_CrossEntropyForwardBackward)->Unit(benchmark::kMicrosecond);

enum class HostStep { driver_memset, allocate, fill, add, layer_norm, layer_norm_module };

void BM_EnqueueCuda(benchmark::State& state, HostStep step) {
    if (!cuda_is_available()) return state.SkipWithError("no CUDA device");
    const Device gpu = Device::cuda();
    const Tensor x = Tensor::randn({64, 1024}).to(gpu), w = Tensor::ones({1024}).to(gpu), b = Tensor::zeros({1024}).to(gpu);
    Tensor target = Tensor::zeros({64, 1024}).to(gpu);
    nn::LayerNorm module(Shape{1024});
    module.to(gpu);
    NoGradGuard no_grad;
    auto run = [&] {
        switch (step) {
            case HostStep::driver_memset:  // the CUDA runtime's own cost of queueing one operation
#ifdef KASMINA_WITH_CUDA
                cudaMemsetAsync(target.raw_data(), 0, 4, cuda::current_stream().raw());
#endif
                break;
            case HostStep::allocate: benchmark::DoNotOptimize(Tensor::empty({64, 1024}, {.device = gpu})); break;
            case HostStep::fill: target.fill_(1.0); break;
            case HostStep::add: benchmark::DoNotOptimize(x + x); break;
            case HostStep::layer_norm: benchmark::DoNotOptimize(layer_norm(x, {1024}, w, b)); break;
            case HostStep::layer_norm_module: benchmark::DoNotOptimize(module.forward(x)); break;
        }
    };
    for (int i = 0; i < 3; ++i) run();
    synchronize(gpu);
    int64_t queued = 0;
    for (auto _ : state) {
        run();
        if (++queued % 64 == 0) synchronize(gpu);  // never let the queue fill (a full queue blocks the host)
    }
    synchronize(gpu);
}
BENCHMARK_CAPTURE(BM_EnqueueCuda, driver_memset, HostStep::driver_memset)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EnqueueCuda, allocate, HostStep::allocate)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EnqueueCuda, fill, HostStep::fill)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EnqueueCuda, add, HostStep::add)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EnqueueCuda, layer_norm, HostStep::layer_norm)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EnqueueCuda, layer_norm_module, HostStep::layer_norm_module)->Unit(benchmark::kMicrosecond);

}  // namespace
