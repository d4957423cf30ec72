// [maxpool] on the GPU (maxpool_layer.c's twin): darknet's window (padding
// size-1 by default, offset -padding/2, outside cells ignored).
#include "../cuda_common.cuh"

#include <float.h>

__global__ void maxpool_forward_kernel(const float *in, int in_w, int in_h, int out_w, int out_h,
                                       int size, int stride, int offset, float *out, int *indexes,
                                       size_t n)
{
    GRID_STRIDE(i, n)
    {
        int ox = i % out_w;
        int oy = (i / out_w) % out_h;
        size_t plane = i / ((size_t)out_w * out_h);
        const float *p = in + plane * in_w * in_h;
        float best = -FLT_MAX;
        int best_index = -1;
        for (int ky = 0; ky < size; ky++) {
            int iy = offset + oy * stride + ky;
            if (iy < 0 || iy >= in_h) continue;
            for (int kx = 0; kx < size; kx++) {
                int ix = offset + ox * stride + kx;
                if (ix < 0 || ix >= in_w) continue;
                float v = p[iy * in_w + ix];
                if (v > best) {
                    best = v;
                    best_index = (int)(plane * in_w * in_h + (size_t)iy * in_w + ix);
                }
            }
        }
        out[i] = best;
        if (indexes) indexes[i] = best_index;
    }
}

// one thread per input cell: collect the deltas of the windows that chose it
__global__ void maxpool_backward_kernel(const float *delta, const int *indexes, int in_w, int in_h,
                                        int out_w, int out_h, int size, int stride, int offset,
                                        float *input_delta, size_t n)
{
    GRID_STRIDE(i, n)
    {
        int x = i % in_w;
        int y = (i / in_w) % in_h;
        size_t plane = i / ((size_t)in_w * in_h);
        float sum = 0;
        // windows covering (x, y): offset + o*stride <= x < offset + o*stride + size;
        // the lower bounds may include one window too many (checked below)
        int oy_lo = (y - offset - size) / stride, oy_hi = (y - offset) / stride;
        int ox_lo = (x - offset - size) / stride, ox_hi = (x - offset) / stride;
        if (oy_lo < 0) oy_lo = 0;
        if (ox_lo < 0) ox_lo = 0;
        for (int oy = oy_lo; oy <= oy_hi && oy < out_h; oy++)
            for (int ox = ox_lo; ox <= ox_hi && ox < out_w; ox++) {
                size_t o = (plane * out_h + oy) * out_w + ox;
                if (indexes[o] == (int)i) sum += delta[o];
            }
        input_delta[i] += sum;
    }
}

void dn_maxpool_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->out_size;
    maxpool_forward_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(
        ctx->gpu->input, l->in_w, l->in_h, l->out_w, l->out_h, l->u.pool.size, l->u.pool.stride,
        -l->u.pool.pad / 2, l->gpu.output, l->gpu.indexes, n);
    GPU_LAUNCHED(gpu);
}

void dn_maxpool_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->gpu->input_delta) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    maxpool_backward_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(
        l->gpu.delta, l->gpu.indexes, l->in_w, l->in_h, l->out_w, l->out_h, l->u.pool.size,
        l->u.pool.stride, -l->u.pool.pad / 2, ctx->gpu->input_delta, n);
    GPU_LAUNCHED(gpu);
}
