// The CUDA twins of the small layers: avgpool, route, reorg, shortcut,
// upsample, dropout, crop (each mirrors its CPU file in layers/).
#include "../cuda_common.cuh"

// ---- [avgpool] ----------------------------------------------------------------------

__global__ void avgpool_forward_kernel(const float *in, int spatial, float *out, size_t planes)
{
    GRID_STRIDE(p, planes)
    {
        const float *x = in + p * spatial;
        float sum = 0;
        for (int s = 0; s < spatial; s++) sum += x[s];
        out[p] = sum / spatial;
    }
}

__global__ void avgpool_backward_kernel(const float *delta, int spatial, float *input_delta, size_t n)
{
    GRID_STRIDE(i, n) input_delta[i] += delta[i / spatial] / spatial;
}

void dn_avgpool_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t planes = (size_t)l->batch * l->in_c;
    avgpool_forward_kernel<<<dn_blocks(planes), 256, 0, gpu->stream>>>(ctx->gpu->input, l->in_w * l->in_h,
                                                                       l->gpu.output, planes);
    GPU_LAUNCHED(gpu);
}

void dn_avgpool_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->gpu->input_delta) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    avgpool_backward_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.delta, l->in_w * l->in_h,
                                                                   ctx->gpu->input_delta, n);
    GPU_LAUNCHED(gpu);
}

// ---- [route] ------------------------------------------------------------------------

void dn_route_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t offset = 0;
    for (int i = 0; i < l->n_sources; i++) {
        const dn_layer *src = l->sources[i];
        size_t part = (size_t)src->out_size;
        GPU_CHECK(gpu, cudaMemcpy2DAsync(l->gpu.output + offset, (size_t)l->out_size * sizeof(float),
                                         src->gpu.output, part * sizeof(float), part * sizeof(float),
                                         (size_t)l->batch, cudaMemcpyDeviceToDevice, gpu->stream));
        offset += part;
    }
}

void dn_route_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t offset = 0;
    for (int i = 0; i < l->n_sources; i++) {
        dn_layer *src = l->sources[i];
        size_t part = (size_t)src->out_size;
        if (src->gpu.delta)
            for (int b = 0; b < l->batch; b++)
                dn_axpy_gpu(gpu, src->gpu.delta + b * part, 1.f,
                            l->gpu.delta + offset + (size_t)b * l->out_size, part);
        offset += part;
    }
}

// ---- [reorg]: darknet's permutation (see reorg_layer.c for the quirk) ------------------

__device__ void reorg_indexes(int w, int h, int c, int stride, size_t i, size_t *packed, size_t *spread)
{
    int x = i % w;
    int y = (i / w) % h;
    int k = (i / ((size_t)w * h)) % c;
    int b = i / ((size_t)w * h * c);
    int out_c = c / (stride * stride);
    int c2 = k % out_c, offset = k / out_c;
    int w2 = x * stride + offset % stride, h2 = y * stride + offset / stride;
    *packed = i;
    *spread = (size_t)w2 + (size_t)w * stride * (h2 + (size_t)h * stride * (c2 + (size_t)out_c * b));
}

// forward = 1: out[spread] = x[packed]; 0: out[packed] = x[spread]; add accumulates
__global__ void reorg_kernel(const float *x, int w, int h, int c, int stride, int forward, int add,
                             float *out, size_t n)
{
    GRID_STRIDE(i, n)
    {
        size_t packed, spread;
        reorg_indexes(w, h, c, stride, i, &packed, &spread);
        size_t to = forward ? spread : packed, from = forward ? packed : spread;
        if (add)
            out[to] += x[from];
        else
            out[to] = x[from];
    }
}

void dn_reorg_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    reorg_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(ctx->gpu->input, l->in_w, l->in_h, l->in_c,
                                                        l->u.reorg.stride, l->u.reorg.reverse ? 1 : 0,
                                                        0, l->gpu.output, n);
    GPU_LAUNCHED(gpu);
}

void dn_reorg_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->gpu->input_delta) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    reorg_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.delta, l->in_w, l->in_h, l->in_c,
                                                        l->u.reorg.stride, l->u.reorg.reverse ? 0 : 1,
                                                        1, ctx->gpu->input_delta, n);
    GPU_LAUNCHED(gpu);
}

// ---- [shortcut] -----------------------------------------------------------------------

__global__ void shortcut_kernel(int w1, int h1, int c1, const float *add, int w2, int h2, int c2,
                                float s1, float s2, float *out, int minw, int minh, int minc,
                                int stride, int sample, size_t n)
{
    GRID_STRIDE(id, n)
    {
        int i = id % minw;
        int j = (id / minw) % minh;
        int k = (id / ((size_t)minw * minh)) % minc;
        int b = id / ((size_t)minw * minh * minc);
        size_t out_index = (size_t)i * sample + (size_t)w2 * (j * sample + (size_t)h2 * (k + (size_t)c2 * b));
        size_t add_index = (size_t)i * stride + (size_t)w1 * (j * stride + (size_t)h1 * (k + (size_t)c1 * b));
        out[out_index] = s1 * out[out_index] + s2 * add[add_index];
    }
}

static void shortcut_gpu(dn_gpu *gpu, int batch, int w1, int h1, int c1, const float *add, int w2,
                         int h2, int c2, float s1, float s2, float *out)
{
    int stride = w1 / w2, sample = w2 / w1;
    if (stride < 1) stride = 1;
    if (sample < 1) sample = 1;
    int minw = w1 < w2 ? w1 : w2, minh = h1 < h2 ? h1 : h2, minc = c1 < c2 ? c1 : c2;
    size_t n = (size_t)batch * minw * minh * minc;
    shortcut_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(w1, h1, c1, add, w2, h2, c2, s1, s2, out, minw,
                                                           minh, minc, stride, sample, n);
    GPU_LAUNCHED(gpu);
}

void dn_shortcut_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    const dn_layer *from = l->sources[0];
    dn_copy_gpu(gpu, l->gpu.output, ctx->gpu->input, (size_t)l->batch * l->out_size);
    shortcut_gpu(gpu, l->batch, from->out_w, from->out_h, from->out_c, from->gpu.output, l->out_w,
                 l->out_h, l->out_c, l->u.shortcut.alpha, l->u.shortcut.beta, l->gpu.output);
    dn_activate_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation);
}

void dn_shortcut_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    dn_layer *from = l->sources[0];
    dn_gradient_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation, l->gpu.delta);
    if (ctx->gpu->input_delta)
        dn_axpy_gpu(gpu, ctx->gpu->input_delta, l->u.shortcut.alpha, l->gpu.delta,
                    (size_t)l->batch * l->out_size);
    if (from->gpu.delta)
        shortcut_gpu(gpu, l->batch, l->out_w, l->out_h, l->out_c, l->gpu.delta, from->out_w,
                     from->out_h, from->out_c, 1.f, l->u.shortcut.beta, from->gpu.delta);
}

// ---- [upsample] -------------------------------------------------------------------------

// mode 0: small += scale * sum(block of big); 1: big = scale * small; 2: big += scale * small
__global__ void upsample_big_kernel(float *small, int w, int h, int s, int mode, float scale,
                                    float *big, size_t n)
{
    GRID_STRIDE(i, n)  // one thread per big element
    {
        int x = i % (w * s);
        int y = (i / (w * s)) % (h * s);
        size_t plane = i / ((size_t)w * s * h * s);
        size_t small_index = plane * w * h + (size_t)(y / s) * w + x / s;
        if (mode == 1)
            big[i] = scale * small[small_index];
        else
            big[i] += scale * small[small_index];
    }
}

__global__ void upsample_sum_kernel(float *small, int w, int h, int s, float scale, const float *big,
                                    size_t n)
{
    GRID_STRIDE(i, n)  // one thread per small element
    {
        int x = i % w;
        int y = (i / w) % h;
        size_t plane = i / ((size_t)w * h);
        float sum = 0;
        for (int dy = 0; dy < s; dy++)
            for (int dx = 0; dx < s; dx++)
                sum += scale * big[(plane * h * s + (size_t)y * s + dy) * w * s + (size_t)x * s + dx];
        small[i] += sum;
    }
}

void dn_upsample_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int s = l->u.upsample.stride;
    if (l->u.upsample.reverse) {
        size_t n = (size_t)l->batch * l->out_size;
        dn_fill_gpu(gpu, l->gpu.output, n, 0.f);
        upsample_sum_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.output, l->out_w, l->out_h, s,
                                                                   l->u.upsample.scale, ctx->gpu->input, n);
    } else {
        size_t n = (size_t)l->batch * l->out_size;
        upsample_big_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>((float *)ctx->gpu->input, l->in_w,
                                                                   l->in_h, s, 1, l->u.upsample.scale,
                                                                   l->gpu.output, n);
    }
    GPU_LAUNCHED(gpu);
}

void dn_upsample_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->gpu->input_delta) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    int s = l->u.upsample.stride;
    if (l->u.upsample.reverse) {
        size_t n = (size_t)l->batch * l->in_size;
        upsample_big_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.delta, l->out_w, l->out_h, s, 2,
                                                                   l->u.upsample.scale,
                                                                   ctx->gpu->input_delta, n);
    } else {
        size_t n = (size_t)l->batch * l->in_size;
        upsample_sum_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(ctx->gpu->input_delta, l->in_w, l->in_h,
                                                                   s, l->u.upsample.scale, l->gpu.delta, n);
    }
    GPU_LAUNCHED(gpu);
}

// ---- [dropout]: the mask is drawn on the host (the network's seeded generator) -------------

__global__ void dropout_kernel(const float *in, const float *mask, float probability, float scale,
                               float *out, size_t n)
{
    GRID_STRIDE(i, n) out[i] = mask[i] < probability ? 0.f : in[i] * scale;
}

__global__ void dropout_backward_kernel(const float *delta, const float *mask, float probability,
                                        float scale, float *input_delta, size_t n)
{
    GRID_STRIDE(i, n) if (mask[i] >= probability) input_delta[i] += delta[i] * scale;
}

void dn_dropout_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    if (!ctx->train) {
        dn_copy_gpu(gpu, l->gpu.output, ctx->gpu->input, n);
        return;
    }
    for (size_t i = 0; i < n; i++) l->u.dropout.rand[i] = dn_rng_uniform(ctx->rng);
    GPU_CHECK(gpu, cudaMemcpyAsync(l->gpu.mask, l->u.dropout.rand, n * sizeof(float),
                                   cudaMemcpyHostToDevice, gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
    dropout_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(ctx->gpu->input, l->gpu.mask,
                                                          l->u.dropout.probability, l->u.dropout.scale,
                                                          l->gpu.output, n);
    GPU_LAUNCHED(gpu);
}

void dn_dropout_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->gpu->input_delta) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    dropout_backward_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(l->gpu.delta, l->gpu.mask,
                                                                   l->u.dropout.probability,
                                                                   l->u.dropout.scale,
                                                                   ctx->gpu->input_delta, n);
    GPU_LAUNCHED(gpu);
}

// ---- [crop]: the centre at inference, a random window when training (as crop_layer.c) ---------

__global__ void crop_kernel(const float *in, int in_w, int in_h, int c, int out_w, int out_h, int dw,
                            int dh, int flip, float scale, float trans, float *out, size_t per_image,
                            int image)
{
    GRID_STRIDE(i, per_image)
    {
        int j = i % out_w;
        int y = (i / out_w) % out_h;
        int k = i / ((size_t)out_w * out_h);
        int col = flip ? in_w - dw - j - 1 : j + dw;
        int row = y + dh;
        size_t index = (size_t)col + (size_t)in_w * (row + (size_t)in_h * (k + (size_t)c * image));
        out[(size_t)image * per_image + i] = in[index] * scale + trans;
    }
}

void dn_crop_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    float scale = l->u.crop.noadjust ? 1.f : 2.f, trans = l->u.crop.noadjust ? 0.f : -1.f;
    size_t per_image = (size_t)l->out_size;
    for (int b = 0; b < l->batch; b++) {
        int flip = 0, dh = (l->in_h - l->out_h) / 2, dw = (l->in_w - l->out_w) / 2;
        if (ctx->train) {
            flip = l->u.crop.flip && dn_rng_int(ctx->rng, 2);
            dh = dn_rng_int(ctx->rng, l->in_h - l->out_h + 1);
            dw = dn_rng_int(ctx->rng, l->in_w - l->out_w + 1);
        }
        crop_kernel<<<dn_blocks(per_image), 256, 0, gpu->stream>>>(ctx->gpu->input, l->in_w, l->in_h,
                                                                   l->in_c, l->out_w, l->out_h, dw, dh,
                                                                   flip, scale, trans, l->gpu.output,
                                                                   per_image, b);
        GPU_LAUNCHED(gpu);
    }
}

void dn_crop_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    (void)l;
    (void)ctx; /* as darknet: no gradient through a crop */
}
