/* [reorg]: darknet's passthrough rearrangement (YOLOv2).
 *
 * Quirk reproduced on purpose: this is NOT a plain space-to-depth.  darknet
 * calls its reorg routine in the "backward" direction with the INPUT's
 * dimensions (w, h, c): it reads the input as if it were a (w*stride) x
 * (h*stride) x (c/stride^2) tensor and writes each value to the position it
 * would have in a w x h x c tensor.  The output is then read by the next
 * layer as (w/stride) x (h/stride) x (c*stride^2).  Most ports that use a
 * space-to-depth produce different channels.  reverse=1 runs the routine in
 * the other direction (and the shapes grow instead). */
#include "../error.h"
#include "../layer.h"

/* The shapes darknet's routine assumes: stride^2 divides the channels and,
 * unless reverse, the stride divides the width and height (a partial block
 * would index past the output). */
static dn_status set_shape(dn_layer *l, const dn_build *b)
{
    int64_t s = l->u.reorg.stride, block = s * s;
    if (l->in_c % block || (!l->u.reorg.reverse && (l->in_w % s || l->in_h % s)))
        return dn_layer_shape_error(b, "stride %lld does not divide its %dx%dx%d input%s", (long long)s,
                                    l->in_w, l->in_h, l->in_c,
                                    l->u.reorg.reverse ? " (stride*stride must divide the channels)"
                                                       : " (stride must divide the width and height, "
                                                         "stride*stride the channels)");
    if (l->u.reorg.reverse)
        return dn_layer_set_output_shape(l, b, l->in_w * s, l->in_h * s, l->in_c / block);
    return dn_layer_set_output_shape(l, b, l->in_w / s, l->in_h / s, l->in_c * block);
}

static dn_status reorg_parse(dn_layer *l, const dn_build *b)
{
    int stride, reverse;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "stride", 1, &stride));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "reverse", 0, &reverse));
    DN_TRY(dn_cfg_require_int(b->cfg, b->section, "flatten", 0, "reorg flatten is not implemented"));
    DN_TRY(dn_cfg_require_int(b->cfg, b->section, "extra", 0, "reorg extra is not implemented"));
    if (stride < 1)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "stride=%d, expected >= 1", stride);
    l->u.reorg.stride = stride;
    l->u.reorg.reverse = reverse;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return set_shape(l, b);
}

static dn_status reorg_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status reorg_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return set_shape(l, NULL);
}

/* The index pair darknet's routine uses for input element (b, k, j, i) of a
 * w x h x c tensor: `packed` in that tensor, `spread` in the (w*stride) x
 * (h*stride) x (c/stride^2) view of the same memory. */
static void reorg_indexes(int w, int h, int c, int stride, int b, int k, int j, int i,
                          size_t *packed, size_t *spread)
{
    int out_c = c / (stride * stride);
    int c2 = k % out_c;
    int offset = k / out_c;
    int w2 = i * stride + offset % stride;
    int h2 = j * stride + offset / stride;
    *packed = (size_t)i + (size_t)w * (j + (size_t)h * (k + (size_t)c * b));
    *spread = (size_t)w2 + (size_t)w * stride * (h2 + (size_t)h * stride * (c2 + (size_t)out_c * b));
}

/* forward = 1: out[spread] = x[packed]; forward = 0: out[packed] = x[spread]
 * (with add = 1 the value is added instead of stored, for backward). */
static void reorg_apply(const float *x, int w, int h, int c, int batch, int stride, int forward,
                        int add, float *out)
{
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < c; k++)
            for (int j = 0; j < h; j++)
                for (int i = 0; i < w; i++) {
                    size_t packed, spread;
                    reorg_indexes(w, h, c, stride, b, k, j, i, &packed, &spread);
                    size_t to = forward ? spread : packed, from = forward ? packed : spread;
                    if (add)
                        out[to] += x[from];
                    else
                        out[to] = x[from];
                }
}

static void reorg_forward(dn_layer *l, const dn_ctx *ctx)
{
    int s = l->u.reorg.stride;
    if (l->u.reorg.reverse)
        reorg_apply(ctx->input, l->in_w, l->in_h, l->in_c, l->batch, s, 1, 0, l->output);
    else
        reorg_apply(ctx->input, l->in_w, l->in_h, l->in_c, l->batch, s, 0, 0, l->output);
}

/* The adjoint of the permutation: send each delta back where it came from. */
static void reorg_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->input_delta) return;
    int s = l->u.reorg.stride;
    if (l->u.reorg.reverse)
        reorg_apply(l->delta, l->in_w, l->in_h, l->in_c, l->batch, s, 0, 1, ctx->input_delta);
    else
        reorg_apply(l->delta, l->in_w, l->in_h, l->in_c, l->batch, s, 1, 1, ctx->input_delta);
}

static void reorg_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_reorg_ops = {
    .type = DN_LAYER_REORG,
    .name = "reorg",
    .parse = reorg_parse,
    .alloc = reorg_alloc,
    .forward = reorg_forward,
    .backward = reorg_backward,
    .resize = reorg_resize,
    .free = reorg_free,
};
