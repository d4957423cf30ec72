/* [yolo]: YOLOv3's detection layer.
 *
 * Output per image: for each of the n masked anchors, 4 + 1 + classes planes
 * of W x H (x, y, w, h, objectness, classes).  Forward: logistic on x, y,
 * objectness and every class; w, h raw.  Anchors are in pixels of the network
 * input: w = exp(out_w) * anchor_w / net_w.
 *
 * Training (darknet's forward_yolo_layer): objectness -> 0 for every
 * prediction unless its best IoU with a truth exceeds ignore_thresh (or -> 1
 * with box and class deltas above truth_thresh); each truth goes to the
 * anchor of best shape IoU among ALL anchors, and if that anchor is in this
 * layer's mask, its cell gets box deltas scaled by (2 - w*h), objectness -> 1
 * and class deltas.  Backward passes the delta on unchanged (darknet's CPU
 * and GPU paths agree here: no logistic derivative is applied). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../blas.h"
#include "../box.h"
#include "../error.h"
#include "../layer.h"
#include "detection_layers.h"
#include "detection_loss.h"

static int entries(const dn_layer *l) { return 4 + 1 + l->u.yolo.classes; }

static size_t entry_index(const dn_layer *l, int b, int location, int entry)
{
    int spatial = l->out_w * l->out_h;
    return dn_anchor_entry_index(b, l->out_size, spatial, entries(l), location / spatial, location % spatial, entry);
}

static dn_status yolo_parse(dn_layer *l, const dn_build *b)
{
    const dn_cfg *cfg = b->cfg;
    dn_section *s = b->section;
    int classes, total;
    DN_TRY(dn_cfg_int(cfg, s, "classes", 20, &classes));
    DN_TRY(dn_cfg_int(cfg, s, "num", 1, &total));
    if (classes < 1 || total < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "classes=%d num=%d, expected both >= 1", classes,
                            total);
    int *mask = NULL, n_mask = 0;
    DN_TRY(dn_cfg_int_list(cfg, s, "mask", &mask, &n_mask));
    if (!mask) {
        n_mask = total;
        mask = malloc((size_t)total * sizeof *mask);
        if (!mask) return DN_FAIL(DN_ERR_OOM, "out of memory for the yolo mask");
        for (int i = 0; i < total; i++) mask[i] = i;
    }
    l->u.yolo.mask = mask;
    for (int i = 0; i < n_mask; i++)
        if (mask[i] < 0 || mask[i] >= total)
            return dn_cfg_error(cfg, s, DN_ERR_CFG,
                                "mask value %d is outside the %d anchors (num=%d)", mask[i], total,
                                total);
    const char *map;
    DN_TRY(dn_cfg_str(cfg, s, "map", NULL, &map));
    if (map)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED, "map=%s: class maps are not implemented",
                            map);
    l->u.yolo.classes = classes;
    l->u.yolo.n_anchors = n_mask;
    l->u.yolo.total = total;
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    int64_t channels = (int64_t)n_mask * ((int64_t)classes + 4 + 1);
    if (b->c != channels)
        return dn_cfg_error(
            cfg, s, DN_ERR_CFG,
            "expects the layer before it to output %lld channels ((classes %d + 5) * %d masked "
            "anchors), but layer %d outputs %dx%dx%d: set filters=%lld in the [convolutional] "
            "before it",
            (long long)channels, classes, n_mask, b->index - 1, b->w, b->h, b->c,
            (long long)channels);
    DN_TRY(dn_layer_set_output_shape(l, b, b->w, b->h, channels));

    DN_TRY(dn_cfg_int(cfg, s, "max", 90, &l->u.yolo.max_boxes));
    DN_TRY(dn_cfg_float(cfg, s, "jitter", .2f, &l->u.yolo.jitter));
    DN_TRY(dn_cfg_check_augment(cfg, s, "jitter", l->u.yolo.jitter));
    DN_TRY(dn_cfg_float(cfg, s, "ignore_thresh", .5f, &l->u.yolo.ignore_thresh));
    DN_TRY(dn_cfg_float(cfg, s, "truth_thresh", 1, &l->u.yolo.truth_thresh));
    DN_TRY(dn_cfg_int(cfg, s, "random", 0, &l->u.yolo.random));
    if (l->u.yolo.max_boxes < 1 || l->u.yolo.max_boxes > DN_YOLO_MAX_BOXES)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "max=%d, expected 1..%d (boxes per image the truth holds; darknet's "
                            "cfgs use 90 to 200)",
                            l->u.yolo.max_boxes, DN_YOLO_MAX_BOXES);

    DN_TRY(dn_read_anchors(b, total, "pixels", &l->u.yolo.anchors));
    l->truth_size = l->u.yolo.max_boxes * (4 + 1);
    return DN_OK;
}

static dn_status yolo_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status yolo_resize(dn_layer *l, int in_w, int in_h)
{
    l->in_w = in_w;
    l->in_h = in_h;
    return dn_layer_set_output_shape(l, NULL, in_w, in_h, l->out_c);
}

static dn_box yolo_box(const dn_layer *l, const float *x, int anchor, size_t index, int i, int j,
                       int net_w, int net_h)
{
    return dn_yolo_box(x, l->u.yolo.anchors, anchor, index, i, j, l->out_w, l->out_h, net_w, net_h);
}

dn_yolo_loss_args dn_yolo_loss_args_of(const dn_layer *l, const dn_ctx *ctx, const float *output,
                                       float *delta, const float *anchors, const int *mask)
{
    dn_yolo_loss_args a;
    a.output = output;
    a.delta = delta;
    a.anchors = anchors;
    a.mask = mask;
    a.w = l->out_w;
    a.h = l->out_h;
    a.out_size = l->out_size;
    a.n_anchors = l->u.yolo.n_anchors;
    a.total = l->u.yolo.total;
    a.classes = l->u.yolo.classes;
    a.max_boxes = l->u.yolo.max_boxes;
    a.net_w = ctx->net_w;
    a.net_h = ctx->net_h;
    a.ignore_thresh = l->u.yolo.ignore_thresh;
    a.truth_thresh = l->u.yolo.truth_thresh;
    return a;
}

/* darknet's forward_yolo_layer, on the host (layers/detection_loss.h) */
void dn_yolo_loss(dn_layer *l, const dn_ctx *ctx)
{
    int spatial = l->out_w * l->out_h, n_anchors = l->u.yolo.n_anchors;
    dn_yolo_loss_args args = dn_yolo_loss_args_of(l, ctx, l->output, l->delta, l->u.yolo.anchors, l->u.yolo.mask);
    float sums[DN_LOSS_SUMS] = {0}, anyobj = 0;
    dn_fill(l->delta, (size_t)l->batch * l->out_size, 0.f);
    for (int b = 0; b < l->batch; b++) {
        const float *truths = ctx->truth + (size_t)b * ctx->truth_stride;
        for (int cell = 0; cell < spatial; cell++)
            for (int n = 0; n < n_anchors; n++) anyobj += dn_yolo_cell_loss(&args, truths, b, n, cell);
        dn_yolo_truths_loss(&args, truths, b, sums);
    }
    float mag = 0;
    size_t n_delta = (size_t)l->batch * l->out_size;
    for (size_t k = 0; k < n_delta; k++) mag += l->delta[k] * l->delta[k];
    l->cost = mag;
    dn_detection_stats_from_sums(&l->stats, sums, anyobj, spatial * n_anchors * l->batch);
}

static void yolo_forward(dn_layer *l, const dn_ctx *ctx)
{
    int spatial = l->out_w * l->out_h;
    dn_copy(l->output, ctx->input, (size_t)l->batch * l->out_size);
    for (int b = 0; b < l->batch; b++)
        for (int n = 0; n < l->u.yolo.n_anchors; n++) {
            dn_activate_array(ctx->pool, l->output + entry_index(l, b, n * spatial, 0),
                              2 * (size_t)spatial, DN_ACT_LOGISTIC);
            dn_activate_array(ctx->pool, l->output + entry_index(l, b, n * spatial, 4),
                              (size_t)(1 + l->u.yolo.classes) * spatial, DN_ACT_LOGISTIC);
        }
    if (ctx->train && ctx->truth) dn_yolo_loss(l, ctx);
}

static void yolo_backward(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->input_delta) dn_axpy(ctx->input_delta, 1.f, l->delta, (size_t)l->batch * l->out_size);
}

static void yolo_free(dn_layer *l)
{
    dn_layer_free_output(l);
    free(l->u.yolo.anchors);
    free(l->u.yolo.mask);
    l->u.yolo.anchors = NULL;
    l->u.yolo.mask = NULL;
}

/* ---- detections -------------------------------------------------------------- */

int dn_yolo_candidates(const dn_layer *l, int batch_index, float thresh, int net_w, int net_h,
                       dn_candidate *dets, float *probs)
{
    int W = l->out_w, spatial = W * l->out_h, classes = l->u.yolo.classes;
    int count = 0;
    for (int i = 0; i < spatial; i++) {
        int row = i / W, col = i % W;
        for (int n = 0; n < l->u.yolo.n_anchors; n++) {
            size_t obj_index = entry_index(l, batch_index, n * spatial + i, 4);
            float objectness = l->output[obj_index];
            if (objectness <= thresh) continue;
            size_t box_index = entry_index(l, batch_index, n * spatial + i, 0);
            dn_candidate *d = &dets[count];
            d->prob = probs + (size_t)count * classes;
            d->classes = classes;
            d->index = n * spatial + i;
            d->sort_class = 0;
            d->bbox = yolo_box(l, l->output, l->u.yolo.mask[n], box_index, col, row, net_w, net_h);
            d->objectness = objectness;
            for (int j = 0; j < classes; j++) {
                size_t class_index = entry_index(l, batch_index, n * spatial + i, 5 + j);
                float prob = objectness * l->output[class_index];
                d->prob[j] = (prob > thresh) ? prob : 0;
            }
            count++;
        }
    }
    return count;
}

void dn_detection_stats_from_sums(dn_detection_stats *stats, const float *sums, float anyobj, int predictions)
{
    int count = (int)sums[DN_LOSS_COUNT];
    stats->count = count;
    stats->avg_iou = count ? sums[DN_LOSS_IOU] / count : 0;
    stats->avg_class = count ? sums[DN_LOSS_CLASS] / count : 0;
    stats->avg_obj = count ? sums[DN_LOSS_OBJ] / count : 0;
    stats->avg_noobj = anyobj / predictions;
    stats->recall = count ? sums[DN_LOSS_RECALL] / count : 0;
    stats->recall75 = count ? sums[DN_LOSS_RECALL75] / count : 0;
}

int dn_detection_layer_capacity(const dn_layer *l)
{
    int n = l->type == DN_LAYER_REGION ? l->u.region.n_anchors : l->u.yolo.n_anchors;
    return l->out_w * l->out_h * n;
}

int dn_detection_layer_classes(const dn_layer *l)
{
    return l->type == DN_LAYER_REGION ? l->u.region.classes : l->u.yolo.classes;
}

const dn_layer_ops dn_yolo_ops = {
    .type = DN_LAYER_YOLO,
    .name = "yolo",
    .parse = yolo_parse,
    .alloc = yolo_alloc,
    .forward = yolo_forward,
    .backward = yolo_backward,
    .resize = yolo_resize,
    .free = yolo_free,
};
