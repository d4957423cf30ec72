/* [avgpool]: global average over each channel; out is 1x1xC. */
#include "../error.h"
#include "../layer.h"

static dn_status set_shape(dn_layer *l, const dn_build *b)
{
    return dn_layer_set_output_shape(l, b, 1, 1, l->in_c);
}

static dn_status avgpool_parse(dn_layer *l, const dn_build *b)
{
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return set_shape(l, b);
}

static dn_status avgpool_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status avgpool_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return set_shape(l, NULL);
}

static void avgpool_forward(dn_layer *l, const dn_ctx *ctx)
{
    int spatial = l->in_w * l->in_h;
    for (int b = 0; b < l->batch; b++)
        for (int c = 0; c < l->in_c; c++) {
            const float *in = ctx->input + ((size_t)b * l->in_c + c) * spatial;
            float sum = 0;
            for (int s = 0; s < spatial; s++) sum += in[s];
            l->output[(size_t)b * l->out_c + c] = sum / spatial;
        }
}

static void avgpool_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->input_delta) return;
    int spatial = l->in_w * l->in_h;
    for (int b = 0; b < l->batch; b++)
        for (int c = 0; c < l->in_c; c++) {
            float *d = ctx->input_delta + ((size_t)b * l->in_c + c) * spatial;
            float g = l->delta[(size_t)b * l->out_c + c] / spatial;
            for (int s = 0; s < spatial; s++) d[s] += g;
        }
}

static void avgpool_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_avgpool_ops = {
    .type = DN_LAYER_AVGPOOL,
    .name = "avgpool",
    .alias = "avg",
    .parse = avgpool_parse,
    .alloc = avgpool_alloc,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .resize = avgpool_resize,
    .free = avgpool_free,
};
