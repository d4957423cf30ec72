// [convolutional] on the GPU (convolutional_layer.c's twin): im2col + cuBLAS,
// or cuDNN in a PYDARKNET_CUDNN=1 build (conv_cudnn.cu).
#include "../cuda_common.cuh"
#include "batchnorm_gpu.cuh"
#include "conv_cudnn.cuh"

static int input_is_columns(const dn_layer *l)
{
    return l->u.conv.size == 1 && l->u.conv.stride == 1 && l->u.conv.pad == 0;
}

void dn_conv_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int groups = l->u.conv.groups;
    int m = l->u.conv.filters / groups;
    int k = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    int n = l->out_w * l->out_h;
    size_t in_group = (size_t)(l->in_c / groups) * l->in_h * l->in_w;
    int done = dn_conv_cudnn_forward(l, ctx);
    for (int b = 0; b < l->batch && !done; b++)
        for (int g = 0; g < groups; g++) {
            const float *weights = l->gpu.weights + (size_t)g * l->n_weights / groups;
            const float *im = ctx->gpu->input + ((size_t)b * groups + g) * in_group;
            float *out = l->gpu.output + ((size_t)b * groups + g) * n * m;
            const float *columns = im;
            if (!input_is_columns(l)) {
                dn_im2col_gpu(gpu, im, l->in_c / groups, l->in_h, l->in_w, l->u.conv.size,
                              l->u.conv.stride, l->u.conv.pad, ctx->gpu->workspace);
                columns = ctx->gpu->workspace;
            }
            dn_gemm_gpu(gpu, 0, 0, m, n, k, 1.f, weights, k, columns, n, 0.f, out, n);
        }
    if (l->batch_normalize)
        dn_batchnorm_forward_gpu(l, ctx, n);
    else
        dn_add_bias_gpu(gpu, l->gpu.output, l->gpu.biases, l->batch, l->u.conv.filters, n);
    dn_activate_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation);
}

void dn_conv_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int groups = l->u.conv.groups;
    int m = l->u.conv.filters / groups;
    int n = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    int k = l->out_w * l->out_h;
    size_t in_group = (size_t)(l->in_c / groups) * l->in_h * l->in_w;
    dn_gradient_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation, l->gpu.delta);
    if (l->batch_normalize)
        dn_batchnorm_backward_gpu(l, ctx, k);
    else
        dn_backward_bias_gpu(gpu, l->gpu.bias_grads, l->gpu.delta, l->batch, l->u.conv.filters, k);
    if (dn_conv_cudnn_backward(l, ctx)) return;
    float *workspace = ctx->gpu->workspace;
    for (int b = 0; b < l->batch; b++)
        for (int g = 0; g < groups; g++) {
            const float *delta = l->gpu.delta + ((size_t)b * groups + g) * m * k;
            const float *im = ctx->gpu->input + ((size_t)b * groups + g) * in_group;
            float *grads = l->gpu.weight_grads + (size_t)g * l->n_weights / groups;
            const float *columns = im;
            if (!input_is_columns(l)) {
                dn_im2col_gpu(gpu, im, l->in_c / groups, l->in_h, l->in_w, l->u.conv.size,
                              l->u.conv.stride, l->u.conv.pad, workspace);
                columns = workspace;
            }
            dn_gemm_gpu(gpu, 0, 1, m, n, k, 1.f, delta, k, columns, k, 1.f, grads, n);
            if (!ctx->gpu->input_delta) continue;
            const float *weights = l->gpu.weights + (size_t)g * l->n_weights / groups;
            float *input_delta = ctx->gpu->input_delta + ((size_t)b * groups + g) * in_group;
            if (input_is_columns(l)) {
                dn_gemm_gpu(gpu, 1, 0, n, k, m, 1.f, weights, n, delta, k, 1.f, input_delta, k);
            } else {
                dn_gemm_gpu(gpu, 1, 0, n, k, m, 1.f, weights, n, delta, k, 0.f, workspace, k);
                dn_col2im_gpu(gpu, workspace, l->in_c / groups, l->in_h, l->in_w, l->u.conv.size,
                              l->u.conv.stride, l->u.conv.pad, input_delta);
            }
        }
}
