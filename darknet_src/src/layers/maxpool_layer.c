/* [maxpool]: darknet's pooling window.
 *
 * Quirks reproduced: padding defaults to size-1 (not 0); the window starts
 * at -padding/2; cells outside the input are ignored (as -inf, not 0); the
 * output is (w + padding - size)/stride + 1.  So yolov3-tiny's size=2
 * stride=1 keeps 13x13 with the window [i, i+1]. */
#include <float.h>

#include "../error.h"
#include "../layer.h"
#include "../util.h"

/* out = (in + padding - size)/stride + 1 on each side (darknet's padding
 * is the total added, not per side). */
static dn_status set_output_shape(dn_layer *l, const dn_build *b)
{
    int64_t pad = l->u.pool.pad;
    return dn_layer_set_window_shape(l, b, "window", l->u.pool.size, l->u.pool.stride, pad, pad, l->in_c);
}

static dn_status maxpool_parse(dn_layer *l, const dn_build *b)
{
    int stride, size, padding;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "stride", 1, &stride));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "size", stride, &size));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "padding", size - 1, &padding));
    if (stride < 1 || size < 1 || padding < 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "size=%d stride=%d padding=%d: expected size, stride >= 1, padding >= 0",
                            size, stride, padding);
    l->u.pool.size = size;
    l->u.pool.stride = stride;
    l->u.pool.pad = padding;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return set_output_shape(l, b);
}

static dn_status maxpool_alloc(dn_layer *l, int train)
{
    DN_TRY(dn_layer_alloc_output(l, train));
    dn_free(l->u.pool.indexes);
    l->u.pool.indexes = NULL;
    if (train) {
        l->u.pool.indexes =
            dn_alloc_zeroed((size_t)l->batch * l->out_size, sizeof(int), "maxpool indexes");
        if (!l->u.pool.indexes) return DN_ERR_OOM;
    }
    return DN_OK;
}

static dn_status maxpool_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return set_output_shape(l, NULL);
}

typedef struct {
    dn_layer *l;
    const float *input;
} pool_job;

/* The window of output (oy, ox) clipped to the input: rows [y0, y1), columns [x0, x1). */
static inline void window(const dn_layer *l, int o, int in, int *lo, int *hi)
{
    int start = -l->u.pool.pad / 2 + o * l->u.pool.stride;
    *lo = start < 0 ? 0 : start;
    int end = start + l->u.pool.size;
    *hi = end > in ? in : end;
}

/* Training: the max and where it came from (first of equal values in scan
 * order, darknet's strict >), so backward can route the delta. */
static void maxpool_plane_indexed(const dn_layer *l, const float *in, size_t in_base, float *out,
                                  int *indexes)
{
    for (int oy = 0; oy < l->out_h; oy++) {
        int y0, y1;
        window(l, oy, l->in_h, &y0, &y1);
        for (int ox = 0; ox < l->out_w; ox++) {
            int x0, x1;
            window(l, ox, l->in_w, &x0, &x1);
            float best = -FLT_MAX;
            int best_index = -1;
            for (int iy = y0; iy < y1; iy++)
                for (int ix = x0; ix < x1; ix++) {
                    float v = in[iy * l->in_w + ix];
                    if (v > best) {
                        best = v;
                        best_index = (int)(in_base + (size_t)iy * l->in_w + ix);
                    }
                }
            out[oy * l->out_w + ox] = best;
            indexes[oy * l->out_w + ox] = best_index;
        }
    }
}

static inline float max2(float a, float b) { return b > a ? b : a; }

/* Vectors of 4 (SSE, in every x86-64) where the compiler has them.  max2 on
 * vectors is MAXPS with its operands swapped (MAXPS x, y = x > y ? x : y),
 * so the vector paths give the scalar loop's bits, NaN and -0 included. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define POOL_VECTORS 1
static inline __m128 max2_4(__m128 a, __m128 b) { return _mm_max_ps(b, a); }
#else
#define POOL_VECTORS 0
#endif

/* 2x2 windows, stride 2, from rows r0 and r1: outputs [0, n), the first
 * `full` of them with both columns inside the row. */
static void max_2x2_stride2(const float *r0, const float *r1, float *o, int n, int full)
{
    int ox = 0;
#if POOL_VECTORS
    const __m128 lowest = _mm_set1_ps(-FLT_MAX);
    for (; ox + 4 <= full; ox += 4) { /* even and odd columns of 8 inputs per row */
        __m128 a0 = _mm_loadu_ps(r0 + 2 * ox), b0 = _mm_loadu_ps(r0 + 2 * ox + 4);
        __m128 a1 = _mm_loadu_ps(r1 + 2 * ox), b1 = _mm_loadu_ps(r1 + 2 * ox + 4);
        __m128 top = max2_4(max2_4(lowest, _mm_shuffle_ps(a0, b0, 0x88)), _mm_shuffle_ps(a0, b0, 0xDD));
        __m128 bottom = max2_4(_mm_shuffle_ps(a1, b1, 0x88), _mm_shuffle_ps(a1, b1, 0xDD));
        _mm_storeu_ps(o + ox, max2_4(top, bottom));
    }
#endif
    for (; ox < full && ox < n; ox++)
        o[ox] = max2(max2(max2(-FLT_MAX, r0[2 * ox]), r0[2 * ox + 1]), max2(r1[2 * ox], r1[2 * ox + 1]));
}

/* Stride 1: outputs [ox, ox + 4) whose windows (size wide, from column
 * ox + offset) lie inside rows [y0, y1), scanned like the scalar loop. */
static int max_stride1(const dn_layer *l, const float *in, int y0, int y1, int offset, float *o)
{
    const int size = l->u.pool.size;
    int ox = dn_max_int(0, -offset);
#if POOL_VECTORS
    for (; ox + 4 <= l->out_w && ox + 3 + offset + size <= l->in_w; ox += 4) {
        __m128 best = _mm_set1_ps(-FLT_MAX);
        for (int iy = y0; iy < y1; iy++)
            for (int kx = 0; kx < size; kx++)
                best = max2_4(best, _mm_loadu_ps(in + (size_t)iy * l->in_w + ox + offset + kx));
        _mm_storeu_ps(o + ox, best);
    }
#else
    (void)in, (void)y0, (void)y1, (void)o, (void)size;
#endif
    return ox;
}

/* Inference: values only; 2x2 windows with stride 2 and stride-1 windows
 * get vector loops, the borders the window-clipping scalar loop. */
static void maxpool_plane_values(const dn_layer *l, const float *in, float *out)
{
    int size = l->u.pool.size, stride = l->u.pool.stride, offset = -l->u.pool.pad / 2;
    for (int oy = 0; oy < l->out_h; oy++) {
        int y0, y1;
        window(l, oy, l->in_h, &y0, &y1);
        float *o = out + (size_t)oy * l->out_w;
        int ox = 0;
        if (size == 2 && stride == 2 && offset == 0 && y1 - y0 == 2) {
            const float *r0 = in + (size_t)y0 * l->in_w, *r1 = r0 + l->in_w;
            int full = l->in_w / 2 < l->out_w ? l->in_w / 2 : l->out_w;
            max_2x2_stride2(r0, r1, o, l->out_w, full);
            ox = full;
        }
        int vector_from = l->out_w, vector_to = l->out_w;
        if (stride == 1) { /* outputs [vector_from, vector_to) by vectors */
            vector_from = dn_max_int(0, -offset);
            vector_to = max_stride1(l, in, y0, y1, offset, o);
        }
        for (; ox < l->out_w; ox++) {
            if (ox == vector_from) ox = vector_to;
            if (ox >= l->out_w) break;
            int x0, x1;
            window(l, ox, l->in_w, &x0, &x1);
            float best = -FLT_MAX;
            for (int iy = y0; iy < y1; iy++)
                for (int ix = x0; ix < x1; ix++) best = max2(best, in[iy * l->in_w + ix]);
            o[ox] = best;
        }
    }
}

/* one (image, channel) plane per task */
static void maxpool_plane(void *p, int plane, int thread)
{
    (void)thread;
    pool_job *j = p;
    dn_layer *l = j->l;
    size_t in_base = (size_t)plane * l->in_h * l->in_w;
    const float *in = j->input + in_base;
    float *out = l->output + (size_t)plane * l->out_h * l->out_w;
    if (l->u.pool.indexes)
        maxpool_plane_indexed(l, in, in_base, out,
                              l->u.pool.indexes + (size_t)plane * l->out_h * l->out_w);
    else
        maxpool_plane_values(l, in, out);
}

static void maxpool_forward(dn_layer *l, const dn_ctx *ctx)
{
    /* indexes exist when the network was built for training; an inference
     * forward of such a network records them too (harmless) */
    pool_job j = {l, ctx->input};
    dn_pool_run(ctx->pool, l->batch * l->in_c, maxpool_plane, &j);
}

static void maxpool_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->input_delta) return;
    size_t n = (size_t)l->batch * l->out_size;
    for (size_t i = 0; i < n; i++) {
        int index = l->u.pool.indexes[i];
        if (index >= 0) ctx->input_delta[index] += l->delta[i];
    }
}

static void maxpool_free(dn_layer *l)
{
    dn_layer_free_output(l);
    dn_free(l->u.pool.indexes);
    l->u.pool.indexes = NULL;
}

const dn_layer_ops dn_maxpool_ops = {
    .type = DN_LAYER_MAXPOOL,
    .name = "maxpool",
    .alias = "max",
    .parse = maxpool_parse,
    .alloc = maxpool_alloc,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .resize = maxpool_resize,
    .free = maxpool_free,
};
