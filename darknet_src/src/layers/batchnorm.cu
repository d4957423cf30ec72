// Batch normalisation on the GPU (batchnorm.c's twin): one block per channel
// for the statistics and the backward sums, element-wise kernels otherwise.
#include "../cuda_common.cuh"

#include "batchnorm_gpu.cuh"

// sum over (b, s) of channel f of x * (y - y_shift), or of x when y is NULL,
// by a block of 256 threads
__device__ float channel_sum(const float *x, const float *y, float y_shift, int B, int F, int S, int f)
{
    float sum = 0;
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x)
            sum += y ? x[off + s] * (y[off + s] - y_shift) : x[off + s];
    }
    return dn_block_sum(sum);
}

__device__ float channel_squares(const float *x, float mean, int B, int F, int S, int f)
{
    float sum = 0;
    for (int b = 0; b < B; b++) {
        const float *row = x + ((size_t)b * F + f) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x) {
            float d = row[s] - mean;
            sum += d * d;
        }
    }
    return dn_block_sum(sum);
}

// training forward: batch statistics, rolling averages, normalise, scale, shift
__global__ void bn_forward_kernel(float *out, float *x_cache, float *x_norm, float *mean_out,
                                  float *variance_out, float *rolling_mean, float *rolling_variance,
                                  const float *scales, const float *biases, int B, int F, int S)
{
    int f = blockIdx.x;
    float mean = channel_sum(out, NULL, 0.f, B, F, S, f) / (B * S);
    float variance = channel_squares(out, mean, B, F, S, f) / (B * S - 1);  // unbiased, as darknet
    if (threadIdx.x == 0) {
        mean_out[f] = mean;
        variance_out[f] = variance;
        rolling_mean[f] = .99f * rolling_mean[f] + .01f * mean;
        rolling_variance[f] = .99f * rolling_variance[f] + .01f * variance;
    }
    // quirk (darknet's CPU forward): sqrt(var) + 1e-6 here, sqrt(var + 1e-5) in backward
    float denom = sqrtf(variance) + .000001f;
    float scale = scales[f], beta = biases[f];
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x) {
            float v = out[off + s];
            x_cache[off + s] = v;
            float normed = (v - mean) / denom;
            x_norm[off + s] = normed;
            out[off + s] = normed * scale + beta;
        }
    }
}

// inference: folded factors a = scale / (sqrt(var) + 1e-6), b = beta - mean * a
__global__ void bn_factors_kernel(const float *mean, const float *variance, const float *scale,
                                  const float *beta, int F, float *factors)
{
    GRID_STRIDE(f, (size_t)F)
    {
        double a = (double)scale[f] / (sqrt((double)variance[f]) + .000001f);
        factors[f] = (float)a;
        factors[F + f] = (float)((double)beta[f] - (double)mean[f] * a);
    }
}

__global__ void bn_apply_kernel(float *x, const float *factors, int F, int S, size_t n)
{
    GRID_STRIDE(i, n)
    {
        int f = (i / S) % F;
        x[i] = x[i] * factors[f] + factors[F + f];
    }
}

__global__ void bn_backward_kernel(float *delta, const float *x_cache, const float *x_norm,
                                   const float *mean, const float *variance, const float *scales,
                                   float *bias_grads, float *scale_grads, float *mean_delta_out,
                                   float *variance_delta_out, int B, int F, int S)
{
    int f = blockIdx.x;
    float bias_sum = channel_sum(delta, NULL, 0.f, B, F, S, f);
    float scale_sum = channel_sum(delta, x_norm, 0.f, B, F, S, f);
    if (threadIdx.x == 0) {
        bias_grads[f] += bias_sum;
        scale_grads[f] += scale_sum;
    }
    float scale = scales[f];
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x) delta[off + s] *= scale;
    }
    __syncthreads();
    float m = mean[f], var = variance[f];
    float inv_std = rsqrtf(var + .00001f);
    float mean_delta = -inv_std * channel_sum(delta, NULL, 0.f, B, F, S, f);
    float variance_delta = -.5f * powf(var + .00001f, -1.5f) * channel_sum(delta, x_cache, m, B, F, S, f);
    if (threadIdx.x == 0) {
        mean_delta_out[f] = mean_delta;
        variance_delta_out[f] = variance_delta;
    }
    float count = (float)B * S;
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x)
            delta[off + s] = delta[off + s] * inv_std + variance_delta * 2.f * (x_cache[off + s] - m) / count +
                             mean_delta / count;
    }
}

void dn_batchnorm_forward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int F = l->n_biases, B = l->batch;
    if (!ctx->train) {
        bn_factors_kernel<<<dn_blocks(F), 256, 0, gpu->stream>>>(l->gpu.rolling_mean, l->gpu.rolling_variance,
                                                                  l->gpu.scales, l->gpu.biases, F, l->gpu.factors);
        GPU_LAUNCHED(gpu);
        size_t n = (size_t)B * F * spatial;
        bn_apply_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.output, l->gpu.factors, F, spatial, n);
        GPU_LAUNCHED(gpu);
        return;
    }
    bn_forward_kernel<<<F, 256, 0, gpu->stream>>>(l->gpu.output, l->gpu.bn_x, l->gpu.bn_x_norm, l->gpu.bn_mean,
                                                   l->gpu.bn_variance, l->gpu.rolling_mean, l->gpu.rolling_variance,
                                                   l->gpu.scales, l->gpu.biases, B, F, spatial);
    GPU_LAUNCHED(gpu);
}

void dn_batchnorm_backward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int F = l->n_biases, B = l->batch;
    bn_backward_kernel<<<F, 256, 0, gpu->stream>>>(l->gpu.delta, l->gpu.bn_x, l->gpu.bn_x_norm, l->gpu.bn_mean,
                                                    l->gpu.bn_variance, l->gpu.scales, l->gpu.bias_grads,
                                                    l->gpu.scale_grads, l->gpu.bn_mean_delta,
                                                    l->gpu.bn_variance_delta, B, F, spatial);
    GPU_LAUNCHED(gpu);
}
