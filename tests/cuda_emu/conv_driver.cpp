// Runs convolutional_layer.cu's im2col path (the chunking, group and stride
// arithmetic around its GEMMs) on the CPU: the file is compiled as C++
// against fake CUDA headers; the GEMMs, bias and row sums it calls are CPU
// versions written here from their documented meaning, and im2col, col2im
// and the block copy are the library's kernels (im2col_kernels.cuh) run
// through cuda_emu.hpp.
//   conv_driver DIR B C H W FILTERS SIZE STRIDE PAD GROUPS WORKSPACE_FLOATS [PARTIALS_FLOATS]
// reads DIR/{input,weights,biases,delta}.bin, writes DIR/{output,
// weight_grads,bias_grads,input_delta}.bin and prints the GEMM calls of
// each pass, the weight gradient's pixel ranges and the im2col and col2im launches.
// PARTIALS_FLOATS: the weight gradients' scratch (default: as cuda.cu sizes it).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_common.cuh"
#include "float_files.hpp"
#include "im2col_kernels.cuh"
#include "layers/batchnorm_gpu.cuh"

// ---- the device helpers, on the CPU ----------------------------------------------------

void dn_gpu_record(dn_gpu *, dn_status status)
{
    if (status != DN_OK) abort();
}

static int gemm_calls, strided_calls, im2col_calls, col2im_calls;

// row-major C = alpha op(A) op(B) + beta C
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                sum += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * sum + (beta == 0.f ? 0.0 : (double)beta * *c));
        }
}

void dn_gemm_gpu(dn_gpu *, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_calls++;
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void dn_gemm_strided_gpu(dn_gpu *, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                         long long stride_a, const float *B, int ldb, long long stride_b, float beta, float *C,
                         int ldc, long long stride_c, int count)
{
    strided_calls++;
    for (int i = 0; i < count; i++)
        gemm(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta, C + i * stride_c, ldc);
}

// im2col, col2im and the block copy: the library's own kernels
// (im2col_kernels.cuh), run through cuda_emu.hpp's launch
static const unsigned kernel_threads = 64;

void dn_im2col_images_gpu(dn_gpu *, const float *im, size_t im_image, int count, int channels, int height, int width,
                          int ksize, int stride, int pad, float *col, size_t col_image, size_t col_ld)
{
    int out_h = (height + 2 * pad - ksize) / stride + 1, out_w = (width + 2 * pad - ksize) / stride + 1;
    size_t per_image = (size_t)channels * ksize * ksize * out_h * out_w, n = per_image * count;
    im2col_calls++;
    launch(dn_blocks(n, kernel_threads), kernel_threads, [&] {
        im2col_images_kernel(im, im_image, channels, height, width, ksize, stride, pad, out_h, out_w, col, col_image,
                             col_ld, per_image, n);
    });
}

void dn_col2im_images_gpu(dn_gpu *, const float *col, size_t col_image, int count, int channels, int height,
                          int width, int ksize, int stride, int pad, float *im, size_t im_image)
{
    int out_h = (height + 2 * pad - ksize) / stride + 1, out_w = (width + 2 * pad - ksize) / stride + 1;
    size_t per_image = (size_t)channels * height * width, n = per_image * count;
    col2im_calls++;
    launch(dn_blocks(n, kernel_threads), kernel_threads, [&] {
        col2im_images_kernel(col, col_image, channels, height, width, ksize, stride, pad, out_h, out_w, im, im_image,
                             per_image, n);
    });
}

void dn_copy_blocks_gpu(dn_gpu *, int count, int rows, int width, const float *src, size_t src_block, size_t src_ld,
                        float *dst, size_t dst_block, size_t dst_ld)
{
    size_t n = (size_t)count * rows * width;
    launch(dn_blocks(n, kernel_threads), kernel_threads,
           [&] { copy_blocks_kernel(src, src_block, src_ld, dst, dst_block, dst_ld, rows, width, n); });
}

void dn_add_rows_gpu(dn_gpu *, float *out, const float *rows, int n_rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < n_rows; r++) out[i] += rows[(size_t)r * n + i];
}

void dn_add_bias_gpu(dn_gpu *, float *out, const float *bias, int B, int C, int S)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int s = 0; s < S; s++) out[((size_t)b * C + c) * S + s] += bias[c];
}

void dn_backward_bias_gpu(dn_gpu *, float *bias_grad, const float *delta, int B, int C, int S)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int s = 0; s < S; s++) bias_grad[c] += delta[((size_t)b * C + c) * S + s];
}

// the driver's layers are linear and without batch norm
void dn_activate_gpu(dn_gpu *, float *, size_t, int activation)
{
    if (activation != DN_ACT_LINEAR) abort();
}
void dn_gradient_gpu(dn_gpu *, const float *, size_t, int activation, float *)
{
    if (activation != DN_ACT_LINEAR) abort();
}
void dn_batchnorm_forward_gpu(dn_layer *, const dn_ctx *, int) { abort(); }
void dn_batchnorm_backward_gpu(dn_layer *, const dn_ctx *, int) { abort(); }

void dn_conv_forward_gpu(dn_layer *l, const dn_ctx *ctx);
void dn_conv_backward_gpu(dn_layer *l, const dn_ctx *ctx);
int dn_conv_gpu_grad_segments(const dn_layer *l);
size_t dn_conv_gpu_grad_partials_floats(const dn_layer *l);

// ---- the driver -------------------------------------------------------------------------

int main(int argc, char **argv)
{
    if (argc != 12 && argc != 13) {
        fprintf(stderr, "usage: %s DIR B C H W FILTERS SIZE STRIDE PAD GROUPS WORKSPACE_FLOATS [PARTIALS_FLOATS]\n",
                argv[0]);
        return 2;
    }
    std::string dir = argv[1];
    int B = atoi(argv[2]), C = atoi(argv[3]), H = atoi(argv[4]), W = atoi(argv[5]);
    int filters = atoi(argv[6]), size = atoi(argv[7]), stride = atoi(argv[8]), pad = atoi(argv[9]);
    int groups = atoi(argv[10]);
    size_t workspace_floats = strtoull(argv[11], NULL, 10);

    dn_layer l;
    memset(&l, 0, sizeof l);
    l.type = DN_LAYER_CONVOLUTIONAL;
    l.batch = B;
    l.in_c = C, l.in_h = H, l.in_w = W, l.in_size = C * H * W;
    l.out_h = (H + 2 * pad - size) / stride + 1, l.out_w = (W + 2 * pad - size) / stride + 1, l.out_c = filters;
    l.out_size = l.out_h * l.out_w * filters;
    l.activation = DN_ACT_LINEAR;
    l.n_biases = filters;
    l.n_weights = (size_t)filters * (C / groups) * size * size;
    l.u.conv.filters = filters, l.u.conv.size = size, l.u.conv.stride = stride, l.u.conv.pad = pad;
    l.u.conv.groups = groups;

    std::vector<float> input = read_floats(dir + "/input.bin", (size_t)B * l.in_size);
    std::vector<float> weights = read_floats(dir + "/weights.bin", l.n_weights);
    std::vector<float> biases = read_floats(dir + "/biases.bin", filters);
    std::vector<float> delta = read_floats(dir + "/delta.bin", (size_t)B * l.out_size);
    std::vector<float> output((size_t)B * l.out_size), weight_grads(l.n_weights), bias_grads(filters);
    std::vector<float> input_delta((size_t)B * l.in_size), workspace(workspace_floats, -1e30f);
    l.gpu.weights = weights.data(), l.gpu.biases = biases.data(), l.gpu.output = output.data();
    l.gpu.weight_grads = weight_grads.data(), l.gpu.bias_grads = bias_grads.data();

    dn_gpu gpu;
    memset(&gpu, 0, sizeof gpu);
    // the split weight gradients' scratch, as cuda.cu sizes it
    size_t partials_floats = argc == 13 ? strtoull(argv[12], NULL, 10) : dn_conv_gpu_grad_partials_floats(&l);
    std::vector<float> partials(partials_floats, -1e30f);
    dn_gpu_ctx gctx = {&gpu, input.data(), NULL, workspace.data(), workspace_floats,
                       partials.empty() ? NULL : partials.data(), partials.size()};
    dn_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.train = 1;
    ctx.gpu = &gctx;
    dn_conv_forward_gpu(&l, &ctx);
    int forward_gemms = gemm_calls, forward_strided = strided_calls;

    l.gpu.delta = delta.data();  // (as the next layer's backward left it)
    gctx.input_delta = input_delta.data();
    dn_conv_backward_gpu(&l, &ctx);

    write_floats(dir + "/output.bin", output);
    write_floats(dir + "/weight_grads.bin", weight_grads);
    write_floats(dir + "/bias_grads.bin", bias_grads);
    write_floats(dir + "/input_delta.bin", input_delta);
    printf("%d %d %d %d %d %d %d\n", forward_gemms, forward_strided, gemm_calls - forward_gemms,
           strided_calls - forward_strided, dn_conv_gpu_grad_segments(&l), im2col_calls, col2im_calls);
    return 0;
}
