/* [convolutional]: out = act(BN(W * im2col(in)) + b), grouped.
 * Weights W[filters][in_c/groups][size][size]; out_h = (in_h + 2*pad - size)/stride + 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../blas.h"
#include "../conv_winograd.h"
#include "../error.h"
#include "../gemm.h"
#include "../im2col.h"
#include "../layer.h"
#include "batchnorm.h"

/* The most weights one filter may span (size*size*input channels): an int
 * in the GEMM's k, im2col's rows (rounded up to 64) and the initialisation. */
#define DN_MAX_FILTER_VALUES (1 << 30)

/* out = (in + 2*pad - size)/stride + 1 on each side. */
static dn_status set_output_shape(dn_layer *l, const dn_build *b)
{
    int64_t size = l->u.conv.size, stride = l->u.conv.stride, pad = l->u.conv.pad;
    DN_TRY(dn_layer_set_window_shape(l, b, "kernel", size, stride, pad, 2 * pad, l->u.conv.filters));
    int groups = l->u.conv.groups;
    l->bflops = (2.0 * l->u.conv.filters * size * size * l->in_c / groups * l->out_h * l->out_w) /
                1000000000.;
    return DN_OK;
}

/* A 1x1, stride-1, unpadded convolution reads its input as the im2col matrix. */
static int input_is_columns(const dn_layer *l)
{
    return l->u.conv.size == 1 && l->u.conv.stride == 1 && l->u.conv.pad == 0;
}

/* Winograd F(4x4, 3x3) can run this convolution at inference. */
static int winograd_applies(const dn_layer *l)
{
    return l->u.conv.size == 3 && l->u.conv.stride == 1 && l->u.conv.groups == 1;
}

/* Scratch: the im2col matrix of one image and group (the plain path, and
 * training), or Winograd's transformed image and products if larger. */
static void set_workspace(dn_layer *l)
{
    size_t im2col = input_is_columns(l) ? 0
                    : (size_t)l->out_h * l->out_w * l->u.conv.size * l->u.conv.size *
                          (l->in_c / l->u.conv.groups);
    size_t winograd = winograd_applies(l) ? dn_winograd_workspace_floats(l->in_c, l->u.conv.filters,
                                                                         l->out_h, l->out_w)
                                          : 0;
    l->workspace_size = im2col > winograd ? im2col : winograd;
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
    /* size*size*channels is an int in the GEMM, im2col and initialisation
     * (size*size fits an int64; times the channels only once it is small) */
    int64_t filter_area = (int64_t)size * size;
    if (filter_area > DN_MAX_FILTER_VALUES || filter_area * b->c > DN_MAX_FILTER_VALUES)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "size=%d with %d input channels: a filter spans %.0f values "
                            "(size*size*channels), at most %d",
                            size, b->c, (double)filter_area * b->c, DN_MAX_FILTER_VALUES);
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
    DN_TRY(set_output_shape(l, b));
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
    DN_TRY(set_output_shape(l, NULL));
    set_workspace(l);
    return DN_OK;
}

/* ---- forward ---------------------------------------------------------------- */

/* The epilogue of group g's filters (its rows of scale and shift), in *out. */
static const dn_gemm_epilogue *group_epilogue(const dn_gemm_epilogue *epilogue, int g, int m,
                                              dn_gemm_epilogue *out)
{
    if (!epilogue) return NULL;
    *out = *epilogue;
    if (out->row_scale) out->row_scale += (size_t)g * m;
    if (out->row_shift) out->row_shift += (size_t)g * m;
    return out;
}

/* out[g] = W[g] * columns(in[g]) for every image and group; the epilogue
 * (bias or folded BN, then activation) is fused into the GEMM at inference.
 * The reference for the inference paths below, and the training path. */
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
            dn_gemm_epilogue group_ep;
            dn_gemm_ex(ctx->pool, 0, 0, m, n, k, 1.f, weights, k, columns, n, 0.f, out, n,
                       group_epilogue(epilogue, g, m, &group_ep));
        }
}

/* ---- inference: packed weights, implicit im2col, Winograd ------------------- */

/* How a convolution runs at inference.  CONV_PLAIN is conv_gemm above.
 * CONV_PACKED gives its bits exactly: the same GEMM, with the weights packed
 * once (not at every forward) and the im2col matrix packed straight from the
 * image (never written out).  CONV_WINOGRAD regroups the sums: other bits,
 * within a few 1e-6 of the output's scale (conv_winograd.c). */
typedef enum { CONV_PLAIN, CONV_PACKED, CONV_WINOGRAD } conv_method;

/* What the layer keeps between forwards: its weights in the form the method
 * reads, rebuilt when the network's params_version moves. */
typedef struct dn_conv_cache dn_conv_cache;
struct dn_conv_cache {
    int valid;
    uint64_t version;     /* ctx->params_version the weights were taken at */
    conv_method method;
    float *weights;       /* CONV_PACKED: each group's packed in turn; CONV_WINOGRAD: U */
    size_t floats;
};

/* Where Winograd beats the packed GEMM.  Per filter and channel, the packed
 * GEMM does 9 multiply-adds per output pixel and reads 36 bytes of weights;
 * Winograd does 36 per 4x4 tile (outputs rounded up to whole tiles) and
 * reads 144 bytes of transformed weights, plus transforms that cost about
 * as much as the GEMM they feed when channels or filters are few.  With
 * ~3.75 multiply-adds per byte of memory bandwidth (2 Zen 3 cores: ~75 G
 * multiply-adds/s, ~20 GB/s), the time of each is the larger of its two
 * terms.  Measured (2 threads, AVX2), Winograd against packed:
 *   channels x filters @ output  16x32@208 3.1 ms / 4.2   64x128@52 1.0 / 2.8
 *   512x1024@13 4.7 / 11.6   1024x1024@13 11 / 24   256x256@7 1.11 / 0.98
 *   8x32@208 2.2 / 2.0   8x16@208 1.13 / 1.10   16x8@208 1.27 / 1.58 */
static int winograd_pays(const dn_layer *l)
{
    const double bytes_to_macs = 3.75;
    const double tiles = (double)((l->out_w + 3) / 4) * ((l->out_h + 3) / 4);
    const double pixels = (double)l->out_w * l->out_h;
    double packed = fmax(9 * pixels, 36 * bytes_to_macs);
    double winograd = fmax(36 * tiles, 144 * bytes_to_macs);
    return l->in_c >= 16 && l->u.conv.filters >= 8 && winograd < .8 * packed;
}

/* PYDARKNET_CONV=plain|packed|winograd forces a method where it applies
 * (tests and measurements); otherwise Winograd where it pays, else packed. */
static conv_method choose_method(const dn_layer *l)
{
    const char *forced = getenv("PYDARKNET_CONV");
    /* one filter per group: dn_gemm_ex runs it as a vector product, whose
     * bits the packed GEMM does not reproduce */
    if (l->u.conv.filters / l->u.conv.groups < 2) return CONV_PLAIN;
    if (forced && strcmp(forced, "plain") == 0) return CONV_PLAIN;
    if (forced && strcmp(forced, "packed") == 0) return CONV_PACKED;
    int force_winograd = forced && strcmp(forced, "winograd") == 0;
    if (winograd_applies(l) && (force_winograd || winograd_pays(l))) return CONV_WINOGRAD;
    return CONV_PACKED;
}

static void free_cache(dn_layer *l)
{
    if (!l->u.conv.cache) return;
    free(l->u.conv.cache->weights);
    free(l->u.conv.cache);
    l->u.conv.cache = NULL;
}

/* cache->weights (of the right size) from the layer's weights, for `method`. */
static void build_cache(dn_layer *l, const dn_ctx *ctx, conv_method method, dn_conv_cache *cache)
{
    const int groups = l->u.conv.groups, m = l->u.conv.filters / groups;
    const int k = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    const size_t per_group = dn_gemm_packed_a_floats(m, k);
    if (method == CONV_WINOGRAD) {
        dn_winograd_transform_weights(ctx->pool, l->weights, m, l->in_c, cache->weights);
        return;
    }
    for (int g = 0; g < groups; g++)
        dn_gemm_pack_a(ctx->pool, m, k, l->weights + (size_t)g * l->n_weights / groups, k,
                       cache->weights + g * per_group);
}

/* Uninitialised floats for a cache (2 MiB pages with madvise(MADV_HUGEPAGE)
 * made the first forward 2-3x slower: the kernel compacts memory to find
 * them). */
static float *alloc_cache_floats(size_t floats)
{
    void *p = NULL;
    return posix_memalign(&p, 64, floats * sizeof(float)) == 0 ? p : NULL;
}

/* The layer's weights for `method`, rebuilt if the parameters may have
 * changed since; NULL without memory. */
static const dn_conv_cache *fresh_cache(dn_layer *l, const dn_ctx *ctx, conv_method method)
{
    dn_conv_cache *cache = l->u.conv.cache;
    if (cache && cache->valid && cache->version == ctx->params_version && cache->method == method)
        return cache;
    if (!cache) {
        cache = calloc(1, sizeof *cache);
        if (!cache) return NULL;
        l->u.conv.cache = cache;
    }
    const int groups = l->u.conv.groups, m = l->u.conv.filters / groups;
    const int k = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    size_t floats = method == CONV_WINOGRAD ? dn_winograd_weights_floats(m, l->in_c)
                                            : groups * dn_gemm_packed_a_floats(m, k);
    cache->valid = 0;
    if (floats != cache->floats) {
        free(cache->weights);
        cache->weights = alloc_cache_floats(floats);
        cache->floats = cache->weights ? floats : 0;
    }
    if (!cache->weights) return NULL;
    build_cache(l, ctx, method, cache);
    cache->valid = 1;
    cache->version = ctx->params_version;
    cache->method = method;
    return cache;
}

/* Image b, group g through the packed weights (cache, or A itself when
 * packed_a is NULL). */
static void conv_packed_group(dn_layer *l, const dn_ctx *ctx, const float *packed_a, int b, int g,
                              const dn_gemm_epilogue *epilogue)
{
    const int groups = l->u.conv.groups, m = l->u.conv.filters / groups;
    const int k = l->u.conv.size * l->u.conv.size * l->in_c / groups;
    const int n = l->out_w * l->out_h;
    const size_t in_group = (size_t)(l->in_c / groups) * l->in_h * l->in_w;
    const float *im = ctx->input + ((size_t)b * groups + g) * in_group;
    float *out = l->output + ((size_t)b * groups + g) * n * m;
    dn_gemm_epilogue group_ep;
    const dn_gemm_epilogue *ep = group_epilogue(epilogue, g, m, &group_ep);
    if (input_is_columns(l) && packed_a) {
        dn_gemm_packed(ctx->pool, m, n, k, packed_a, im, n, out, n, ep);
        return;
    }
    const float *weights = l->weights + (size_t)g * l->n_weights / groups;
    if (input_is_columns(l)) {
        dn_gemm_ex(ctx->pool, 0, 0, m, n, k, 1.f, weights, k, im, n, 0.f, out, n, ep);
        return;
    }
    dn_gemm_im2col columns = {im,          l->in_c / groups, l->in_h,  l->in_w, l->u.conv.size,
                              l->u.conv.stride, l->u.conv.pad, l->out_h, l->out_w};
    dn_gemm_conv(ctx->pool, m, weights, packed_a, &columns, out, ep);
}

/* Inference through the layer's cached weights; 0 (nothing written) when
 * the plain path should run instead. */
static int conv_fast(dn_layer *l, const dn_ctx *ctx, const dn_gemm_epilogue *epilogue)
{
    conv_method method = choose_method(l);
    if (method == CONV_PLAIN) return 0;
    const dn_conv_cache *cache = fresh_cache(l, ctx, method);
    if (!cache && method == CONV_WINOGRAD) cache = fresh_cache(l, ctx, method = CONV_PACKED);
    if (!cache) return 0;
    const int groups = l->u.conv.groups;
    const size_t per_group = dn_gemm_packed_a_floats(l->u.conv.filters / groups,
                                                     l->u.conv.size * l->u.conv.size * l->in_c / groups);
    for (int b = 0; b < l->batch; b++) {
        if (method == CONV_WINOGRAD &&
            dn_winograd_conv(ctx->pool, ctx->input + (size_t)b * l->in_size, l->in_c, l->in_h,
                             l->in_w, l->u.conv.pad, l->u.conv.filters, cache->weights,
                             l->output + (size_t)b * l->out_size, epilogue, ctx->workspace) == DN_OK)
            continue;
        for (int g = 0; g < groups; g++) /* packed, or Winograd without memory: unpacked */
            conv_packed_group(l, ctx, method == CONV_PACKED ? cache->weights + g * per_group : NULL,
                              b, g, epilogue);
    }
    return 1;
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
    if (!conv_fast(l, ctx, &epilogue)) conv_gemm(l, ctx, &epilogue);
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
    free_cache(l);
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
