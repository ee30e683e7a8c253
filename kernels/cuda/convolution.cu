// 2-D convolution on the GPU: forward, backward data, backward filter (+ bias gradient), by cuDNN or,
// for float32 geometries they take, by our implicit GEMMs on tensor cores (convolution_tf32x3.h) or,
// for 3x3 stride-1 convolutions, our fused Winograd kernels (convolution_winograd.h).
// The algorithm for each geometry and pass is chosen once by measurement and cached: cuDNN's search
// (PyTorch's benchmark mode, restricted to deterministic algorithms), then our kernels that apply
// timed against its winner (set_convolution_tensor_cores). Workspaces come from the caching allocator. cuDNN's
// float32 runs with FMA math (no TF32) unless kasmina::set_allow_tf32(true).
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/convolution_tf32x3.h"
#include "kernels/cuda/convolution_winograd.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/settings.h"

namespace kasmina::kernels::cuda {
namespace {

void check_cudnn(cudnnStatus_t status, const char* call) {
    if (status != CUDNN_STATUS_SUCCESS)
        raise<DeviceError>(call, "cuDNN failed: ", cudnnGetErrorString(status), " (", static_cast<int>(status), ")");
}

// This thread's handle on the current device, bound to the current stream on every call.
cudnnHandle_t handle() {
    const cudnnHandle_t h = thread_device_handle<cudnnHandle_t>(
        [] {
            cudnnHandle_t created = nullptr;
            check_cudnn(cudnnCreate(&created), "cudnnCreate");
            return created;
        },
        [](cudnnHandle_t old) { cudnnDestroy(old); });
    check_cudnn(cudnnSetStream(h, launch_stream()), "cudnnSetStream");
    return h;
}

cudnnDataType_t data_type(DType dtype, const char* op) {
    if (dtype == DType::f32) return CUDNN_DATA_FLOAT;
    if (dtype == DType::f64) return CUDNN_DATA_DOUBLE;
    raise<DTypeError>(op, "cuDNN convolution takes float32 or float64, got ", dtype_name(dtype));
}

// RAII owners of the three descriptors one convolution needs.
struct Descriptors {
    cudnnTensorDescriptor_t input = nullptr, output = nullptr, bias = nullptr;
    cudnnFilterDescriptor_t filter = nullptr;
    cudnnConvolutionDescriptor_t convolution = nullptr;

    Descriptors(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p, DType dtype, const char* op) {
        const cudnnDataType_t type = data_type(dtype, op);
        auto to_int = [](int64_t v) { return static_cast<int>(v); };
        check_cudnn(cudnnCreateTensorDescriptor(&input), "cudnnCreateTensorDescriptor");
        check_cudnn(cudnnCreateTensorDescriptor(&output), "cudnnCreateTensorDescriptor");
        check_cudnn(cudnnCreateTensorDescriptor(&bias), "cudnnCreateTensorDescriptor");
        check_cudnn(cudnnCreateFilterDescriptor(&filter), "cudnnCreateFilterDescriptor");
        check_cudnn(cudnnCreateConvolutionDescriptor(&convolution), "cudnnCreateConvolutionDescriptor");
        check_cudnn(cudnnSetTensor4dDescriptor(input, CUDNN_TENSOR_NCHW, type, to_int(x[0]), to_int(x[1]), to_int(x[2]),
                                               to_int(x[3])),
                    "cudnnSetTensor4dDescriptor");
        check_cudnn(cudnnSetTensor4dDescriptor(output, CUDNN_TENSOR_NCHW, type, to_int(y[0]), to_int(y[1]), to_int(y[2]),
                                               to_int(y[3])),
                    "cudnnSetTensor4dDescriptor");
        check_cudnn(cudnnSetTensor4dDescriptor(bias, CUDNN_TENSOR_NCHW, type, 1, to_int(y[1]), 1, 1),
                    "cudnnSetTensor4dDescriptor");
        check_cudnn(cudnnSetFilter4dDescriptor(filter, type, CUDNN_TENSOR_NCHW, to_int(w[0]), to_int(w[1]), to_int(w[2]),
                                               to_int(w[3])),
                    "cudnnSetFilter4dDescriptor");
        check_cudnn(cudnnSetConvolution2dDescriptor(convolution, to_int(p.padding[0]), to_int(p.padding[1]),
                                                    to_int(p.stride[0]), to_int(p.stride[1]), to_int(p.dilation[0]),
                                                    to_int(p.dilation[1]), CUDNN_CROSS_CORRELATION, type),
                    "cudnnSetConvolution2dDescriptor");
        check_cudnn(cudnnSetConvolutionGroupCount(convolution, to_int(p.groups)), "cudnnSetConvolutionGroupCount");
        const cudnnMathType_t math = dtype == DType::f32 && allow_tf32() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
        check_cudnn(cudnnSetConvolutionMathType(convolution, math), "cudnnSetConvolutionMathType");
    }
    ~Descriptors() {
        cudnnDestroyTensorDescriptor(input);
        cudnnDestroyTensorDescriptor(output);
        cudnnDestroyTensorDescriptor(bias);
        cudnnDestroyFilterDescriptor(filter);
        cudnnDestroyConvolutionDescriptor(convolution);
    }
    Descriptors(const Descriptors&) = delete;
    Descriptors& operator=(const Descriptors&) = delete;
};

// cuDNN's side of one pass, set up on first use: a pass that runs our kernel never touches it.
class CudnnPass {
public:
    CudnnPass(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p, DType dtype, const char* op)
        : x_(x), w_(w), y_(y), params_(p), dtype_(dtype), op_(op) {}
    const Descriptors& descriptors() {
        if (!descriptors_) descriptors_.emplace(x_, w_, y_, params_, dtype_, op_);
        return *descriptors_;
    }

private:
    Shape x_, w_, y_;
    Conv2dParams params_;
    DType dtype_;
    const char* op_;
    std::optional<Descriptors> descriptors_;
};

std::string geometry_key(const char* pass, const Shape& x, const Shape& w, const Conv2dParams& p, DType dtype) {
    int device = 0;
    cudaGetDevice(&device);
    return make_message(pass, device, dtype_name(dtype), shape_str(x), shape_str(w), p.stride[0], ",", p.stride[1], ",",
                        p.padding[0], ",", p.padding[1], ",", p.dilation[0], ",", p.dilation[1], ",", p.groups,
                        allow_tf32() ? "tf32" : "fp32", static_cast<int>(convolution_tensor_cores()),
                        convolution_winograd() ? "winograd" : "");
}

// Which kernel runs a pass: cuDNN's algorithm or one of ours.
enum class Kernel { cudnn, winograd, implicit_gemm };

struct Choice {
    int algorithm = 0;
    size_t workspace = 0;
    float milliseconds = 0;  // what the search measured for the chosen kernel
    Kernel kernel = Kernel::cudnn;
};

bool search_log() {
    static const bool log = [] {
        const char* value = std::getenv("KASMINA_CUDNN_SEARCH_LOG");
        return value != nullptr && std::string(value) == "1";
    }();
    return log;
}

// Whether our kernels are to be considered at all (set_convolution_tensor_cores, not with TF32).
bool our_kernels_wanted() {
    return convolution_tensor_cores() != ConvolutionTensorCores::off && !allow_tf32();
}

// The median of five timed runs of `run` on the current stream after one to warm up, in milliseconds.
template <typename Run>
float median_milliseconds(Run&& run) {
    const ::kasmina::cuda::Stream stream = ::kasmina::cuda::current_stream();
    ::kasmina::cuda::Event begin({.enable_timing = true}), end({.enable_timing = true});
    run();
    float samples[5];
    for (float& sample : samples) {
        begin.record(stream);
        run();
        end.record(stream);
        end.synchronize();
        sample = begin.elapsed_ms(end);
    }
    std::sort(std::begin(samples), std::end(samples));
    return samples[2];
}

// cuDNN's choice, or the fastest of our kernels that apply where it measured faster (against the time
// cuDNN's search gave its winner): Winograd where it applies, and the implicit GEMM, each timed, so a
// geometry where Winograd's tiles waste too much keeps the GEMM.
template <typename Winograd, typename Gemm>
Choice fastest(Choice cudnn, bool winograd_applies, Winograd&& winograd, bool gemm_applies, Gemm&& gemm,
               const char* op) {
    Choice best = cudnn;
    const auto consider = [&](bool applies, auto&& run, Kernel kernel, const char* name) {
        if (!applies) return;
        const float milliseconds = median_milliseconds(run);
        if (search_log())
            std::fprintf(stderr, "cudnn search %s: %s %.1f us against algo %d %.1f us\n", op, name, milliseconds * 1e3,
                         cudnn.algorithm, cudnn.milliseconds * 1e3);
        if (milliseconds < best.milliseconds) {
            best.kernel = kernel;
            best.milliseconds = milliseconds;
        }
    };
    consider(winograd_applies, winograd, Kernel::winograd, "Winograd on tensor cores");
    consider(gemm_applies, gemm, Kernel::implicit_gemm, "implicit GEMM on tensor cores");
    return best;
}

// The fastest algorithm cuDNN measures for this geometry (found once, then cached).
template <typename Find>
Choice choose(const std::string& key, Find&& find) {
    static std::mutex mutex;
    static std::map<std::string, Choice> cache;
    {
        std::lock_guard lock(mutex);
        if (const auto found = cache.find(key); found != cache.end()) return found->second;
    }
    const Choice choice = find();
    std::lock_guard lock(mutex);
    cache.emplace(key, choice);
    return choice;
}

// The fastest deterministic algorithm (results come sorted by time): the same inputs must give the
// same bits, so a wrapped layer equals its original and a resumed run repeats the interrupted one.
// KASMINA_CUDNN_SEARCH_LOG=1 prints each search's table (algorithm, status, time, workspace,
// determinism) to stderr: what the choice was made from.
template <typename Perf>
Choice best_of(const Perf* results, int count, const char* op) {
    const bool log = search_log();
    for (int i = 0; log && i < count; ++i)
        std::fprintf(stderr, "cudnn search %s: algo %d status %d %.1f us %zu bytes %s\n", op, static_cast<int>(results[i].algo),
                     static_cast<int>(results[i].status), results[i].time * 1e3, results[i].memory,
                     results[i].determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic");
    for (int i = 0; i < count; ++i)
        if (results[i].status == CUDNN_STATUS_SUCCESS && results[i].determinism == CUDNN_DETERMINISTIC)
            return {static_cast<int>(results[i].algo), results[i].memory, results[i].time};
    raise<DeviceError>(op, "cuDNN found no deterministic algorithm for this geometry");
}

Tensor workspace(size_t bytes) {
    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    return Tensor::empty({static_cast<int64_t>(bytes)}, {.dtype = DType::u8, .device = Device::cuda(device)});
}

// Runs one pass: our kernels (`winograd()` where it applies, else `gemm()`) always, or as the cached
// measurement of this geometry decided between them and cuDNN's choice. Only the cuDNN calls differ per
// pass: `search(descriptors, handle)` finds cuDNN's choice, `theirs(descriptors, handle, choice,
// workspace)` runs it.
template <typename Search, typename Winograd, typename Gemm, typename Theirs>
void run_pass(CudnnPass& cudnn, const std::string& key, bool winograd_applies, bool gemm_applies, Search&& search,
              Winograd&& winograd, Gemm&& gemm, Theirs&& theirs, const char* op) {
    const bool wanted = our_kernels_wanted();
    winograd_applies = winograd_applies && wanted;
    gemm_applies = gemm_applies && wanted;
    if (convolution_tensor_cores() == ConvolutionTensorCores::always) {
        if (winograd_applies) return winograd();
        if (gemm_applies) return gemm();
    }
    const Choice choice = choose(key, [&] {
        return fastest(search(cudnn.descriptors(), handle()), winograd_applies, winograd, gemm_applies, gemm, op);
    });
    if (choice.kernel == Kernel::winograd && winograd_applies) return winograd();
    if (choice.kernel == Kernel::implicit_gemm && gemm_applies) return gemm();
    const Tensor space = workspace(choice.workspace);
    theirs(cudnn.descriptors(), handle(), choice, space.raw_data());
}

// A dense [N, C, H, W] tensor as [N, C, H * W], the layout of the per-channel passes.
Tensor as_planes(const Tensor& t) {
    const Shape planes{t.size(0), t.size(1), t.size(2) * t.size(3)};
    return detail::make_view(t, planes, contiguous_strides(planes), t.offset());
}

template <typename T>
struct Scale {
    T one = 1, zero = 0;
};

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                    const Tensor& out) {
    CudnnPass cudnn(x.shape(), weight.shape(), out.shape(), params, x.dtype(), "conv2d");
    run_pass(
        cudnn, geometry_key("fwd", x.shape(), weight.shape(), params, x.dtype()),
        winograd_conv2d_forward_applies(x, weight, params, out), tf32x3_conv2d_forward_applies(x, weight, params, out),
        [](const Descriptors& d, cudnnHandle_t h) {
            cudnnConvolutionFwdAlgoPerf_t results[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
            int count = 0;
            check_cudnn(cudnnFindConvolutionForwardAlgorithm(h, d.input, d.filter, d.convolution, d.output,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, results),
                        "cudnnFindConvolutionForwardAlgorithm");
            return best_of(results, count, "conv2d");
        },
        [&] { winograd_conv2d_forward(x, weight, bias, params, out); },
        [&] { tf32x3_conv2d_forward(x, weight, bias, params, out); },
        [&](const Descriptors& d, cudnnHandle_t h, const Choice& choice, void* space) {
            dispatch_floating(x.dtype(), "conv2d", [&]<typename T>() {
                const Scale<T> s;
                check_cudnn(cudnnConvolutionForward(h, &s.one, d.input, x.raw_data(), d.filter, weight.raw_data(),
                                                    d.convolution, static_cast<cudnnConvolutionFwdAlgo_t>(choice.algorithm),
                                                    space, choice.workspace, &s.zero, d.output,
                                                    out.raw_data()),
                            "cudnnConvolutionForward");
            });
            // The bias by our packed per-channel pass, which starts from the output's end, the part the
            // convolution wrote last (still in L2). Against cudnnAddTensor, same H200 call: the conv2d
            // workload's forward 319-330 -> 300-302 us.
            if (bias.defined()) add_channel_bias(as_planes(out), bias);
        },
        "conv2d");
}

void conv2d_backward_data(const Tensor& grad_output, const Tensor& weight, const Conv2dParams& params,
                          const Tensor& grad_input) {
    CudnnPass cudnn(grad_input.shape(), weight.shape(), grad_output.shape(), params, grad_output.dtype(), "conv2d");
    run_pass(
        cudnn, geometry_key("bwd_data", grad_input.shape(), weight.shape(), params, grad_output.dtype()),
        winograd_conv2d_backward_data_applies(grad_output, weight, params, grad_input),
        tf32x3_conv2d_backward_data_applies(grad_output, weight, params, grad_input),
        [](const Descriptors& d, cudnnHandle_t h) {
            cudnnConvolutionBwdDataAlgoPerf_t results[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
            int count = 0;
            check_cudnn(cudnnFindConvolutionBackwardDataAlgorithm(h, d.filter, d.output, d.convolution, d.input,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, results),
                        "cudnnFindConvolutionBackwardDataAlgorithm");
            return best_of(results, count, "conv2d backward data");
        },
        [&] { winograd_conv2d_backward_data(grad_output, weight, params, grad_input); },
        [&] { tf32x3_conv2d_backward_data(grad_output, weight, params, grad_input); },
        [&](const Descriptors& d, cudnnHandle_t h, const Choice& choice, void* space) {
            dispatch_floating(grad_output.dtype(), "conv2d", [&]<typename T>() {
                const Scale<T> s;
                check_cudnn(cudnnConvolutionBackwardData(h, &s.one, d.filter, weight.raw_data(), d.output,
                                                         grad_output.raw_data(), d.convolution,
                                                         static_cast<cudnnConvolutionBwdDataAlgo_t>(choice.algorithm),
                                                         space, choice.workspace, &s.zero, d.input,
                                                         grad_input.raw_data()),
                            "cudnnConvolutionBackwardData");
            });
        },
        "conv2d backward data");
}

void conv2d_backward_weights(const Tensor& grad_output, const Tensor& x, const Conv2dParams& params,
                             const Tensor& grad_weight, const Tensor& grad_bias) {
    if (grad_weight.defined()) {
        CudnnPass cudnn(x.shape(), grad_weight.shape(), grad_output.shape(), params, x.dtype(), "conv2d");
        run_pass(
            cudnn, geometry_key("bwd_filter", x.shape(), grad_weight.shape(), params, x.dtype()),
            winograd_conv2d_backward_weights_applies(grad_output, x, params, grad_weight),
            tf32x3_conv2d_backward_weights_applies(grad_output, x, params, grad_weight),
            [](const Descriptors& d, cudnnHandle_t h) {
                cudnnConvolutionBwdFilterAlgoPerf_t results[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
                int count = 0;
                check_cudnn(cudnnFindConvolutionBackwardFilterAlgorithm(h, d.input, d.output, d.convolution, d.filter,
                                                                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count,
                                                                        results),
                            "cudnnFindConvolutionBackwardFilterAlgorithm");
                return best_of(results, count, "conv2d backward filter");
            },
            [&] { winograd_conv2d_backward_weights(grad_output, x, params, grad_weight); },
            [&] { tf32x3_conv2d_backward_weights(grad_output, x, params, grad_weight); },
            [&](const Descriptors& d, cudnnHandle_t h, const Choice& choice, void* space) {
                dispatch_floating(x.dtype(), "conv2d", [&]<typename T>() {
                    const Scale<T> s;
                    check_cudnn(cudnnConvolutionBackwardFilter(
                                    h, &s.one, d.input, x.raw_data(), d.output, grad_output.raw_data(), d.convolution,
                                    static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algorithm), space,
                                    choice.workspace, &s.zero, d.filter, grad_weight.raw_data()),
                                "cudnnConvolutionBackwardFilter");
                });
            },
            "conv2d backward filter");
    }
    // The bias gradient by our channel sums: cuDNN's cudnnConvolutionBackwardBias ran 64 blocks, ~200 us
    // on [64, 64, 56, 56] (H200, under ncu) for one read of the gradient.
    if (grad_bias.defined()) channel_totals(as_planes(grad_output), grad_bias);
}

}  // namespace kasmina::kernels::cuda
