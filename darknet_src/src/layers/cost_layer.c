/* [cost]: a loss on the previous layer's output.  type=sse (darknet's
 * default): error = (truth - x)^2, delta = truth - x; backward adds
 * scale * delta to the input's delta.  Like darknet, its own output is
 * not an activation: the network's output is the last non-cost layer. */
#include <string.h>

#include "../blas.h"
#include "../error.h"
#include "../layer.h"
#include "detection_layers.h"

static dn_status cost_parse(dn_layer *l, const dn_build *b)
{
    const char *type;
    DN_TRY(dn_cfg_str(b->cfg, b->section, "type", "sse", &type));
    if (strcmp(type, "sse") != 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_UNSUPPORTED,
                            "type=%s: only the sse cost is implemented", type);
    l->u.cost.kind = DN_COST_SSE;
    DN_TRY(dn_cfg_float(b->cfg, b->section, "scale", 1, &l->u.cost.scale));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "ratio", 0, &l->u.cost.ratio));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "noobj", 1, &l->u.cost.noobject_scale));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "thresh", 0, &l->u.cost.thresh));
    if (l->u.cost.ratio != 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_UNSUPPORTED,
                            "ratio=%g: hard-example ratios are not implemented", l->u.cost.ratio);
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    DN_TRY(dn_layer_set_output_shape(l, b, b->w, b->h, b->c));
    l->truth_size = l->in_size;
    return DN_OK;
}

static dn_status cost_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status cost_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    DN_TRY(dn_layer_set_output_shape(l, NULL, in_w, in_h, l->in_c));
    l->truth_size = l->in_size;
    return DN_OK;
}

void dn_sse_loss(dn_layer *l, const dn_ctx *ctx, const float *input)
{
    float cost = 0;
    for (int b = 0; b < l->batch; b++)
        for (int k = 0; k < l->in_size; k++) {
            size_t i = (size_t)b * l->in_size + k;
            float diff = ctx->truth[(size_t)b * ctx->truth_stride + k] - input[i];
            l->output[i] = diff * diff;
            l->delta[i] = diff;
            cost += l->output[i];
        }
    l->cost = cost;
}

static void cost_forward(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->train && ctx->truth) dn_sse_loss(l, ctx, ctx->input);
}

static void cost_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->input_delta)
        dn_axpy(ctx->input_delta, l->u.cost.scale, l->delta, (size_t)l->batch * l->in_size);
}

static void cost_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_cost_ops = {
    .type = DN_LAYER_COST,
    .name = "cost",
    .parse = cost_parse,
    .alloc = cost_alloc,
    .forward = cost_forward,
    .backward = cost_backward,
    .resize = cost_resize,
    .free = cost_free,
};
