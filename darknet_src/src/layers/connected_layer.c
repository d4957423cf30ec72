/* [connected]: out = act(BN(in * W^T) + b); W[outputs][inputs]. */
#include "../blas.h"
#include "../error.h"
#include "../gemm.h"
#include "../layer.h"
#include "batchnorm.h"

static dn_status connected_parse(dn_layer *l, const dn_build *b)
{
    int outputs, bn;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "output", 1, &outputs));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "batch_normalize", 0, &bn));
    DN_TRY(dn_layer_read_activation(l, b, "logistic"));
    if (outputs < 1)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "output=%d, expected >= 1", outputs);
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    DN_TRY(dn_layer_set_output_shape(l, b, 1, 1, outputs));
    l->batch_normalize = bn;
    l->n_biases = outputs;
    l->n_weights = (size_t)outputs * l->in_size;
    l->bflops = 2.0 * l->in_size * outputs / 1000000000.;
    return DN_OK;
}

static dn_status connected_alloc(dn_layer *l, int train)
{
    DN_TRY(dn_layer_alloc_output(l, train));
    return dn_layer_alloc_bn(l, train);
}

static void connected_forward(dn_layer *l, const dn_ctx *ctx)
{
    int outputs = l->out_size, inputs = l->in_size;
    dn_gemm(ctx->pool, 0, 1, l->batch, outputs, inputs, 1.f, ctx->input, inputs, l->weights,
            inputs, 0.f, l->output, outputs);
    if (l->batch_normalize)
        dn_batchnorm_forward(l, ctx, 1);
    else
        dn_add_bias(l->output, l->biases, l->batch, outputs, 1);
    dn_activate_array(ctx->pool, l->output, (size_t)l->batch * outputs, l->activation);
}

static void connected_backward(dn_layer *l, const dn_ctx *ctx)
{
    int outputs = l->out_size, inputs = l->in_size;
    dn_gradient_array(ctx->pool, l->output, (size_t)l->batch * outputs, l->activation, l->delta);
    if (l->batch_normalize)
        dn_batchnorm_backward(l, ctx, 1);
    else
        dn_backward_bias(l->bias_grads, l->delta, l->batch, outputs, 1);
    /* dW += delta^T * in */
    dn_gemm(ctx->pool, 1, 0, outputs, inputs, l->batch, 1.f, l->delta, outputs, ctx->input, inputs,
            1.f, l->weight_grads, inputs);
    /* d_in += delta * W */
    if (ctx->input_delta)
        dn_gemm(ctx->pool, 0, 0, l->batch, inputs, outputs, 1.f, l->delta, outputs, l->weights,
                inputs, 1.f, ctx->input_delta, inputs);
}

static dn_status connected_resize(dn_layer *l, int in_w, int in_h)
{
    if ((int64_t)in_w * in_h * l->in_c != l->in_size)
        return DN_FAIL(DN_ERR_ARG, "its input is fixed at %d values (%dx%dx%d); %dx%dx%d would be %lld",
                       l->in_size, l->in_w, l->in_h, l->in_c, in_w, in_h, l->in_c,
                       (long long)in_w * in_h * l->in_c);
    return DN_OK;
}

static void connected_free(dn_layer *l)
{
    dn_layer_free_output(l);
    dn_layer_free_bn(l);
}

const dn_layer_ops dn_connected_ops = {
    .type = DN_LAYER_CONNECTED,
    .name = "connected",
    .alias = "conn",
    .parse = connected_parse,
    .alloc = connected_alloc,
    .forward = connected_forward,
    .backward = connected_backward,
    .update = dn_layer_sgd_update,
    .resize = connected_resize,
    .free = connected_free,
};
