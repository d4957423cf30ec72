/* [region]: YOLOv2's detection layer.
 *
 * Output layout per image: for anchor a, (coords + 1 + classes) planes of
 * W x H: x, y, w, h, objectness, class 0..C-1 (channel a*(5+C) + entry).
 * Forward: logistic on x, y and objectness, softmax over the classes
 * (softmax=1; logistic otherwise), w and h left raw.
 * Box of cell (i, j), anchor a: x = (i + out_x)/W, y = (j + out_y)/H,
 * w = exp(out_w) * anchor_w / W, h = exp(out_h) * anchor_h / H (anchors in
 * grid cells).
 *
 * Training (darknet's forward_region_layer; deltas are target - output):
 *  - every anchor: objectness -> 0 with noobject_scale, unless its box has
 *    IoU > thresh with some truth;
 *  - while seen < 12800: every anchor's box pulled towards its prior with
 *    scale .01;
 *  - each truth: its cell's anchor of best shape IoU (anchor shapes when
 *    bias_match=1) gets box deltas scaled by coord_scale * (2 - w*h),
 *    objectness -> 1 (IoU with rescore=1) with object_scale, and class
 *    deltas through the softmax with class_scale.
 *
 * Backward, darknet's GPU path on purpose: pjreddie's CPU
 * backward_region_layer is empty (its body is commented out), so CPU darknet
 * passes no gradient to the network; the GPU path, which trained the real
 * YOLOv2 models, multiplies the x, y and objectness deltas by the logistic
 * derivative and adds the whole delta to the previous layer's.  We do the
 * latter on every device. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../blas.h"
#include "../box.h"
#include "../error.h"
#include "../layer.h"
#include "detection_layers.h"
#include "detection_loss.h"

static int entries(const dn_layer *l) { return l->u.region.coords + 1 + l->u.region.classes; }

/* index of `entry` of anchor-cell `location` (= anchor * W*H + cell) in image b */
static size_t entry_index(const dn_layer *l, int b, int location, int entry)
{
    int spatial = l->out_w * l->out_h;
    return dn_anchor_entry_index(b, l->out_size, spatial, entries(l), location / spatial, location % spatial, entry);
}

static dn_status region_parse(dn_layer *l, const dn_build *b)
{
    const dn_cfg *cfg = b->cfg;
    dn_section *s = b->section;
    int coords, classes, num;
    DN_TRY(dn_cfg_int(cfg, s, "coords", 4, &coords));
    DN_TRY(dn_cfg_int(cfg, s, "classes", 20, &classes));
    DN_TRY(dn_cfg_int(cfg, s, "num", 1, &num));
    if (coords != 4)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED, "coords=%d: only coords=4 is implemented",
                            coords);
    if (classes < 1 || num < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "classes=%d num=%d, expected both >= 1", classes,
                            num);
    const char *tree;
    DN_TRY(dn_cfg_str(cfg, s, "tree", NULL, &tree));
    if (tree)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED,
                            "tree=%s: hierarchical softmax (YOLO9000) is not implemented", tree);
    const char *map;
    DN_TRY(dn_cfg_str(cfg, s, "map", NULL, &map));
    if (map)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED, "map=%s: class maps are not implemented",
                            map);

    l->u.region.coords = coords;
    l->u.region.classes = classes;
    l->u.region.n_anchors = num;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    int64_t channels = (int64_t)num * ((int64_t)classes + coords + 1);
    if (b->c != channels)
        return dn_cfg_error(
            cfg, s, DN_ERR_CFG,
            "expects the layer before it to output %lld channels ((classes %d + coords %d + 1) * num "
            "%d), but layer %d outputs %dx%dx%d: set filters=%lld in the [convolutional] before it",
            (long long)channels, classes, coords, num, b->index - 1, b->w, b->h, b->c,
            (long long)channels);
    DN_TRY(dn_layer_set_output_shape(l, b, b->w, b->h, channels));

    DN_TRY(dn_cfg_int(cfg, s, "log", 0, &l->u.region.log));
    DN_TRY(dn_cfg_int(cfg, s, "sqrt", 0, &l->u.region.sqrt));
    DN_TRY(dn_cfg_int(cfg, s, "softmax", 0, &l->u.region.softmax));
    DN_TRY(dn_cfg_int(cfg, s, "background", 0, &l->u.region.background));
    /* darknet reads max= but its region loss reads DN_REGION_MAX_TRUTHS boxes
     * whatever it says (truth_size below): nothing is sized by it */
    DN_TRY(dn_cfg_int(cfg, s, "max", 30, &l->u.region.max_boxes));
    DN_TRY(dn_cfg_float(cfg, s, "jitter", .2f, &l->u.region.jitter));
    DN_TRY(dn_cfg_check_augment(cfg, s, "jitter", l->u.region.jitter));
    DN_TRY(dn_cfg_int(cfg, s, "rescore", 0, &l->u.region.rescore));
    DN_TRY(dn_cfg_float(cfg, s, "thresh", .5f, &l->u.region.thresh));
    DN_TRY(dn_cfg_int(cfg, s, "classfix", 0, &l->u.region.classfix));
    DN_TRY(dn_cfg_int(cfg, s, "absolute", 0, &l->u.region.absolute));
    DN_TRY(dn_cfg_int(cfg, s, "random", 0, &l->u.region.random));
    DN_TRY(dn_cfg_float(cfg, s, "coord_scale", 1, &l->u.region.coord_scale));
    DN_TRY(dn_cfg_float(cfg, s, "object_scale", 1, &l->u.region.object_scale));
    DN_TRY(dn_cfg_float(cfg, s, "noobject_scale", 1, &l->u.region.noobject_scale));
    DN_TRY(dn_cfg_float(cfg, s, "mask_scale", 1, &l->u.region.mask_scale));
    DN_TRY(dn_cfg_float(cfg, s, "class_scale", 1, &l->u.region.class_scale));
    DN_TRY(dn_cfg_int(cfg, s, "bias_match", 0, &l->u.region.bias_match));

    DN_TRY(dn_read_anchors(b, num, "grid cells", &l->u.region.anchors));
    l->truth_size = DN_REGION_MAX_TRUTHS * (coords + 1);
    return DN_OK;
}

static dn_status region_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status region_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return dn_layer_set_output_shape(l, NULL, in_w, in_h, l->out_c);
}

/* the output activations (shared by inference and training) */
static void region_activate(dn_layer *l, const float *input, dn_pool *pool)
{
    int spatial = l->out_w * l->out_h;
    int coords = l->u.region.coords, classes = l->u.region.classes;
    dn_copy(l->output, input, (size_t)l->batch * l->out_size);
    for (int b = 0; b < l->batch; b++)
        for (int n = 0; n < l->u.region.n_anchors; n++) {
            dn_activate_array(pool, l->output + entry_index(l, b, n * spatial, 0),
                              2 * (size_t)spatial, DN_ACT_LOGISTIC);
            if (!l->u.region.background)
                dn_activate_array(pool, l->output + entry_index(l, b, n * spatial, coords),
                                  (size_t)spatial, DN_ACT_LOGISTIC);
            if (!l->u.region.softmax)
                dn_activate_array(pool, l->output + entry_index(l, b, n * spatial, coords + 1),
                                  (size_t)classes * spatial, DN_ACT_LOGISTIC);
        }
    if (l->u.region.softmax) {
        size_t first = entry_index(l, 0, 0, coords + !l->u.region.background);
        dn_softmax_blocks(input + first, classes + l->u.region.background,
                          l->batch * l->u.region.n_anchors, l->out_size / l->u.region.n_anchors,
                          spatial, 1, spatial, 1, l->output + first);
    }
}

static dn_box region_box(const dn_layer *l, const float *x, int anchor, size_t index, int i, int j)
{
    return dn_region_box(x, l->u.region.anchors, anchor, index, i, j, l->out_w, l->out_h);
}

dn_region_loss_args dn_region_loss_args_of(const dn_layer *l, const dn_ctx *ctx, const float *output,
                                           float *delta, const float *anchors)
{
    dn_region_loss_args a;
    a.output = output;
    a.delta = delta;
    a.anchors = anchors;
    a.w = l->out_w;
    a.h = l->out_h;
    a.out_size = l->out_size;
    a.n_anchors = l->u.region.n_anchors;
    a.coords = l->u.region.coords;
    a.classes = l->u.region.classes;
    a.truth_floats = l->u.region.coords + 1;
    a.softmax = l->u.region.softmax;
    a.background = l->u.region.background;
    a.rescore = l->u.region.rescore;
    a.bias_match = l->u.region.bias_match;
    a.prior = ctx->seen < DN_REGION_PRIOR_SEEN;
    a.thresh = l->u.region.thresh;
    a.coord_scale = l->u.region.coord_scale;
    a.object_scale = l->u.region.object_scale;
    a.noobject_scale = l->u.region.noobject_scale;
    a.class_scale = l->u.region.class_scale;
    return a;
}

/* darknet's forward_region_layer, on the host (layers/detection_loss.h) */
void dn_region_loss(dn_layer *l, const dn_ctx *ctx)
{
    int spatial = l->out_w * l->out_h, n_anchors = l->u.region.n_anchors;
    dn_region_loss_args args = dn_region_loss_args_of(l, ctx, l->output, l->delta, l->u.region.anchors);
    float sums[DN_LOSS_SUMS] = {0}, anyobj = 0;
    dn_fill(l->delta, (size_t)l->batch * l->out_size, 0.f);
    for (int b = 0; b < l->batch; b++) {
        const float *truths = ctx->truth + (size_t)b * ctx->truth_stride;
        for (int cell = 0; cell < spatial; cell++)
            for (int n = 0; n < n_anchors; n++) anyobj += dn_region_cell_loss(&args, truths, b, n, cell);
        dn_region_truths_loss(&args, truths, b, sums);
    }
    float mag = 0;
    size_t n_delta = (size_t)l->batch * l->out_size;
    for (size_t k = 0; k < n_delta; k++) mag += l->delta[k] * l->delta[k];
    l->cost = mag;
    dn_detection_stats_from_sums(&l->stats, sums, anyobj, spatial * n_anchors * l->batch);
}

static void region_forward(dn_layer *l, const dn_ctx *ctx)
{
    region_activate(l, ctx->input, ctx->pool);
    if (ctx->train && ctx->truth) dn_region_loss(l, ctx);
}

static void region_backward(dn_layer *l, const dn_ctx *ctx)
{
    int spatial = l->out_w * l->out_h, coords = l->u.region.coords;
    for (int b = 0; b < l->batch; b++)
        for (int n = 0; n < l->u.region.n_anchors; n++) {
            size_t index = entry_index(l, b, n * spatial, 0);
            dn_gradient_array(NULL, l->output + index, 2 * (size_t)spatial, DN_ACT_LOGISTIC,
                              l->delta + index);
            if (!l->u.region.background) {
                index = entry_index(l, b, n * spatial, coords);
                dn_gradient_array(NULL, l->output + index, (size_t)spatial, DN_ACT_LOGISTIC,
                                  l->delta + index);
            }
        }
    if (ctx->input_delta) dn_axpy(ctx->input_delta, 1.f, l->delta, (size_t)l->batch * l->out_size);
}

static void region_free(dn_layer *l)
{
    dn_layer_free_output(l);
    free(l->u.region.anchors);
    l->u.region.anchors = NULL;
}

/* ---- detections -------------------------------------------------------------- */

int dn_region_candidates(const dn_layer *l, int batch_index, float thresh, dn_candidate *dets,
                         float *probs)
{
    int W = l->out_w, H = l->out_h, spatial = W * H;
    int classes = l->u.region.classes, coords = l->u.region.coords;
    int n_boxes = spatial * l->u.region.n_anchors;
    for (int i = 0; i < spatial; i++) {
        int row = i / W, col = i % W;
        for (int n = 0; n < l->u.region.n_anchors; n++) {
            int index = n * spatial + i;
            dn_candidate *d = &dets[index];
            d->prob = probs + (size_t)index * classes;
            d->classes = classes;
            d->index = index;
            d->sort_class = 0;
            memset(d->prob, 0, (size_t)classes * sizeof(float));
            size_t obj_index = entry_index(l, batch_index, index, coords);
            size_t box_index = entry_index(l, batch_index, index, 0);
            float scale = l->u.region.background ? 1.f : l->output[obj_index];
            d->bbox = region_box(l, l->output, n, box_index, col, row);
            d->objectness = scale > thresh ? scale : 0;
            if (d->objectness == 0) continue;
            for (int j = 0; j < classes; j++) {
                size_t class_index = entry_index(l, batch_index, index, coords + 1 + j);
                float prob = scale * l->output[class_index];
                d->prob[j] = (prob > thresh) ? prob : 0;
            }
        }
    }
    return n_boxes;
}

const dn_layer_ops dn_region_ops = {
    .type = DN_LAYER_REGION,
    .name = "region",
    .parse = region_parse,
    .alloc = region_alloc,
    .forward = region_forward,
    .backward = region_backward,
    .resize = region_resize,
    .free = region_free,
};
