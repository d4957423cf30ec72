// [connected] on the GPU (connected_layer.c's twin).
#include "../cuda_common.cuh"
#include "batchnorm_gpu.cuh"

void dn_connected_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int outputs = l->out_size, inputs = l->in_size;
    dn_gemm_gpu(gpu, 0, 1, l->batch, outputs, inputs, 1.f, ctx->gpu->input, inputs, l->gpu.weights,
                inputs, 0.f, l->gpu.output, outputs);
    if (l->batch_normalize)
        dn_batchnorm_forward_gpu(l, ctx, 1);
    else
        dn_add_bias_gpu(gpu, l->gpu.output, l->gpu.biases, l->batch, outputs, 1);
    dn_activate_gpu(gpu, l->gpu.output, (size_t)l->batch * outputs, l->activation);
}

void dn_connected_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int outputs = l->out_size, inputs = l->in_size;
    dn_gradient_gpu(gpu, l->gpu.output, (size_t)l->batch * outputs, l->activation, l->gpu.delta);
    if (l->batch_normalize)
        dn_batchnorm_backward_gpu(l, ctx, 1);
    else
        dn_backward_bias_gpu(gpu, l->gpu.bias_grads, l->gpu.delta, l->batch, outputs, 1);
    dn_gemm_gpu(gpu, 1, 0, outputs, inputs, l->batch, 1.f, l->gpu.delta, outputs, ctx->gpu->input,
                inputs, 1.f, l->gpu.weight_grads, inputs);
    if (ctx->gpu->input_delta)
        dn_gemm_gpu(gpu, 0, 0, l->batch, inputs, outputs, 1.f, l->gpu.delta, outputs, l->gpu.weights,
                    inputs, 1.f, ctx->gpu->input_delta, inputs);
}
