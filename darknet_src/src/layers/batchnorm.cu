// Batch normalisation on the GPU (batchnorm.c's twin): the launches; the
// kernels are in batchnorm_kernels.cuh.
#include "../cuda_common.cuh"

#include "batchnorm_gpu.cuh"
#include "batchnorm_kernels.cuh"

size_t dn_batchnorm_partials_floats(int n_biases) { return 3 * (size_t)n_biases * DN_BN_MAX_PARTS; }

void dn_batchnorm_forward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int F = l->n_biases, B = l->batch, S = spatial;
    dim3 rows = channel_grid(F, S, BN_MAX_ROW_BLOCKS);
    if (!ctx->train) {
        bn_factors_kernel<<<dn_blocks(F), 256, 0, gpu->stream>>>(l->gpu.rolling_mean, l->gpu.rolling_variance,
                                                                  l->gpu.scales, l->gpu.biases, F, l->gpu.factors);
        GPU_LAUNCHED(gpu);
        bn_apply_kernel<<<rows, BN_THREADS, 0, gpu->stream>>>(l->gpu.output, l->gpu.factors, B, F, S);
        GPU_LAUNCHED(gpu);
        return;
    }
    dim3 reduce = channel_grid(F, S, DN_BN_MAX_PARTS);
    int parts = bn_parts(F, S);
    float *partial_sums = l->gpu.bn_partials;
    float *partial_squares = l->gpu.bn_partials + (size_t)F * parts;
    bn_partial_sums_kernel<<<reduce, BN_THREADS, 0, gpu->stream>>>(l->gpu.output, B, F, S, partial_sums);
    GPU_LAUNCHED(gpu);
    bn_partial_squares_kernel<<<reduce, BN_THREADS, 0, gpu->stream>>>(l->gpu.output, partial_sums, B, F, S,
                                                                       partial_squares);
    GPU_LAUNCHED(gpu);
    bn_statistics_kernel<<<dn_blocks(F), 256, 0, gpu->stream>>>(partial_sums, partial_squares, parts, B, F, S,
                                                                 l->gpu.bn_mean, l->gpu.bn_variance,
                                                                 l->gpu.rolling_mean, l->gpu.rolling_variance);
    GPU_LAUNCHED(gpu);
    bn_normalize_kernel<<<rows, BN_THREADS, 0, gpu->stream>>>(l->gpu.output, l->gpu.bn_x, l->gpu.bn_x_norm,
                                                              l->gpu.bn_mean, l->gpu.bn_variance, l->gpu.scales,
                                                              l->gpu.biases, B, F, S);
    GPU_LAUNCHED(gpu);
}

void dn_batchnorm_backward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int F = l->n_biases, B = l->batch, S = spatial;
    dim3 reduce = channel_grid(F, S, DN_BN_MAX_PARTS);
    int parts = bn_parts(F, S);
    bn_backward_partials_kernel<<<reduce, BN_THREADS, 0, gpu->stream>>>(l->gpu.delta, l->gpu.bn_x, l->gpu.bn_x_norm,
                                                                        l->gpu.bn_mean, B, F, S, l->gpu.bn_partials);
    GPU_LAUNCHED(gpu);
    bn_backward_statistics_kernel<<<dn_blocks(F), 256, 0, gpu->stream>>>(
        l->gpu.bn_partials, parts, F, l->gpu.bn_variance, l->gpu.scales, l->gpu.bias_grads, l->gpu.scale_grads,
        l->gpu.bn_mean_delta, l->gpu.bn_variance_delta);
    GPU_LAUNCHED(gpu);
    dim3 rows = channel_grid(F, S, BN_MAX_ROW_BLOCKS);
    bn_backward_apply_kernel<<<rows, BN_THREADS, 0, gpu->stream>>>(l->gpu.delta, l->gpu.bn_x, l->gpu.bn_mean,
                                                                   l->gpu.bn_variance, l->gpu.scales,
                                                                   l->gpu.bn_mean_delta, l->gpu.bn_variance_delta,
                                                                   B, F, S);
    GPU_LAUNCHED(gpu);
}
