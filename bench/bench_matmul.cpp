// Float32 GEMMs on the GPU at the BENCHMARKS.md mha projection shapes ([32 x 512 tokens, 1024] by
// [1024, 1024] weights): the tensor-core GEMM (3xTF32, float32 accuracy) against cuBLAS SGEMM in the
// three layouts a linear layer's step uses (x W^T forward, dY W and dY^T X backward).
// Counter: TFLOP/s (2 M N K per product).
#include <benchmark/benchmark.h>

#include "kasmina.h"
#include "kernels/settings.h"

using namespace kasmina;

namespace {

enum class Product { forward, input_gradient, weight_gradient };

void BM_Gemm(benchmark::State& state, Product product, bool tensor_cores) {
    if (!cuda_is_available()) return state.SkipWithError("no CUDA device");
    const int64_t tokens = 32 * 512, features = 1024;
    const Device gpu = Device::cuda();
    const Tensor x = Tensor::randn({tokens, features}).to(gpu), w = Tensor::randn({features, features}).to(gpu);
    const Tensor dy = Tensor::randn({tokens, features}).to(gpu);
    set_matmul_tensor_cores(tensor_cores);
    auto step = [&] {
        switch (product) {
            case Product::forward: return linear(x, w);
            case Product::input_gradient: return matmul(dy, w);
            case Product::weight_gradient: return matmul(dy.t(), x);
        }
        return Tensor();
    };
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) step();
    synchronize(gpu);
    for (auto _ : state) {
        benchmark::DoNotOptimize(step());
        synchronize(gpu);
    }
    set_matmul_tensor_cores(true);
    const double flop = 2.0 * tokens * features * features;
    state.counters["TFLOP/s"] = benchmark::Counter(flop * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Gemm, forward_tensor_cores, Product::forward, true)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Gemm, forward_sgemm, Product::forward, false)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Gemm, input_gradient_tensor_cores, Product::input_gradient, true)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Gemm, input_gradient_sgemm, Product::input_gradient, false)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Gemm, weight_gradient_tensor_cores, Product::weight_gradient, true)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Gemm, weight_gradient_sgemm, Product::weight_gradient, false)->Unit(benchmark::kMicrosecond)->MinTime(0.3);
