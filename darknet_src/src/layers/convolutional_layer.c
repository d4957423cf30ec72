/* [convolutional]: out = act(BN(W * im2col(in)) + b), grouped.
 * Weights W[filters][in_c/groups][size][size]; out_h = (in_h + 2*pad - size)/stride + 1. */
#include <math.h>
#include <string.h>

#include "../blas.h"
#include "../error.h"
#include "../gemm.h"
#include "../im2col.h"
#include "../layer.h"
#include "batchnorm.h"

static void set_output_shape(dn_layer *l)
{
    int size = l->u.conv.size, stride = l->u.conv.stride, pad = l->u.conv.pad;
    l->out_w = (l->in_w + 2 * pad - size) / stride + 1;
    l->out_h = (l->in_h + 2 * pad - size) / stride + 1;
    l->out_c = l->u.conv.filters;
    l->out_size = l->out_w * l->out_h * l->out_c;
    l->in_size = l->in_w * l->in_h * l->in_c;
    int groups = l->u.conv.groups;
    l->bflops = (2.0 * l->u.conv.filters * size * size * l->in_c / groups * l->out_h * l->out_w) /
                1000000000.;
}

/* A 1x1, stride-1, unpadded convolution reads its input as the im2col matrix. */
static int input_is_columns(const dn_layer *l)
{
    return l->u.conv.size == 1 && l->u.conv.stride == 1 && l->u.conv.pad == 0;
}

static void set_workspace(dn_layer *l)
{
    l->workspace_size = input_is_columns(l) ? 0
                        : (size_t)l->out_h * l->out_w * l->u.conv.size * l->u.conv.size *
                              (l->in_c / l->u.conv.groups);
}

static dn_status conv_parse(dn_layer *l, const dn_build *b)
{
    const dn_cfg *cfg = b->cfg;
    dn_section *s = b->section;
    int filters, size, stride, pad_flag, padding, groups, bn;
    DN_TRY(dn_cfg_int(cfg, s, "filters", 1, &filters));
    DN_TRY(dn_cfg_int(cfg, s, "size", 1, &size));
    DN_TRY(dn_cfg_int(cfg, s, "stride", 1, &stride));
    DN_TRY(dn_cfg_int(cfg, s, "pad", 0, &pad_flag));
    DN_TRY(dn_cfg_int(cfg, s, "padding", 0, &padding));
    DN_TRY(dn_cfg_int(cfg, s, "groups", 1, &groups));
    DN_TRY(dn_cfg_int(cfg, s, "batch_normalize", 0, &bn));
    DN_TRY(dn_layer_read_activation(l, b, "logistic"));
    DN_TRY(dn_cfg_require_int(cfg, s, "binary", 0, "XNOR/binary networks are not implemented"));
    DN_TRY(dn_cfg_require_int(cfg, s, "xnor", 0, "XNOR/binary networks are not implemented"));
    int flipped;
    DN_TRY(dn_cfg_int(cfg, s, "flipped", 0, &flipped));
    float dot;
    DN_TRY(dn_cfg_float(cfg, s, "dot", 0, &dot));

    if (filters < 1) return dn_cfg_error(cfg, s, DN_ERR_CFG, "filters=%d, expected >= 1", filters);
    if (size < 1) return dn_cfg_error(cfg, s, DN_ERR_CFG, "size=%d, expected >= 1", size);
    if (stride < 1) return dn_cfg_error(cfg, s, DN_ERR_CFG, "stride=%d, expected >= 1", stride);
    if (padding < 0) return dn_cfg_error(cfg, s, DN_ERR_CFG, "padding=%d, expected >= 0", padding);
    if (groups < 1 || b->c % groups || filters % groups)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "groups=%d must divide both the input channels (%d) and filters (%d)",
                            groups, b->c, filters);
    if (pad_flag) padding = size / 2; /* darknet: pad=1 means size/2 and overrides padding= */

    l->u.conv.filters = filters;
    l->u.conv.size = size;
    l->u.conv.stride = stride;
    l->u.conv.pad = padding;
    l->u.conv.groups = groups;
    l->batch_normalize = bn;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    set_output_shape(l);
    if (l->out_w < 1 || l->out_h < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "a %dx%d kernel with stride %d and padding %d does not fit a %dx%d input",
                            size, size, stride, padding, b->w, b->h);
    l->n_biases = filters;
    l->n_weights = (size_t)filters * (b->c / groups) * size * size;
    set_workspace(l);
    l->u.conv.flipped = flipped;
    return DN_OK;
}

/* Backward over small weight matrices runs images in parallel, each group of
 * images summing into its own copy of the weight gradient (then added up in
 * group order): the number of groups depends only on the layer's shapes, so
 * results are the same whatever the thread count.  Large layers parallelise
 * inside the GEMM instead. */
#define BACKWARD_SCRATCH_FLOATS ((size_t)24 << 20) /* 96 MiB of workspace at most */
#define BACKWARD_MAX_PARTS 8

static size_t columns_per_image(const dn_layer *l)
{
    return (size_t)l->out_h * l->out_w * l->u.conv.size * l->u.conv.size * (l->in_c / l->u.conv.groups);
}

static int backward_parts(const dn_layer *l)
{
    size_t per_part = l->n_weights + columns_per_image(l);
    int parts = dn_min_int(l->batch, BACKWARD_MAX_PARTS);
    while (parts > 1 && (size_t)parts * per_part > BACKWARD_SCRATCH_FLOATS) parts--;
    return parts;
}

static dn_status conv_alloc(dn_layer *l, int train)
{
    set_workspace(l);
    l->u.conv.backward_parts = 1;
    if (train) {
        l->u.conv.backward_parts = backward_parts(l);
        size_t need = (size_t)l->u.conv.backward_parts * (l->n_weights + columns_per_image(l));
        if (l->u.conv.backward_parts > 1 && need > l->workspace_size) l->workspace_size = need;
    }
    DN_TRY(dn_layer_alloc_output(l, train));
    return dn_layer_alloc_bn(l, train);
}

static dn_status conv_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    set_output_shape(l);
    if (l->out_w < 1 || l->out_h < 1)
        return DN_FAIL(DN_ERR_ARG, "layer %d ([convolutional]): input %dx%d too small", l->index,
                       in_w, in_h);
    set_workspace(l);
    return DN_OK;
}

/* ---- forward ---------------------------------------------------------------- */

/* out[g] = W[g] * columns(in[g]) for every image and group; the epilogue
 * (bias or folded BN, then activation) is fused into the GEMM at inference. */
static void conv_gemm(dn_layer *l, const dn_ctx *ctx, const dn_gemm_epilogue *epilogue)
{
    int groups = l->u.conv.groups;
    int m = l->u.conv.filters / groups;
    int k = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    int n = l->out_w * l->out_h;
    size_t in_group = (size_t)(l->in_c / groups) * l->in_h * l->in_w;
    for (int b = 0; b < l->batch; b++)
        for (int g = 0; g < groups; g++) {
            const float *weights = l->weights + (size_t)g * l->n_weights / groups;
            const float *im = ctx->input + ((size_t)b * groups + g) * in_group;
            float *out = l->output + ((size_t)b * groups + g) * n * m;
            const float *columns = im;
            if (!input_is_columns(l)) {
                dn_im2col(ctx->pool, im, l->in_c / groups, l->in_h, l->in_w, l->u.conv.size,
                          l->u.conv.stride, l->u.conv.pad, ctx->workspace);
                columns = ctx->workspace;
            }
            dn_gemm_epilogue group_epilogue;
            const dn_gemm_epilogue *ep = NULL;
            if (epilogue) {
                group_epilogue = *epilogue;
                if (group_epilogue.row_scale) group_epilogue.row_scale += (size_t)g * m;
                if (group_epilogue.row_shift) group_epilogue.row_shift += (size_t)g * m;
                ep = &group_epilogue;
            }
            dn_gemm_ex(ctx->pool, 0, 0, m, n, k, 1.f, weights, k, columns, n, 0.f, out, n, ep);
        }
}

static void conv_forward(dn_layer *l, const dn_ctx *ctx)
{
    int filters = l->u.conv.filters;
    int spatial = l->out_w * l->out_h;
    if (ctx->train) {
        conv_gemm(l, ctx, NULL);
        if (l->batch_normalize)
            dn_batchnorm_forward(l, ctx, spatial);
        else
            dn_add_bias(l->output, l->biases, l->batch, filters, spatial);
        dn_activate_array(ctx->pool, l->output, (size_t)l->batch * l->out_size, l->activation);
        return;
    }
    /* inference: bias / batch norm and activation fused into the GEMM */
    float factors[2 * 1024];
    float *scale = NULL, *shift = NULL;
    float *heap = NULL;
    if (l->batch_normalize) {
        float *buf = factors;
        if (filters > 1024) {
            heap = dn_alloc_floats(2 * (size_t)filters, "batch-norm factors");
            buf = heap;
        }
        if (buf) {
            scale = buf;
            shift = buf + filters;
            dn_batchnorm_factors(l->rolling_mean, l->rolling_variance, l->scales, l->biases,
                                 filters, scale, shift);
        }
    }
    if (l->batch_normalize && !scale) { /* no memory for factors: unfused path */
        conv_gemm(l, ctx, NULL);
        dn_batchnorm_forward(l, ctx, spatial);
        dn_activate_array(ctx->pool, l->output, (size_t)l->batch * l->out_size, l->activation);
        return;
    }
    dn_gemm_epilogue epilogue = {scale, l->batch_normalize ? shift : l->biases, (int)l->activation};
    conv_gemm(l, ctx, &epilogue);
    dn_free(heap);
}

/* ---- backward ---------------------------------------------------------------- */

/* The backward of images [b0, b1): weight gradient into `weight_grads`,
 * input delta into ctx->input_delta (each image's own region), `columns`
 * as scratch. */
static void backward_images(dn_layer *l, const dn_ctx *ctx, int b0, int b1, float *weight_grads,
                            float *columns_buffer)
{
    int groups = l->u.conv.groups;
    int m = l->u.conv.filters / groups;
    int n = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    int k = l->out_w * l->out_h;
    size_t in_group = (size_t)(l->in_c / groups) * l->in_h * l->in_w;
    for (int b = b0; b < b1; b++)
        for (int g = 0; g < groups; g++) {
            const float *delta = l->delta + ((size_t)b * groups + g) * m * k;
            const float *im = ctx->input + ((size_t)b * groups + g) * in_group;
            float *grads = weight_grads + (size_t)g * l->n_weights / groups;
            const float *columns = im;
            if (!input_is_columns(l)) {
                dn_im2col(ctx->pool, im, l->in_c / groups, l->in_h, l->in_w, l->u.conv.size,
                          l->u.conv.stride, l->u.conv.pad, columns_buffer);
                columns = columns_buffer;
            }
            /* dW += delta * columns^T */
            dn_gemm(ctx->pool, 0, 1, m, n, k, 1.f, delta, k, columns, k, 1.f, grads, n);

            if (!ctx->input_delta) continue;
            const float *weights = l->weights + (size_t)g * l->n_weights / groups;
            float *input_delta = ctx->input_delta + ((size_t)b * groups + g) * in_group;
            if (input_is_columns(l)) {
                /* d_in += W^T * delta directly */
                dn_gemm(ctx->pool, 1, 0, n, k, m, 1.f, weights, n, delta, k, 1.f, input_delta, k);
            } else {
                dn_gemm(ctx->pool, 1, 0, n, k, m, 1.f, weights, n, delta, k, 0.f, columns_buffer,
                        k);
                dn_col2im(ctx->pool, columns_buffer, l->in_c / groups, l->in_h, l->in_w,
                          l->u.conv.size, l->u.conv.stride, l->u.conv.pad, input_delta);
            }
        }
}

typedef struct {
    dn_layer *l;
    const dn_ctx *ctx;
    int parts;
    size_t per_part;
} backward_job;

static void backward_part(void *p, int part, int thread)
{
    (void)thread;
    backward_job *j = p;
    dn_layer *l = j->l;
    int b0, b1;
    dn_split_range(l->batch, j->parts, part, &b0, &b1);
    float *partial = j->ctx->workspace + (size_t)part * j->per_part;
    dn_fill(partial, l->n_weights, 0.f);
    backward_images(l, j->ctx, b0, b1, partial, partial + l->n_weights);
}

static void conv_backward(dn_layer *l, const dn_ctx *ctx)
{
    int k = l->out_w * l->out_h;
    dn_gradient_array(ctx->pool, l->output, (size_t)l->batch * l->out_size, l->activation,
                      l->delta);
    if (l->batch_normalize)
        dn_batchnorm_backward(l, ctx, k);
    else
        dn_backward_bias(l->bias_grads, l->delta, l->batch, l->u.conv.filters, k);

    int parts = l->u.conv.backward_parts;
    if (parts <= 1) {
        backward_images(l, ctx, 0, l->batch, l->weight_grads, ctx->workspace);
        return;
    }
    backward_job j = {l, ctx, parts, l->n_weights + columns_per_image(l)};
    dn_pool_run(ctx->pool, parts, backward_part, &j);
    for (int part = 0; part < parts; part++)
        dn_axpy(l->weight_grads, 1.f, ctx->workspace + (size_t)part * j.per_part, l->n_weights);
}

static void conv_free(dn_layer *l)
{
    dn_layer_free_output(l);
    dn_layer_free_bn(l);
}

const dn_layer_ops dn_convolutional_ops = {
    .type = DN_LAYER_CONVOLUTIONAL,
    .name = "convolutional",
    .alias = "conv",
    .parse = conv_parse,
    .alloc = conv_alloc,
    .forward = conv_forward,
    .backward = conv_backward,
    .update = dn_layer_sgd_update,
    .resize = conv_resize,
    .free = conv_free,
};
