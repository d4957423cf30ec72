/* [upsample]: nearest-neighbour upsampling by `stride`, times `scale`.
 * A negative stride downsamples by summing stride x stride blocks (darknet's
 * reverse mode). */
#include "../blas.h"
#include "../error.h"
#include "../layer.h"

static dn_status set_shape(dn_layer *l, const dn_build *b)
{
    int64_t s = l->u.upsample.stride;
    if (l->u.upsample.reverse) {
        if (l->in_w < s || l->in_h < s)
            return dn_layer_shape_error(b, "stride -%lld does not fit a %dx%d input", (long long)s,
                                        l->in_w, l->in_h);
        return dn_layer_set_output_shape(l, b, l->in_w / s, l->in_h / s, l->in_c);
    }
    return dn_layer_set_output_shape(l, b, l->in_w * s, l->in_h * s, l->in_c);
}

static dn_status upsample_parse(dn_layer *l, const dn_build *b)
{
    int stride;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "stride", 2, &stride));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "scale", 1, &l->u.upsample.scale));
    if (stride == 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "stride=0, expected a non-zero integer");
    l->u.upsample.reverse = stride < 0;
    l->u.upsample.stride = stride < 0 ? -stride : stride;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return set_shape(l, b);
}

static dn_status upsample_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status upsample_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return set_shape(l, NULL);
}

typedef enum {
    SUM_INTO_SMALL,   /* small += scale * (sum of each s x s block of big) */
    COPY_TO_BIG,      /* big = scale * small, replicated */
    ADD_TO_BIG        /* big += scale * small, replicated */
} upsample_mode;

/* small is w x h, big is (w*s) x (h*s), c channels, batch images. */
static void upsample_apply(float *small, int w, int h, int c, int batch, int s,
                           upsample_mode mode, float scale, float *big)
{
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < c; k++) {
            float *sp = small + ((size_t)b * c + k) * w * h;
            float *bp = big + ((size_t)b * c + k) * w * h * s * s;
            for (int j = 0; j < h * s; j++)
                for (int i = 0; i < w * s; i++) {
                    size_t small_index = (size_t)(j / s) * w + i / s;
                    size_t big_index = (size_t)j * w * s + i;
                    switch (mode) {
                    case SUM_INTO_SMALL: sp[small_index] += scale * bp[big_index]; break;
                    case COPY_TO_BIG: bp[big_index] = scale * sp[small_index]; break;
                    case ADD_TO_BIG: bp[big_index] += scale * sp[small_index]; break;
                    }
                }
        }
}

static void upsample_forward(dn_layer *l, const dn_ctx *ctx)
{
    int s = l->u.upsample.stride;
    if (l->u.upsample.reverse) {
        dn_fill(l->output, (size_t)l->batch * l->out_size, 0.f);
        upsample_apply(l->output, l->out_w, l->out_h, l->out_c, l->batch, s, SUM_INTO_SMALL,
                       l->u.upsample.scale, (float *)ctx->input);
    } else {
        upsample_apply((float *)ctx->input, l->in_w, l->in_h, l->in_c, l->batch, s, COPY_TO_BIG,
                       l->u.upsample.scale, l->output);
    }
}

static void upsample_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->input_delta) return;
    int s = l->u.upsample.stride;
    if (l->u.upsample.reverse)
        upsample_apply(l->delta, l->out_w, l->out_h, l->out_c, l->batch, s, ADD_TO_BIG,
                       l->u.upsample.scale, ctx->input_delta);
    else
        upsample_apply(ctx->input_delta, l->in_w, l->in_h, l->in_c, l->batch, s, SUM_INTO_SMALL,
                       l->u.upsample.scale, l->delta);
}

static void upsample_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_upsample_ops = {
    .type = DN_LAYER_UPSAMPLE,
    .name = "upsample",
    .parse = upsample_parse,
    .alloc = upsample_alloc,
    .forward = upsample_forward,
    .backward = upsample_backward,
    .resize = upsample_resize,
    .free = upsample_free,
};
