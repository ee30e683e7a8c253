// Matrix products on the GPU through cuBLAS (float32 and float64; TF32 only when the process opts
// in with kasmina::set_allow_tf32(true), like torch.backends.cuda.matmul.allow_tf32). Row-major
// tensors are handed to column-major cuBLAS as their transposes: C = A B  <=>  C^T = B^T A^T.
// linear with a bias runs as one cuBLASLt matmul with the bias epilogue (no separate bias pass).
// Large float32 products run on tensor cores at float32 accuracy instead (matmul_tf32x3.h).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/matmul_tf32x3.h"
#include "kernels/settings.h"

namespace kasmina::kernels::cuda {
namespace {

void check_cublas(cublasStatus_t status, const char* call) {
    if (status != CUBLAS_STATUS_SUCCESS)
        raise<DeviceError>(call, "cuBLAS failed: ", cublasGetStatusName(status), " (", static_cast<int>(status), "): ",
                           cublasGetStatusString(status));
}

// This thread's handle on the current device, bound to the current stream and math mode on every call.
cublasHandle_t handle() {
    const cublasHandle_t h = thread_device_handle<cublasHandle_t>(
        [] {
            cublasHandle_t created = nullptr;
            check_cublas(cublasCreate(&created), "cublasCreate");
            return created;
        },
        [](cublasHandle_t old) { cublasDestroy(old); });
    check_cublas(cublasSetMathMode(h, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    check_cublas(cublasSetStream(h, launch_stream()), "cublasSetStream");
    return h;
}

// How cuBLAS sees one row-major operand X [rows, cols] (strides row_stride, col_stride): as the
// column-major X^T with op N (row-major storage) or as X with op T (column-major storage).
struct Operand {
    cublasOperation_t op;
    int64_t ld;
};

Operand transposed_view(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
    if (col_stride == 1 || cols == 1) return {CUBLAS_OP_N, std::max<int64_t>({row_stride, cols, 1})};
    return {CUBLAS_OP_T, std::max<int64_t>({col_stride, rows, 1})};
}

template <typename T>
void gemm_strided_batched(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, const T* a,
                          int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T beta, T* c,
                          int64_t ldc, int64_t stride_c, int64_t batch) {
    const T alpha = 1;
    if constexpr (std::is_same_v<T, float>)
        check_cublas(cublasSgemmStridedBatched(handle(), op_a, op_b, m, n, k, &alpha, a, lda, stride_a, b, ldb, stride_b,
                                               &beta, c, ldc, stride_c, batch),
                     "cublasSgemmStridedBatched");
    else
        check_cublas(cublasDgemmStridedBatched(handle(), op_a, op_b, m, n, k, &alpha, a, lda, stride_a, b, ldb, stride_b,
                                               &beta, c, ldc, stride_c, batch),
                     "cublasDgemmStridedBatched");
}

// out [M, N] rows = bias (broadcast), before a gemm with beta = 1 adds x W^T.
template <typename T>
__global__ void fill_rows_kernel(T* out, const T* bias, int64_t bias_stride, int64_t rows, int64_t cols) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * cols;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i] = bias[(i % cols) * bias_stride];
}

// True when every matrix of t [..., rows, cols] is row-major (column stride 1, rows at least `cols`
// apart) or column-major: the layouts cuBLAS reads with a leading dimension. Anything else
// (expanded gradients with stride 0, overlapping or sliced-every-other views) is copied first.
bool gemm_layout(const Tensor& t) {
    const int64_t rows = t.size(-2), cols = t.size(-1), row_stride = t.stride(-2), col_stride = t.stride(-1);
    const bool row_major = (col_stride == 1 || cols == 1) && (row_stride >= cols || rows == 1);
    const bool column_major = (row_stride == 1 || rows == 1) && (col_stride >= rows || cols == 1);
    return row_major || column_major;
}

Tensor gemm_ready(const Tensor& t) { return gemm_layout(t) ? t : t.detach().contiguous(); }

// The last two dimensions of t [..., rows, cols] (and the first, if three) as the tensor-core GEMM reads them.
GemmOperand gemm_operand(const Tensor& t) {
    return {static_cast<const float*>(t.raw_data()), t.stride(-2), t.stride(-1), t.dim() == 3 ? t.stride(0) : 0};
}

// The float32 products that run on tensor cores at float32 accuracy: asked for, TF32 not opted into
// (then cuBLAS's TF32 is faster), and a shape and layout the kernel takes.
bool on_tensor_cores(const GemmOperand& a, const GemmOperand& b, int64_t m, int64_t n, int64_t k, int64_t batch) {
    return matmul_tensor_cores() && !allow_tf32() && tf32x3_gemm_applies(a, b, m, n, k, batch);
}

void require_floating(const Tensor& t, const char* op) {
    if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
        raise<DTypeError>(op, "the CUDA backend multiplies float32 and float64 matrices, got ", t.describe());
}

// cuBLASLt for out^T [N, M] = op(W) x^T + bias: a handle per thread and device, algorithms cached per shape.
cublasLtHandle_t lt_handle() {
    return thread_device_handle<cublasLtHandle_t>(
        [] {
            cublasLtHandle_t created = nullptr;
            check_cublas(cublasLtCreate(&created), "cublasLtCreate");
            return created;
        },
        [](cublasLtHandle_t old) { cublasLtDestroy(old); });
}

// The largest power of two (up to 256) that divides the address: what an algorithm may assume.
uint32_t alignment_of(const void* pointer) {
    const auto address = reinterpret_cast<uintptr_t>(pointer);
    uint32_t alignment = 256;
    while (alignment > 1 && address % alignment != 0) alignment /= 2;
    return alignment;
}

constexpr size_t kLtWorkspaceBytes = size_t{8} << 20;

// Owns the descriptors of one matmul; destroys them however the call ends.
struct LtMatmul {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    ~LtMatmul() {
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
};

// Queues out = x W^T + bias with the bias epilogue; false (nothing queued) when cuBLASLt offers no
// algorithm for these operands or the bias is not 16-byte aligned, so the caller takes the plain path.
template <typename T>
bool linear_with_bias_epilogue(const Operand& w, const T* weight, const T* x, const T* bias, T* out, int64_t m,
                               int64_t n, int64_t k) {
    if (alignment_of(bias) < 16) return false;
    constexpr cudaDataType type = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F;
    const cublasComputeType_t compute = std::is_same_v<T, float>
                                            ? (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F)
                                            : CUBLAS_COMPUTE_64F;
    LtMatmul matmul;
    check_cublas(cublasLtMatmulDescCreate(&matmul.desc, compute, type), "cublasLtMatmulDescCreate");
    const cublasOperation_t op_b = CUBLAS_OP_N;
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    auto set = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, size_t size) {
        check_cublas(cublasLtMatmulDescSetAttribute(matmul.desc, attribute, value, size), "cublasLtMatmulDescSetAttribute");
    };
    set(CUBLASLT_MATMUL_DESC_TRANSA, &w.op, sizeof(w.op));
    set(CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b));
    set(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
    set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias));
    // Stored shapes (before the op), column-major: W as [K, N] (op T) or [N, K] (op N); x^T [K, M]; out^T [N, M].
    const bool w_transposed = w.op == CUBLAS_OP_T;
    check_cublas(cublasLtMatrixLayoutCreate(&matmul.a, type, w_transposed ? k : n, w_transposed ? n : k, w.ld),
                 "cublasLtMatrixLayoutCreate");
    check_cublas(cublasLtMatrixLayoutCreate(&matmul.b, type, k, m, k), "cublasLtMatrixLayoutCreate");
    check_cublas(cublasLtMatrixLayoutCreate(&matmul.d, type, n, m, n), "cublasLtMatrixLayoutCreate");

    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    const uint32_t align_a = alignment_of(weight), align_b = alignment_of(x), align_d = alignment_of(out);
    using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t, size_t>;
    const Key key{device, m, n, k, w.ld, static_cast<int>(w.op), allow_tf32(), align_a, align_b, align_d, sizeof(T)};
    static std::mutex mutex;
    static std::map<Key, std::optional<cublasLtMatmulAlgo_t>> algorithms;
    std::optional<cublasLtMatmulAlgo_t> algorithm;
    {
        std::lock_guard lock(mutex);
        const auto found = algorithms.find(key);
        if (found != algorithms.end()) {
            algorithm = found->second;
        } else {
            cublasLtMatmulPreference_t preference = nullptr;
            check_cublas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
            const uint64_t workspace = kLtWorkspaceBytes;
            const uint32_t alignments[] = {align_a, align_b, align_d, align_d};
            const cublasLtMatmulPreferenceAttributes_t which[] = {
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
            cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
                preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
            for (int i = 0; i < 4 && status == CUBLAS_STATUS_SUCCESS; ++i)
                status = cublasLtMatmulPreferenceSetAttribute(preference, which[i], &alignments[i], sizeof(uint32_t));
            cublasLtMatmulHeuristicResult_t result{};
            int count = 0;
            if (status == CUBLAS_STATUS_SUCCESS)
                status = cublasLtMatmulAlgoGetHeuristic(lt_handle(), matmul.desc, matmul.a, matmul.b, matmul.d, matmul.d,
                                                        preference, 1, &result, &count);
            cublasLtMatmulPreferenceDestroy(preference);
            if (status == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS)
                algorithm = result.algo;
            algorithms.emplace(key, algorithm);
        }
    }
    if (!algorithm) return false;
    const Tensor workspace = Tensor::empty({static_cast<int64_t>(kLtWorkspaceBytes)},
                                           {.dtype = DType::u8, .device = Device::cuda(device)});
    const T alpha = 1, beta = 0;
    check_cublas(cublasLtMatmul(lt_handle(), matmul.desc, &alpha, weight, matmul.a, x, matmul.b, &beta, out, matmul.d, out,
                                matmul.d, &*algorithm, workspace.raw_data(), kLtWorkspaceBytes, launch_stream()),
                 "cublasLtMatmul");
    return true;
}

}  // namespace

void batched_matmul(const Tensor& a_in, const Tensor& b_in, const Tensor& out) {
    require_floating(a_in, "matmul");
    const Tensor a = gemm_ready(a_in), b = gemm_ready(b_in);
    const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
    if (out.numel() == 0) return;
    if (k == 0) {
        KASMINA_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.numel() * dtype_size(out.dtype()), launch_stream()));
        return;
    }
    if (a.dtype() == DType::f32) {
        const GemmOperand left = gemm_operand(a), right = gemm_operand(b);
        if (on_tensor_cores(left, right, m, n, k, batch)) {
            tf32x3_gemm(left, right, nullptr, static_cast<float*>(out.raw_data()), n, m * n, m, n, k, batch);
            return;
        }
    }
    // out^T [N, M] (column-major, ld N) = b^T [N, K] @ a^T [K, M]
    const Operand left = transposed_view(k, n, b.stride(1), b.stride(2));
    const Operand right = transposed_view(m, k, a.stride(1), a.stride(2));
    dispatch_floating(a.dtype(), "matmul", [&]<typename T>() {
        gemm_strided_batched<T>(left.op, right.op, n, m, k, static_cast<const T*>(b.raw_data()), left.ld, b.stride(0),
                                static_cast<const T*>(a.raw_data()), right.ld, a.stride(0), T(0),
                                static_cast<T*>(out.raw_data()), n, m * n, batch);
    });
}

void linear(const Tensor& x, const Tensor& weight_in, const Tensor& bias, const Tensor& out) {
    require_floating(x, "linear");
    const Tensor weight = gemm_ready(weight_in);
    const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
    if (out.numel() == 0) return;
    if (x.dtype() == DType::f32 && k > 0 && (!bias.defined() || bias.stride(0) == 1)) {
        // out [M, N] = x [M, K] W^T, with W^T's element (k, n) at weight[n][k].
        const GemmOperand left = gemm_operand(x);
        const GemmOperand right{static_cast<const float*>(weight.raw_data()), weight.stride(1), weight.stride(0), 0};
        if (on_tensor_cores(left, right, m, n, k, 1)) {
            tf32x3_gemm(left, right, bias.defined() ? static_cast<const float*>(bias.raw_data()) : nullptr,
                        static_cast<float*>(out.raw_data()), n, m * n, m, n, k, 1);
            return;
        }
    }
    dispatch_floating(x.dtype(), "linear", [&]<typename T>() {
        T* out_data = static_cast<T*>(out.raw_data());
        // W^T [K, N] as a row-major view: W [N, K] row-major is W^T column-major (op T).
        const Operand w = transposed_view(k, n, weight.stride(1), weight.stride(0));
        if (bias.defined() && k > 0 && bias.stride(0) == 1 &&
            linear_with_bias_epilogue<T>(w, static_cast<const T*>(weight.raw_data()), static_cast<const T*>(x.raw_data()),
                                         static_cast<const T*>(bias.raw_data()), out_data, m, n, k))
            return;
        if (bias.defined())
            fill_rows_kernel<T><<<grid_for(m * n), kThreads, 0, launch_stream()>>>(
                out_data, static_cast<const T*>(bias.raw_data()), bias.stride(0), m, n);
        else if (k == 0)
            KASMINA_CUDA_CHECK(cudaMemsetAsync(out_data, 0, out.numel() * sizeof(T), launch_stream()));
        check_launch("linear");
        if (k == 0) return;
        // out^T [N, M] = W [N, K] @ x^T [K, M]
        gemm_strided_batched<T>(w.op, CUBLAS_OP_N, n, m, k, static_cast<const T*>(weight.raw_data()), w.ld, 0,
                                static_cast<const T*>(x.raw_data()), k, 0, bias.defined() ? T(1) : T(0), out_data, n,
                                m * n, 1);
    });
}

}  // namespace kasmina::kernels::cuda
