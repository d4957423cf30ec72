// The batch-norm kernels of batchnorm.cu.  They use nothing but
// cuda_device.cuh, so tests/cuda_emu compiles this file on the CPU too and
// checks their logic against darknet's batch norm without a GPU.
//
// A channel's values are B rows of S (the [B][F][S] layout).  Every kernel
// runs on a grid of (x: parts of a row, y: channels), so a layer with few,
// large channels (yolov2's first layer: 32 channels of 16 x 416 x 416 values)
// still fills the GPU: the per-channel sums are reduced in two deterministic
// stages, `parts` block sums per channel into l->gpu.bn_partials, then one
// thread per channel adds them in order.  No atomics: the same input gives
// the same bits every run.
#ifndef DN_BATCHNORM_KERNELS_CUH
#define DN_BATCHNORM_KERNELS_CUH

#include "../cuda_device.cuh"

#define DN_BN_MAX_PARTS 64  // partial sums per channel: l->gpu.bn_partials holds 3 x F x this

#define BN_THREADS 256
#define BN_MAX_ROW_BLOCKS 1024  // element-wise kernels: blocks along a row
#ifndef BN_MAX_CHANNEL_BLOCKS      // (the CPU emulation test lowers it to reach the channel loop)
#define BN_MAX_CHANNEL_BLOCKS 65535  // CUDA's limit on gridDim.y
#endif

// the grid of a channel-major kernel: at most `max_x` blocks along a row
static inline dim3 channel_grid(int F, int S, int max_x)
{
    unsigned x = (unsigned)((S + BN_THREADS - 1) / BN_THREADS);
    if (x > (unsigned)max_x) x = (unsigned)max_x;
    if (x < 1) x = 1;
    // channels beyond the limit: the kernels' channel loop
    unsigned y = F < BN_MAX_CHANNEL_BLOCKS ? (unsigned)F : (unsigned)BN_MAX_CHANNEL_BLOCKS;
    return dim3(x, y);
}

// how many partial sums per channel the reductions of a layer write
static inline int bn_parts(int F, int S) { return (int)channel_grid(F, S, DN_BN_MAX_PARTS).x; }

// the value index of (b, f, s) in [B][F][S]
static __device__ __forceinline__ size_t bn_index(int b, int f, int F, int S, int s)
{
    return ((size_t)b * F + f) * S + s;
}

// sum of the `parts` partials of channel f, in order (every caller adds them
// the same way, so every caller gets the same float)
static __device__ __forceinline__ float sum_parts(const float *partials, int f, int parts)
{
    float sum = 0;
    for (int p = 0; p < parts; p++) sum += partials[(size_t)f * parts + p];
    return sum;
}

static __device__ __forceinline__ float channel_mean(const float *partial_sums, int f, int parts, int B, int S)
{
    return sum_parts(partial_sums, f, parts) * (1.f / (B * S));
}

// partial sums of x over part blockIdx.x of every row of channel f
__global__ void bn_partial_sums_kernel(const float *x, int B, int F, int S, float *partial_sums)
{
    int parts = gridDim.x;
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        float sum = 0;
        for (int b = 0; b < B; b++) {
            const float *row = x + bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += parts * blockDim.x) sum += row[s];
        }
        float total = dn_block_sum(sum);
        if (threadIdx.x == 0) partial_sums[(size_t)f * parts + blockIdx.x] = total;
    }
}

// partial sums of (x - mean)^2, the mean from the partial sums of x
__global__ void bn_partial_squares_kernel(const float *x, const float *partial_sums, int B, int F, int S,
                                          float *partial_squares)
{
    int parts = gridDim.x;
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        float mean = channel_mean(partial_sums, f, parts, B, S);
        float sum = 0;
        for (int b = 0; b < B; b++) {
            const float *row = x + bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += parts * blockDim.x) {
                float d = row[s] - mean;
                sum += d * d;
            }
        }
        float total = dn_block_sum(sum);
        if (threadIdx.x == 0) partial_squares[(size_t)f * parts + blockIdx.x] = total;
    }
}

// one thread per channel: the batch mean and variance, the rolling averages
__global__ void bn_statistics_kernel(const float *partial_sums, const float *partial_squares, int parts,
                                     int B, int F, int S, float *mean_out, float *variance_out,
                                     float *rolling_mean, float *rolling_variance)
{
    GRID_STRIDE(i, (size_t)F)
    {
        int f = (int)i;
        float mean = channel_mean(partial_sums, f, parts, B, S);
        float variance = sum_parts(partial_squares, f, parts) * (1.f / (B * S - 1));  // unbiased, as darknet
        mean_out[f] = mean;
        variance_out[f] = variance;
        rolling_mean[f] = .99f * rolling_mean[f] + .01f * mean;
        rolling_variance[f] = .99f * rolling_variance[f] + .01f * variance;
    }
}

// training forward, element-wise: keep x and x_norm, normalise, scale, shift
__global__ void bn_normalize_kernel(float *out, float *x_cache, float *x_norm, const float *mean,
                                    const float *variance, const float *scales, const float *biases,
                                    int B, int F, int S)
{
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        // quirk (darknet's forward): sqrt(var) + 1e-6 here, sqrt(var + 1e-5) in backward
        float m = mean[f], denom = sqrtf(variance[f]) + .000001f;
        float scale = scales[f], beta = biases[f];
        for (int b = 0; b < B; b++) {
            size_t row = bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += gridDim.x * blockDim.x) {
                float v = out[row + s];
                x_cache[row + s] = v;
                float normed = (v - m) / denom;
                x_norm[row + s] = normed;
                out[row + s] = normed * scale + beta;
            }
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

__global__ void bn_apply_kernel(float *x, const float *factors, int B, int F, int S)
{
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        float a = factors[f], c = factors[F + f];
        for (int b = 0; b < B; b++) {
            float *row = x + bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += gridDim.x * blockDim.x)
                row[s] = row[s] * a + c;
        }
    }
}

// backward partials of channel f: sum(delta), sum(delta * x_norm) and
// sum(delta * (x - mean)), at [0], [1], [2] x F x parts
__global__ void bn_backward_partials_kernel(const float *delta, const float *x_cache, const float *x_norm,
                                            const float *mean, int B, int F, int S, float *partials)
{
    int parts = gridDim.x;
    size_t plane = (size_t)F * parts;
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        float m = mean[f];
        float sum_delta = 0, sum_delta_norm = 0, sum_delta_centered = 0;
        for (int b = 0; b < B; b++) {
            size_t row = bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += parts * blockDim.x) {
                float d = delta[row + s];
                sum_delta += d;
                sum_delta_norm += d * x_norm[row + s];
                sum_delta_centered += d * (x_cache[row + s] - m);
            }
        }
        float total_delta = dn_block_sum(sum_delta);
        float total_norm = dn_block_sum(sum_delta_norm);
        float total_centered = dn_block_sum(sum_delta_centered);
        if (threadIdx.x == 0) {
            size_t at = (size_t)f * parts + blockIdx.x;
            partials[at] = total_delta;
            partials[plane + at] = total_norm;
            partials[2 * plane + at] = total_centered;
        }
    }
}

// one thread per channel: bias and scale gradients, darknet's mean and
// variance deltas (of delta * scale: the scale is a common factor of the sums)
__global__ void bn_backward_statistics_kernel(const float *partials, int parts, int F, const float *variance,
                                              const float *scales, float *bias_grads, float *scale_grads,
                                              float *mean_delta_out, float *variance_delta_out)
{
    size_t plane = (size_t)F * parts;
    GRID_STRIDE(i, (size_t)F)
    {
        int f = (int)i;
        float sum_delta = sum_parts(partials, f, parts);
        float sum_delta_norm = sum_parts(partials + plane, f, parts);
        float sum_delta_centered = sum_parts(partials + 2 * plane, f, parts);
        bias_grads[f] += sum_delta;
        scale_grads[f] += sum_delta_norm;
        float scale = scales[f], var = variance[f];
        mean_delta_out[f] = -rsqrtf(var + .00001f) * (scale * sum_delta);
        variance_delta_out[f] = -.5f * powf(var + .00001f, -1.5f) * (scale * sum_delta_centered);
    }
}

// element-wise: delta = (delta * scale) / sqrt(var + 1e-5)
//   + variance_delta * 2 (x - mean) / N + mean_delta / N   (darknet's N, not N - 1)
__global__ void bn_backward_apply_kernel(float *delta, const float *x_cache, const float *mean,
                                         const float *variance, const float *scales, const float *mean_delta,
                                         const float *variance_delta, int B, int F, int S)
{
    float count = (float)B * S;
    for (int f = blockIdx.y; f < F; f += gridDim.y) {
        float m = mean[f], inv_std = rsqrtf(variance[f] + .00001f), scale = scales[f];
        float md = mean_delta[f], vd = variance_delta[f];
        for (int b = 0; b < B; b++) {
            size_t row = bn_index(b, f, F, S, 0);
            for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < S; s += gridDim.x * blockDim.x) {
                float scaled = delta[row + s] * scale;
                delta[row + s] = scaled * inv_std + vd * 2.f * (x_cache[row + s] - m) / count + md / count;
            }
        }
    }
}

#endif
