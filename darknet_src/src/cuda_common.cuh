// Shared by the CUDA files: the per-network CUDA state, error handling that
// turns every failed call into a dn_status (never an exit), launch helpers
// and the row-major GEMM.
#ifndef DN_CUDA_COMMON_CUH
#define DN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_device.cuh"

extern "C" {
#include "cuda.h"
#include "error.h"
#include "layer.h"
#include "network.h"
}

#define DN_API_CPP extern "C" __attribute__((visibility("default")))

struct dn_gpu {
    int device;
    cudaStream_t stream;
    cudaStream_t copy_stream; // the next pass's input upload (made on first use)
    cudaEvent_t input_ready;  // recorded on copy_stream after that upload
    cublasHandle_t blas;
    void *dnn;                // cuDNN handle, made on first use (conv_cudnn.cu; NULL otherwise)
    void *dnn_workspace;      // cuDNN scratch, grown to the largest algorithm chosen
    size_t dnn_workspace_bytes;
    int dnn_measure;          // choose cuDNN algorithms by running them (PYDARKNET_CUDNN_FIND, default 1)
    dn_status error;          // first failure inside a layer (layer functions return void)
    char error_message[512];
};

const char *dn_cublas_name(cublasStatus_t s);

// Record a CUDA failure as the thread's error; returns DN_ERR_CUDA.
dn_status dn_cuda_fail(cudaError_t e, const char *call, const char *file, int line);
dn_status dn_cublas_fail(cublasStatus_t s, const char *call, const char *file, int line);

#define CUDA_TRY(call)                                                              \
    do {                                                                            \
        cudaError_t dn_e_ = (call);                                                 \
        if (dn_e_ != cudaSuccess) return dn_cuda_fail(dn_e_, #call, __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_TRY(call)                                                            \
    do {                                                                            \
        cublasStatus_t dn_s_ = (call);                                              \
        if (dn_s_ != CUBLAS_STATUS_SUCCESS)                                         \
            return dn_cublas_fail(dn_s_, #call, __FILE__, __LINE__);                \
    } while (0)

// In a layer (void): remember the first failure on the network's dn_gpu.
void dn_gpu_record(dn_gpu *gpu, dn_status status);
#define GPU_CHECK(gpu, call)                                                         \
    do {                                                                             \
        cudaError_t dn_e_ = (call);                                                  \
        if (dn_e_ != cudaSuccess)                                                    \
            dn_gpu_record((gpu), dn_cuda_fail(dn_e_, #call, __FILE__, __LINE__));    \
    } while (0)
#define GPU_LAUNCHED(gpu) GPU_CHECK((gpu), cudaGetLastError())

static inline unsigned int dn_blocks(size_t n, int threads = 256)
{
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535u * 16) blocks = 65535u * 16;  // grid-stride loops cover the rest
    return blocks ? (unsigned int)blocks : 1u;
}

// C = alpha * op(A) * op(B) + beta * C, row-major (darknet's gemm_gpu).
void dn_gemm_gpu(dn_gpu *gpu, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc);
// `count` such GEMMs, the i-th on A + i * stride_a, B + i * stride_b, C + i * stride_c
// (a stride of 0 shares that matrix); one cuBLAS strided-batched call
void dn_gemm_strided_gpu(dn_gpu *gpu, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                         int lda, long long stride_a, const float *B, int ldb, long long stride_b, float beta,
                         float *C, int ldc, long long stride_c, int count);

// ---- element-wise helpers (blas_kernels.cu) ----------------------------------------
void dn_fill_gpu(dn_gpu *gpu, float *x, size_t n, float value);
void dn_copy_gpu(dn_gpu *gpu, float *dst, const float *src, size_t n);
void dn_axpy_gpu(dn_gpu *gpu, float *y, float alpha, const float *x, size_t n);
void dn_scale_gpu(dn_gpu *gpu, float *x, size_t n, float alpha);
// out[j] += rows[0][j] + rows[1][j] + ... (rows of n floats, added in order)
void dn_add_rows_gpu(dn_gpu *gpu, float *out, const float *rows, int n_rows, size_t n);
void dn_add_bias_gpu(dn_gpu *gpu, float *out, const float *bias, int B, int C, int S);
void dn_scale_bias_gpu(dn_gpu *gpu, float *out, const float *scale, int B, int C, int S);
void dn_backward_bias_gpu(dn_gpu *gpu, float *bias_grad, const float *delta, int B, int C, int S);
void dn_activate_gpu(dn_gpu *gpu, float *x, size_t n, int activation);
void dn_gradient_gpu(dn_gpu *gpu, const float *y, size_t n, int activation, float *delta);
// im2col of `count` images (the i-th at im + i * im_image), each image's
// columns at col + i * col_image with rows col_ld apart (im2col_kernels.cuh)
void dn_im2col_images_gpu(dn_gpu *gpu, const float *im, size_t im_image, int count, int channels, int height,
                          int width, int ksize, int stride, int pad, float *col, size_t col_image, size_t col_ld);
// col2im of `count` images: image i's columns (darknet's layout) at col + i * col_image,
// added into the image at im + i * im_image
void dn_col2im_images_gpu(dn_gpu *gpu, const float *col, size_t col_image, int count, int channels, int height,
                          int width, int ksize, int stride, int pad, float *im, size_t im_image);
// count blocks of rows x width floats: dst[b * dst_block + r * dst_ld + x] = src[b * src_block + r * src_ld + x]
void dn_copy_blocks_gpu(dn_gpu *gpu, int count, int rows, int width, const float *src, size_t src_block,
                        size_t src_ld, float *dst, size_t dst_block, size_t dst_ld);
void dn_softmax_blocks_gpu(dn_gpu *gpu, const float *in, int n, int batch, int batch_offset,
                           int groups, int group_offset, int stride, float temp, float *out);
void dn_sgd_gpu(dn_gpu *gpu, float *param, float *grad, float *velocity, size_t n,
                float lr_over_batch, float momentum, float decay_times_batch);
// 1 when every value is finite
int dn_all_finite_gpu(dn_gpu *gpu, const float *x, size_t n);

// Host <-> device copies on the network's stream (synchronous for the host side).
dn_status dn_to_host(dn_gpu *gpu, float *host, const float *device, size_t n);
dn_status dn_to_device(dn_gpu *gpu, float *device, const float *host, size_t n);

#endif
