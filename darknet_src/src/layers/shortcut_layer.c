/* [shortcut]: out = act(alpha * in + beta * from), where `from` may have a
 * different size (darknet samples or strides it to fit, over the smaller
 * channel count).  Output has the shape of the previous layer. */
#include <stdlib.h>

#include "../blas.h"
#include "../error.h"
#include "../layer.h"

static dn_status check_sizes(const dn_layer *l, const dn_layer *from, const dn_build *b)
{
    int w1 = from->out_w, h1 = from->out_h, w2 = l->out_w, h2 = l->out_h;
    int stride = w1 / w2, sample = w2 / w1;
    int ok = (stride == h1 / h2) && (sample == h2 / h1);
    if (ok && stride > 1) ok = (w1 % w2 == 0) && (h1 % h2 == 0);
    if (ok && sample > 1) ok = (w2 % w1 == 0) && (h2 % h1 == 0);
    if (ok) return DN_OK;
    if (b)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "from=%d (layer %d, %dx%d) cannot be added to the %dx%d input: sizes "
                            "must be equal or integer multiples in both directions",
                            l->source_index[0] - l->index, from->index, w1, h1, w2, h2);
    return DN_FAIL(DN_ERR_ARG, "layer %d (%dx%d) cannot be added to its %dx%d input", from->index,
                   w1, h1, w2, h2);
}

static dn_status shortcut_parse(dn_layer *l, const dn_build *b)
{
    int from;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "from", 0, &from));
    int index = from < 0 ? b->index + from : from;
    if (index < 0 || index >= b->index)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "from=%d refers to layer %d, but this is layer %d: expected an earlier "
                            "layer",
                            from, index, b->index);
    DN_TRY(dn_layer_read_activation(l, b, "linear"));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "alpha", 1, &l->u.shortcut.alpha));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "beta", 1, &l->u.shortcut.beta));
    l->sources = calloc(1, sizeof *l->sources);
    l->source_index = calloc(1, sizeof *l->source_index);
    if (!l->sources || !l->source_index)
        return DN_FAIL(DN_ERR_OOM, "out of memory building a shortcut layer");
    l->n_sources = 1;
    l->sources[0] = &b->layers[index];
    l->source_index[0] = index;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    DN_TRY(dn_layer_set_output_shape(l, b, b->w, b->h, b->c));
    return check_sizes(l, l->sources[0], b);
}

static dn_status shortcut_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status shortcut_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    DN_TRY(dn_layer_set_output_shape(l, NULL, in_w, in_h, l->in_c));
    return check_sizes(l, l->sources[0], NULL);
}

/* out[at the sampled position] = s1*out + s2*add[at the strided position],
 * over min(w), min(h), min(c) (darknet's shortcut_cpu). */
static void shortcut_add(int batch, int w1, int h1, int c1, const float *add, int w2, int h2,
                         int c2, float s1, float s2, float *out)
{
    int stride = w1 / w2, sample = w2 / w1;
    if (stride < 1) stride = 1;
    if (sample < 1) sample = 1;
    int minw = w1 < w2 ? w1 : w2, minh = h1 < h2 ? h1 : h2, minc = c1 < c2 ? c1 : c2;
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < minc; k++)
            for (int j = 0; j < minh; j++)
                for (int i = 0; i < minw; i++) {
                    size_t out_index =
                        (size_t)i * sample + (size_t)w2 * (j * sample + (size_t)h2 * (k + (size_t)c2 * b));
                    size_t add_index =
                        (size_t)i * stride + (size_t)w1 * (j * stride + (size_t)h1 * (k + (size_t)c1 * b));
                    out[out_index] = s1 * out[out_index] + s2 * add[add_index];
                }
}

static void shortcut_forward(dn_layer *l, const dn_ctx *ctx)
{
    const dn_layer *from = l->sources[0];
    dn_copy(l->output, ctx->input, (size_t)l->batch * l->out_size);
    shortcut_add(l->batch, from->out_w, from->out_h, from->out_c, from->output, l->out_w, l->out_h,
                 l->out_c, l->u.shortcut.alpha, l->u.shortcut.beta, l->output);
    dn_activate_array(ctx->pool, l->output, (size_t)l->batch * l->out_size, l->activation);
}

/* darknet: delta_in += alpha * delta, delta_from += beta * delta (sampled). */
static void shortcut_backward(dn_layer *l, const dn_ctx *ctx)
{
    dn_layer *from = l->sources[0];
    dn_gradient_array(ctx->pool, l->output, (size_t)l->batch * l->out_size, l->activation,
                      l->delta);
    if (ctx->input_delta)
        dn_axpy(ctx->input_delta, l->u.shortcut.alpha, l->delta, (size_t)l->batch * l->out_size);
    if (from->delta)
        shortcut_add(l->batch, l->out_w, l->out_h, l->out_c, l->delta, from->out_w, from->out_h,
                     from->out_c, 1.f, l->u.shortcut.beta, from->delta);
}

static void shortcut_free(dn_layer *l)
{
    dn_layer_free_output(l);
    free(l->sources);
    free(l->source_index);
    l->sources = NULL;
    l->source_index = NULL;
}

const dn_layer_ops dn_shortcut_ops = {
    .type = DN_LAYER_SHORTCUT,
    .name = "shortcut",
    .parse = shortcut_parse,
    .alloc = shortcut_alloc,
    .forward = shortcut_forward,
    .backward = shortcut_backward,
    .resize = shortcut_resize,
    .free = shortcut_free,
};
