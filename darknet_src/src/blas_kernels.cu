// Element-wise and reduction kernels shared by the CUDA layers; each mirrors
// the CPU function of the same name in blas.c / activations.c / im2col.c.
#include "cuda_common.cuh"
#include "im2col_kernels.cuh"

extern "C" {
#include "activation_formulas.h"
}

#include <math.h>

// ---- fill, copy, axpy, scale -------------------------------------------------------

__global__ void fill_kernel(float *x, size_t n, float value) { GRID_STRIDE(i, n) x[i] = value; }
__global__ void axpy_kernel(float *y, float alpha, const float *x, size_t n) { GRID_STRIDE(i, n) y[i] += alpha * x[i]; }
__global__ void scale_kernel(float *x, size_t n, float alpha) { GRID_STRIDE(i, n) x[i] *= alpha; }

void dn_fill_gpu(dn_gpu *gpu, float *x, size_t n, float value)
{
    if (!n) return;
    if (value == 0.f) {
        GPU_CHECK(gpu, cudaMemsetAsync(x, 0, n * sizeof(float), gpu->stream));
        return;
    }
    fill_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(x, n, value);
    GPU_LAUNCHED(gpu);
}

void dn_copy_gpu(dn_gpu *gpu, float *dst, const float *src, size_t n)
{
    if (!n || dst == src) return;
    GPU_CHECK(gpu, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, gpu->stream));
}

void dn_axpy_gpu(dn_gpu *gpu, float *y, float alpha, const float *x, size_t n)
{
    if (!n) return;
    axpy_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(y, alpha, x, n);
    GPU_LAUNCHED(gpu);
}

void dn_scale_gpu(dn_gpu *gpu, float *x, size_t n, float alpha)
{
    if (!n) return;
    scale_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(x, n, alpha);
    GPU_LAUNCHED(gpu);
}

__global__ void add_rows_kernel(float *out, const float *rows, int n_rows, size_t n)
{
    GRID_STRIDE(i, n) {
        float sum = out[i];
        for (int r = 0; r < n_rows; r++) sum += rows[(size_t)r * n + i];
        out[i] = sum;
    }
}

void dn_add_rows_gpu(dn_gpu *gpu, float *out, const float *rows, int n_rows, size_t n)
{
    if (!n || n_rows < 1) return;
    add_rows_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(out, rows, n_rows, n);
    GPU_LAUNCHED(gpu);
}

// ---- biases -----------------------------------------------------------------------

__global__ void add_bias_kernel(float *out, const float *bias, int C, int S, size_t n)
{
    GRID_STRIDE(i, n) out[i] += bias[(i / S) % C];
}

__global__ void scale_bias_kernel(float *out, const float *scale, int C, int S, size_t n)
{
    GRID_STRIDE(i, n) out[i] *= scale[(i / S) % C];
}

// one block per channel: sum over batch and space (darknet's backward_bias)
__global__ void backward_bias_kernel(float *bias_grad, const float *delta, int B, int C, int S)
{
    int c = blockIdx.x;
    float sum = 0;
    for (int b = 0; b < B; b++) {
        const float *row = delta + ((size_t)b * C + c) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x) sum += row[s];
    }
    sum = dn_block_sum(sum);
    if (threadIdx.x == 0) bias_grad[c] += sum;
}

void dn_add_bias_gpu(dn_gpu *gpu, float *out, const float *bias, int B, int C, int S)
{
    size_t n = (size_t)B * C * S;
    add_bias_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(out, bias, C, S, n);
    GPU_LAUNCHED(gpu);
}

void dn_scale_bias_gpu(dn_gpu *gpu, float *out, const float *scale, int B, int C, int S)
{
    size_t n = (size_t)B * C * S;
    scale_bias_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(out, scale, C, S, n);
    GPU_LAUNCHED(gpu);
}

void dn_backward_bias_gpu(dn_gpu *gpu, float *bias_grad, const float *delta, int B, int C, int S)
{
    backward_bias_kernel<<<C, 256, 0, gpu->stream>>>(bias_grad, delta, B, C, S);
    GPU_LAUNCHED(gpu);
}

// ---- activations (darknet's, as activations.c) --------------------------------------

__global__ void activate_kernel(float *x, size_t n, int a) { GRID_STRIDE(i, n) x[i] = dn_activate_formula(x[i], a); }
__global__ void gradient_kernel(const float *y, size_t n, int a, float *delta)
{
    GRID_STRIDE(i, n) delta[i] *= dn_gradient_formula(y[i], a);
}

void dn_activate_gpu(dn_gpu *gpu, float *x, size_t n, int activation)
{
    if (activation == DN_ACT_LINEAR || !n) return;
    activate_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(x, n, activation);
    GPU_LAUNCHED(gpu);
}

void dn_gradient_gpu(dn_gpu *gpu, const float *y, size_t n, int activation, float *delta)
{
    if (activation == DN_ACT_LINEAR || !n) return;
    gradient_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(y, n, activation, delta);
    GPU_LAUNCHED(gpu);
}

// ---- im2col / col2im (darknet's column layout, im2col.h; kernels in im2col_kernels.cuh) ----

void dn_im2col_images_gpu(dn_gpu *gpu, const float *im, size_t im_image, int count, int channels, int height,
                          int width, int ksize, int stride, int pad, float *col, size_t col_image, size_t col_ld)
{
    int out_h = (height + 2 * pad - ksize) / stride + 1, out_w = (width + 2 * pad - ksize) / stride + 1;
    size_t per_image = (size_t)channels * ksize * ksize * out_h * out_w, n = per_image * count;
    if (!n) return;
    im2col_images_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(im, im_image, channels, height, width, ksize,
                                                                stride, pad, out_h, out_w, col, col_image, col_ld,
                                                                per_image, n);
    GPU_LAUNCHED(gpu);
}

void dn_col2im_images_gpu(dn_gpu *gpu, const float *col, size_t col_image, int count, int channels, int height,
                          int width, int ksize, int stride, int pad, float *im, size_t im_image)
{
    int out_h = (height + 2 * pad - ksize) / stride + 1, out_w = (width + 2 * pad - ksize) / stride + 1;
    size_t per_image = (size_t)channels * height * width, n = per_image * count;
    if (!n) return;
    col2im_images_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(col, col_image, channels, height, width, ksize,
                                                                stride, pad, out_h, out_w, im, im_image, per_image,
                                                                n);
    GPU_LAUNCHED(gpu);
}

void dn_copy_blocks_gpu(dn_gpu *gpu, int count, int rows, int width, const float *src, size_t src_block,
                        size_t src_ld, float *dst, size_t dst_block, size_t dst_ld)
{
    size_t n = (size_t)count * rows * width;
    if (!n) return;
    copy_blocks_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(src, src_block, src_ld, dst, dst_block, dst_ld, rows,
                                                              width, n);
    GPU_LAUNCHED(gpu);
}

// ---- softmax (darknet's softmax_cpu: one thread per softmax) -----------------------------

__global__ void softmax_kernel(const float *in, int n, int batch, int batch_offset, int groups,
                               int group_offset, int stride, float temp, float *out)
{
    size_t total = (size_t)batch * groups;
    GRID_STRIDE(id, total)
    {
        int b = id / groups, g = id % groups;
        size_t off = (size_t)b * batch_offset + (size_t)g * group_offset;
        dn_softmax_formula(in + off, n, temp, stride, out + off);
    }
}

void dn_softmax_blocks_gpu(dn_gpu *gpu, const float *in, int n, int batch, int batch_offset,
                           int groups, int group_offset, int stride, float temp, float *out)
{
    size_t total = (size_t)batch * groups;
    softmax_kernel<<<dn_blocks(total), 256, 0, gpu->stream>>>(in, n, batch, batch_offset, groups,
                                                              group_offset, stride, temp, out);
    GPU_LAUNCHED(gpu);
}

// ---- SGD (darknet's rule, as layer_common.c) ---------------------------------------------

__global__ void sgd_kernel(float *param, float *grad, float *velocity, size_t n, float lr_over_batch,
                           float momentum, float decay_times_batch)
{
    GRID_STRIDE(i, n)
    {
        float v = velocity[i] + grad[i];
        if (decay_times_batch != 0.f) v += -decay_times_batch * param[i];
        param[i] += lr_over_batch * v;
        velocity[i] = v * momentum;
        grad[i] = 0.f;
    }
}

void dn_sgd_gpu(dn_gpu *gpu, float *param, float *grad, float *velocity, size_t n,
                float lr_over_batch, float momentum, float decay_times_batch)
{
    if (!n) return;
    sgd_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(param, grad, velocity, n, lr_over_batch,
                                                      momentum, decay_times_batch);
    GPU_LAUNCHED(gpu);
}

// ---- finiteness ---------------------------------------------------------------------------

__global__ void count_non_finite_kernel(const float *x, size_t n, unsigned int *count)
{
    unsigned int local = 0;
    GRID_STRIDE(i, n) local += !isfinite(x[i]);
    if (local) atomicAdd(count, local);
}

int dn_all_finite_gpu(dn_gpu *gpu, const float *x, size_t n)
{
    if (!n) return 1;
    unsigned int *count = NULL, host = 0;
    if (cudaMallocAsync((void **)&count, sizeof *count, gpu->stream) != cudaSuccess) {
        dn_gpu_record(gpu, dn_cuda_fail(cudaGetLastError(), "cudaMallocAsync", __FILE__, __LINE__));
        return 1;
    }
    GPU_CHECK(gpu, cudaMemsetAsync(count, 0, sizeof *count, gpu->stream));
    count_non_finite_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(x, n, count);
    GPU_LAUNCHED(gpu);
    GPU_CHECK(gpu, cudaMemcpyAsync(&host, count, sizeof host, cudaMemcpyDeviceToHost, gpu->stream));
    GPU_CHECK(gpu, cudaFreeAsync(count, gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
    return host == 0;
}
