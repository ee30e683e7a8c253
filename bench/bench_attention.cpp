// scaled_dot_product_attention at the BENCHMARKS.md mha shapes (GPU [32 x 16 heads, 512, 64], CPU
// [8 x 8 heads, 64, 32]), fused kernels against the composed matmul + softmax path on the same
// device, forward alone and forward + backward (gradients of q, k, v). Counters: TFLOP/s of the
// attention core (4 L S D per forward, 2.5x that for the backward's five products).
#include <benchmark/benchmark.h>

#include "kasmina.h"
#include "kernels/settings.h"

using namespace kasmina;

namespace {

struct Shape4 {
    int64_t batch, heads, length, head_dim;
    double forward_flop() const { return 4.0 * batch * heads * length * length * head_dim; }
};

void BM_Attention(benchmark::State& state, Device device, bool fused, bool backward, size_t workspace = 64 << 20,
                  bool tensor_cores = true) {
    if (device.is_cuda() && !cuda_is_available()) return state.SkipWithError("no CUDA device");
    const Shape4 s = device.is_cuda() ? Shape4{32, 16, 512, 64} : Shape4{8, 8, 64, 32};
    Tensor q = Tensor::randn({s.batch, s.heads, s.length, s.head_dim}).to(device).set_requires_grad(backward);
    Tensor k = Tensor::randn({s.batch, s.heads, s.length, s.head_dim}).to(device).set_requires_grad(backward);
    Tensor v = Tensor::randn({s.batch, s.heads, s.length, s.head_dim}).to(device).set_requires_grad(backward);
    set_fused_attention(fused);
    set_attention_tensor_cores(tensor_cores);
    const size_t default_workspace = attention_workspace_bytes();
    set_attention_workspace_bytes(workspace);
    auto step = [&] {
        if (!backward) {
            NoGradGuard no_grad;
            benchmark::DoNotOptimize(scaled_dot_product_attention(q, k, v));
            return;
        }
        q.set_grad({}), k.set_grad({}), v.set_grad({});
        sum(scaled_dot_product_attention(q, k, v)).backward();
    };
    for (int i = 0; i < 3; ++i) step();
    synchronize(device);
    for (auto _ : state) {
        step();
        synchronize(device);
    }
    set_fused_attention(true);
    set_attention_tensor_cores(true);
    set_attention_workspace_bytes(default_workspace);
    const double flop = s.forward_flop() * (backward ? 3.5 : 1.0);
    state.counters["TFLOP/s"] = benchmark::Counter(flop * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Attention, fused_forward_cuda, Device::cuda(), true, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_cuda_cores_cuda, Device::cuda(), true, false, 64 << 20, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, composed_forward_cuda, Device::cuda(), false, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_cuda, Device::cuda(), true, true)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
// On CUDA cores, the backward's workspace: chunks of 8, 32, 128, 512 heads' scores, and none (the tiled kernels).
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_cuda_cores_cuda, Device::cuda(), true, true, 64 << 20, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_workspace_16MiB_cuda, Device::cuda(), true, true, 16 << 20, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_workspace_256MiB_cuda, Device::cuda(), true, true, 256 << 20, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_workspace_1GiB_cuda, Device::cuda(), true, true, size_t{1} << 30, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, fused_forward_backward_tiled_cuda, Device::cuda(), true, true, 0, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, composed_forward_backward_cuda, Device::cuda(), false, true)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, forward_cpu, Device::cpu(), false, false)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK_CAPTURE(BM_Attention, forward_backward_cpu, Device::cpu(), false, true)->Unit(benchmark::kMicrosecond)->MinTime(0.5);
