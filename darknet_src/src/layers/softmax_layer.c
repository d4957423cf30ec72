/* [softmax]: softmax over each of `groups` equal slices of the input, with
 * temperature.  As a loss layer (training with truth), cross-entropy:
 * delta = truth - p. */
#include <math.h>

#include "../blas.h"
#include "../error.h"
#include "../layer.h"
#include "detection_layers.h"

static dn_status softmax_parse(dn_layer *l, const dn_build *b)
{
    DN_TRY(dn_cfg_int(b->cfg, b->section, "groups", 1, &l->u.softmax.groups));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "temperature", 1, &l->u.softmax.temperature));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "noloss", 0, &l->u.softmax.noloss));
    const char *tree;
    DN_TRY(dn_cfg_str(b->cfg, b->section, "tree", NULL, &tree));
    if (tree)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_UNSUPPORTED,
                            "tree=%s: hierarchical softmax is not implemented", tree);
    DN_TRY(dn_cfg_require_int(b->cfg, b->section, "spatial", 0,
                              "spatial softmax is not implemented"));
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    DN_TRY(dn_layer_set_output_shape(l, b, b->w, b->h, b->c));
    int groups = l->u.softmax.groups;
    if (groups < 1 || l->in_size % groups)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "groups=%d must divide the %d inputs", groups, l->in_size);
    if (l->u.softmax.temperature == 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "temperature=0, expected non-zero");
    l->truth_size = l->in_size;
    return DN_OK;
}

static dn_status softmax_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status softmax_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    DN_TRY(dn_layer_set_output_shape(l, NULL, in_w, in_h, l->in_c));
    l->truth_size = l->in_size;
    return l->in_size % l->u.softmax.groups
               ? DN_FAIL(DN_ERR_ARG, "groups=%d do not divide its %d inputs", l->u.softmax.groups,
                         l->in_size)
               : DN_OK;
}

void dn_softmax_loss(dn_layer *l, const dn_ctx *ctx)
{
    int inputs = l->in_size;
    float cost = 0;
    for (int b = 0; b < l->batch; b++)
        for (int k = 0; k < inputs; k++) {
            size_t i = (size_t)b * inputs + k;
            float t = ctx->truth[(size_t)b * ctx->truth_stride + k], p = l->output[i];
            if (t != 0) cost += -logf(p);
            l->delta[i] = t - p;
        }
    l->cost = cost;
}

static void softmax_forward(dn_layer *l, const dn_ctx *ctx)
{
    int groups = l->u.softmax.groups, inputs = l->in_size;
    dn_softmax_blocks(ctx->input, inputs / groups, l->batch, inputs, groups, inputs / groups, 1,
                      l->u.softmax.temperature, l->output);
    if (ctx->train && ctx->truth && !l->u.softmax.noloss) dn_softmax_loss(l, ctx);
}

static void softmax_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->input_delta) dn_axpy(ctx->input_delta, 1.f, l->delta, (size_t)l->batch * l->in_size);
}

static void softmax_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_softmax_ops = {
    .type = DN_LAYER_SOFTMAX,
    .name = "softmax",
    .alias = "soft",
    .parse = softmax_parse,
    .alloc = softmax_alloc,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .resize = softmax_resize,
    .free = softmax_free,
};
