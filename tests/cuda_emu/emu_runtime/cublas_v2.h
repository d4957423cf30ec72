// The cuBLAS calls darknet_src makes, for the emulated CUDA build: SGEMM
// (column-major, as cuBLAS) through the engine's own CPU GEMM (gemm.h),
// which the library being built contains, on the handle's stream.
#ifndef DN_EMU_CUBLAS_V2_H
#define DN_EMU_CUBLAS_V2_H

#include "cuda_runtime.h"

extern "C" {
#include "gemm.h"
}

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
struct dn_emu_blas { cudaStream_t stream; };
typedef dn_emu_blas *cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = new dn_emu_blas{nullptr};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

// column-major C (m x n) = alpha op(A) op(B) + beta C is row-major
// C^T (n x m) = alpha op(B)^T op(A)^T + beta C^T: the stored arrays, read
// row-major, with B first
inline cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                  int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                                  const float *beta, float *C, int ldc)
{
    // cuBLAS's argument checks: the leading dimensions hold a column of op(A) / op(B) / C
    int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
    if (!handle || m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    // alpha and beta are read now (host pointer mode), the matrices when the handle's stream runs it
    float a = *alpha, b = *beta;
    dn_emu_enqueue("cublasSgemm", handle->stream, [=] {
        dn_gemm(NULL, transb == CUBLAS_OP_T, transa == CUBLAS_OP_T, n, m, k, a, B, ldb, A, lda, b, C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                cublasOperation_t transb, int m, int n, int k, const float *alpha,
                                                const float *A, int lda, long long stride_a, const float *B, int ldb,
                                                long long stride_b, const float *beta, float *C, int ldc,
                                                long long stride_c, int count)
{
    if (count < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < count; i++) {
        cublasStatus_t s = cublasSgemm(handle, transa, transb, m, n, k, alpha, A + i * stride_a, lda,
                                       B + i * stride_b, ldb, beta, C + i * stride_c, ldc);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

#endif
