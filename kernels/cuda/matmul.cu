// Matrix products on the GPU through cuBLAS (float32 and float64; TF32 only when the process opts
// in with kasmina::set_allow_tf32(true), like torch.backends.cuda.matmul.allow_tf32). Row-major
// tensors are handed to column-major cuBLAS as their transposes: C = A B  <=>  C^T = B^T A^T.
#include <cublas_v2.h>

#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/settings.h"

namespace kasmina::kernels::cuda {
namespace {

void check_cublas(cublasStatus_t status, const char* call) {
    if (status != CUBLAS_STATUS_SUCCESS)
        raise<DeviceError>(call, "cuBLAS failed: ", cublasGetStatusName(status), " (", static_cast<int>(status), "): ",
                           cublasGetStatusString(status));
}

// One handle per device, created on first use and kept for the process; bound to the current stream
// on every call.
cublasHandle_t handle() {
    static std::mutex mutex;
    static std::vector<cublasHandle_t> handles;
    int device = 0;
    KASMINA_CUDA_CHECK(cudaGetDevice(&device));
    std::lock_guard lock(mutex);
    if (static_cast<int>(handles.size()) <= device) handles.resize(device + 1, nullptr);
    if (handles[device] == nullptr) check_cublas(cublasCreate(&handles[device]), "cublasCreate");
    check_cublas(cublasSetMathMode(handles[device], allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                 "cublasSetMathMode");
    check_cublas(cublasSetStream(handles[device], launch_stream()), "cublasSetStream");
    return handles[device];
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

void require_floating(const Tensor& t, const char* op) {
    if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
        raise<DTypeError>(op, "the CUDA backend multiplies float32 and float64 matrices, got ", t.describe());
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
    dispatch_floating(x.dtype(), "linear", [&]<typename T>() {
        T* out_data = static_cast<T*>(out.raw_data());
        if (bias.defined())
            fill_rows_kernel<T><<<grid_for(m * n), kThreads, 0, launch_stream()>>>(
                out_data, static_cast<const T*>(bias.raw_data()), bias.stride(0), m, n);
        else if (k == 0)
            KASMINA_CUDA_CHECK(cudaMemsetAsync(out_data, 0, out.numel() * sizeof(T), launch_stream()));
        check_launch("linear");
        if (k == 0) return;
        // out^T [N, M] = W [N, K] @ x^T [K, M]; W [N, K] row-major is W^T column-major: op T.
        const Operand w = transposed_view(k, n, weight.stride(1), weight.stride(0));  // W^T [K, N] as a row-major view
        gemm_strided_batched<T>(w.op, CUBLAS_OP_N, n, m, k, static_cast<const T*>(weight.raw_data()), w.ld, 0,
                                static_cast<const T*>(x.raw_data()), k, 0, bias.defined() ? T(1) : T(0), out_data, n,
                                m * n, 1);
    });
}

}  // namespace kasmina::kernels::cuda
