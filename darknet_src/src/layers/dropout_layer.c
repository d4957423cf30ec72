/* [dropout]: at training time each input is zeroed with `probability` and
 * the rest scaled by 1/(1 - probability); at inference it passes through. */
#include "../blas.h"
#include "../error.h"
#include "../layer.h"

static dn_status set_shape(dn_layer *l, const dn_build *b)
{
    return dn_layer_set_output_shape(l, b, l->in_w, l->in_h, l->in_c);
}

static dn_status dropout_parse(dn_layer *l, const dn_build *b)
{
    float p;
    DN_TRY(dn_cfg_float(b->cfg, b->section, "probability", .5f, &p));
    if (p < 0 || p >= 1)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "probability=%g, expected 0 <= p < 1",
                            p);
    l->u.dropout.probability = p;
    l->u.dropout.scale = 1.f / (1.f - p);
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return set_shape(l, b);
}

static dn_status dropout_alloc(dn_layer *l, int train)
{
    DN_TRY(dn_layer_alloc_output(l, train));
    dn_free(l->u.dropout.rand);
    l->u.dropout.rand = NULL;
    if (train) {
        l->u.dropout.rand = dn_alloc_floats((size_t)l->batch * l->in_size, "dropout mask");
        if (!l->u.dropout.rand) return DN_ERR_OOM;
    }
    return DN_OK;
}

static dn_status dropout_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return set_shape(l, NULL);
}

static void dropout_forward(dn_layer *l, const dn_ctx *ctx)
{
    size_t n = (size_t)l->batch * l->in_size;
    if (!ctx->train) {
        dn_copy(l->output, ctx->input, n);
        return;
    }
    float p = l->u.dropout.probability, scale = l->u.dropout.scale;
    for (size_t i = 0; i < n; i++) {
        float r = dn_rng_uniform(ctx->rng);
        l->u.dropout.rand[i] = r;
        l->output[i] = r < p ? 0.f : ctx->input[i] * scale;
    }
}

static void dropout_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->input_delta) return;
    size_t n = (size_t)l->batch * l->in_size;
    float p = l->u.dropout.probability, scale = l->u.dropout.scale;
    for (size_t i = 0; i < n; i++)
        if (l->u.dropout.rand[i] >= p) ctx->input_delta[i] += l->delta[i] * scale;
}

static void dropout_free(dn_layer *l)
{
    dn_layer_free_output(l);
    dn_free(l->u.dropout.rand);
    l->u.dropout.rand = NULL;
}

const dn_layer_ops dn_dropout_ops = {
    .type = DN_LAYER_DROPOUT,
    .name = "dropout",
    .parse = dropout_parse,
    .alloc = dropout_alloc,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .resize = dropout_resize,
    .free = dropout_free,
};
