/* [route]: concatenate the outputs of earlier layers along channels.
 * layers= takes relative (negative: this index + value) or absolute indexes. */
#include <stdlib.h>
#include <string.h>

#include "../blas.h"
#include "../error.h"
#include "../layer.h"

static dn_status route_set_shape(dn_layer *l, const dn_build *b)
{
    dn_layer *first = l->sources[0];
    int64_t channels = 0;
    for (int i = 0; i < l->n_sources; i++) {
        dn_layer *src = l->sources[i];
        if (src->out_w != first->out_w || src->out_h != first->out_h) {
            if (b)
                return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                                    "layers %d (%dx%dx%d) and %d (%dx%dx%d) differ in width or "
                                    "height and cannot be concatenated",
                                    first->index, first->out_w, first->out_h, first->out_c,
                                    src->index, src->out_w, src->out_h, src->out_c);
            return DN_FAIL(DN_ERR_ARG, "its inputs %d (%dx%d) and %d (%dx%d) differ in size",
                           first->index, first->out_w, first->out_h, src->index, src->out_w,
                           src->out_h);
        }
        channels += src->out_c;
    }
    /* the input is the concatenation itself: its channels are known once
     * the output's are checked (1 until then) */
    l->in_w = first->out_w;
    l->in_h = first->out_h;
    l->in_c = 1;
    DN_TRY(dn_layer_set_output_shape(l, b, first->out_w, first->out_h, channels));
    l->in_c = l->out_c;
    l->in_size = l->out_size;
    return DN_OK;
}

static dn_status route_parse(dn_layer *l, const dn_build *b)
{
    int *indexes = NULL, n = 0;
    DN_TRY(dn_cfg_int_list(b->cfg, b->section, "layers", &indexes, &n));
    if (n == 0)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "route needs layers= (one or more layer indexes)");
    l->sources = calloc((size_t)n, sizeof *l->sources);
    l->source_index = calloc((size_t)n, sizeof *l->source_index);
    if (!l->sources || !l->source_index) {
        free(indexes);
        return DN_FAIL(DN_ERR_OOM, "out of memory building a route layer");
    }
    l->n_sources = n;
    for (int i = 0; i < n; i++) {
        int index = indexes[i] < 0 ? b->index + indexes[i] : indexes[i];
        if (index < 0 || index >= b->index) {
            dn_status st = dn_cfg_error(
                b->cfg, b->section, DN_ERR_CFG,
                "layers=%d refers to layer %d, but this is layer %d: expected an earlier layer "
                "(0..%d, or -1..-%d relative)",
                indexes[i], index, b->index, b->index - 1, b->index);
            free(indexes);
            return st;
        }
        l->source_index[i] = index;
        l->sources[i] = &b->layers[index];
    }
    free(indexes);
    return route_set_shape(l, b);
}

static dn_status route_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status route_resize(dn_layer *l, int in_w, int in_h)
{
    (void)in_w;
    (void)in_h;
    return route_set_shape(l, NULL);
}

static void route_forward(dn_layer *l, const dn_ctx *ctx)
{
    (void)ctx;
    size_t offset = 0;
    for (int i = 0; i < l->n_sources; i++) {
        const dn_layer *src = l->sources[i];
        size_t part = (size_t)src->out_size;
        for (int b = 0; b < l->batch; b++)
            dn_copy(l->output + offset + (size_t)b * l->out_size, src->output + b * part, part);
        offset += part;
    }
}

static void route_backward(dn_layer *l, const dn_ctx *ctx)
{
    (void)ctx;
    size_t offset = 0;
    for (int i = 0; i < l->n_sources; i++) {
        dn_layer *src = l->sources[i];
        size_t part = (size_t)src->out_size;
        if (src->delta)
            for (int b = 0; b < l->batch; b++)
                dn_axpy(src->delta + b * part, 1.f, l->delta + offset + (size_t)b * l->out_size,
                        part);
        offset += part;
    }
}

static void route_free(dn_layer *l)
{
    dn_layer_free_output(l);
    free(l->sources);
    free(l->source_index);
    l->sources = NULL;
    l->source_index = NULL;
}

const dn_layer_ops dn_route_ops = {
    .type = DN_LAYER_ROUTE,
    .name = "route",
    .parse = route_parse,
    .alloc = route_alloc,
    .forward = route_forward,
    .backward = route_backward,
    .resize = route_resize,
    .free = route_free,
};
