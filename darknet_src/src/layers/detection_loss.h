/* The [region] and [yolo] training losses, written once for the host
 * (region_layer.c, yolo_layer.c) and the device (detection_loss_kernels.cuh).
 *
 * Split the way the GPU runs them:
 *  - the work of one anchor-cell (its objectness, and the region layer's
 *    prior term early in training), which touches only that anchor-cell's
 *    entries, so all anchor-cells can run at once;
 *  - then one image's truths, in order: where two truths pick the same
 *    anchor-cell the later one's deltas win, as in darknet, so each image's
 *    truths run serially.
 * Deltas are target - output, into a `delta` that starts zeroed.  The truth
 * loops add their statistics to sums[DN_LOSS_SUMS] (the host passes one array
 * for the whole batch, which keeps darknet's order of additions; the GPU one
 * per image). */
#ifndef DN_DETECTION_LOSS_H
#define DN_DETECTION_LOSS_H

#include <math.h>
#include <stddef.h>

#include "../box.h"
#include "../hd.h"

#define DN_REGION_MAX_TRUTHS 30    /* darknet's region layer reads at most 30 truths */
/* The most boxes per image a [yolo] max= may ask for: each takes 5 truth
 * floats per image (an int count in the loss); darknet's cfgs use 90 to 200
 * and crowded datasets a few hundred.  darknet itself does not check (its
 * max*5 overflows for huge values). */
#define DN_YOLO_MAX_BOXES 10000
#define DN_REGION_PRIOR_SEEN 12800 /* the prior term stops after this many images */

/* what a truth loop adds up, per image or per batch */
enum { DN_LOSS_IOU, DN_LOSS_RECALL, DN_LOSS_RECALL75, DN_LOSS_CLASS, DN_LOSS_OBJ, DN_LOSS_COUNT, DN_LOSS_SUMS };

/* The layout both layers share: per image, for each anchor, `entries`
 * planes of `spatial` cells; the index of `entry` of (anchor, cell) in image b. */
static inline DN_HD size_t dn_anchor_entry_index(int b, int out_size, int spatial, int entries, int anchor, int cell,
                                                 int entry)
{
    return (size_t)b * out_size + ((size_t)anchor * entries + entry) * spatial + cell;
}

/* The box whose 4 entries are x[index], stride apart, in cell (i, j) of a
 * w x h grid, for an anchor of anchor_w x anchor_h in units of unit_w x
 * unit_h (grid cells for [region], network pixels for [yolo]). */
static inline DN_HD dn_box dn_anchor_box(const float *x, size_t index, size_t stride, int i, int j, int w, int h,
                                         float anchor_w, float anchor_h, int unit_w, int unit_h)
{
    dn_box b;
    b.x = (i + x[index + 0 * stride]) / w;
    b.y = (j + x[index + 1 * stride]) / h;
    b.w = expf(x[index + 2 * stride]) * anchor_w / unit_w;
    b.h = expf(x[index + 3 * stride]) * anchor_h / unit_h;
    return b;
}

/* The 4 box deltas of that box towards `truth`, scale * (target - x);
 * returns the IoU of the predicted box with the truth. */
static inline DN_HD float dn_anchor_box_delta(const float *x, float *delta, size_t index, size_t stride, int i,
                                              int j, int w, int h, float anchor_w, float anchor_h, int unit_w,
                                              int unit_h, dn_box truth, float scale)
{
    dn_box pred = dn_anchor_box(x, index, stride, i, j, w, h, anchor_w, anchor_h, unit_w, unit_h);
    float iou = dn_box_iou(pred, truth);
    float tx = truth.x * w - i;
    float ty = truth.y * h - j;
    float tw = logf(truth.w * unit_w / anchor_w);
    float th = logf(truth.h * unit_h / anchor_h);
    delta[index + 0 * stride] = scale * (tx - x[index + 0 * stride]);
    delta[index + 1 * stride] = scale * (ty - x[index + 1 * stride]);
    delta[index + 2 * stride] = scale * (tw - x[index + 2 * stride]);
    delta[index + 3 * stride] = scale * (th - x[index + 3 * stride]);
    return iou;
}

/* The cell (i, j) of a truth's centre, j * w + i.  darknet indexes it as
 * (int)(x * w); x == 1 would step out of the grid there, so clamp (no effect
 * on boxes inside the image). */
static inline DN_HD int dn_truth_cell(dn_box truth, int w, int h, int *i, int *j)
{
    *i = (int)(truth.x * w);
    *j = (int)(truth.y * h);
    if (*i > w - 1) *i = w - 1;
    if (*j > h - 1) *j = h - 1;
    return *j * w + *i;
}

/* ---- [region] --------------------------------------------------------------------- */

typedef struct {
    const float *output;   /* activated, batch x out_size */
    float *delta;          /* batch x out_size */
    const float *anchors;  /* n_anchors (w, h) pairs, in grid cells */
    int w, h, out_size, n_anchors, coords, classes;
    int truth_floats;      /* per truth: coords + 1 (box, class) */
    int softmax, background, rescore, bias_match;
    int prior;             /* seen < DN_REGION_PRIOR_SEEN: pull every box towards its anchor */
    float thresh, coord_scale, object_scale, noobject_scale, class_scale;
} dn_region_loss_args;

static inline DN_HD size_t dn_region_index(const dn_region_loss_args *a, int b, int anchor, int cell,
                                           int entry)
{
    return dn_anchor_entry_index(b, a->out_size, a->w * a->h, a->coords + 1 + a->classes, anchor, cell, entry);
}

/* the box of anchor-cell (i, j) whose x entry is x[index] (relative to the input) */
static inline DN_HD dn_box dn_region_box(const float *x, const float *anchors, int anchor, size_t index,
                                         int i, int j, int w, int h)
{
    return dn_anchor_box(x, index, (size_t)w * h, i, j, w, h, anchors[2 * anchor], anchors[2 * anchor + 1], w, h);
}

/* box deltas towards `truth`; returns the IoU of the predicted box with it */
static inline DN_HD float dn_region_delta_box(const dn_region_loss_args *a, dn_box truth, int anchor,
                                              size_t index, int i, int j, float scale)
{
    return dn_anchor_box_delta(a->output, a->delta, index, (size_t)a->w * a->h, i, j, a->w, a->h,
                               a->anchors[2 * anchor], a->anchors[2 * anchor + 1], a->w, a->h, truth, scale);
}

/* class deltas; with logistic classes (softmax=0) an anchor-cell already
 * given a truth only gets the new class pulled up (darknet's `tag`) */
static inline DN_HD void dn_region_delta_class(const dn_region_loss_args *a, size_t index, int cls,
                                               float *avg_cat)
{
    size_t stride = (size_t)a->w * a->h;
    float scale = a->class_scale;
    if (a->delta[index] != 0 && !a->softmax) {
        a->delta[index + stride * cls] = scale * (1 - a->output[index + stride * cls]);
        return;
    }
    for (int n = 0; n < a->classes; n++) {
        size_t at = index + stride * n;
        a->delta[at] = scale * ((n == cls ? 1.f : 0.f) - a->output[at]);
        if (n == cls) *avg_cat += a->output[at];
    }
}

/* Anchor-cell (anchor, cell) of image b against its image's truths:
 * objectness towards 0 (noobject_scale; towards 1 with background=1) unless
 * the box overlaps a truth by more than thresh, and the prior term.  Returns
 * its objectness (darknet's avg_anyobj adds them up). */
static inline DN_HD float dn_region_cell_loss(const dn_region_loss_args *a, const float *truths, int b,
                                              int anchor, int cell)
{
    int i = cell % a->w, j = cell / a->w;
    size_t box_index = dn_region_index(a, b, anchor, cell, 0);
    dn_box pred = dn_region_box(a->output, a->anchors, anchor, box_index, i, j, a->w, a->h);
    float best_iou = 0;
    for (int t = 0; t < DN_REGION_MAX_TRUTHS; t++) {
        const float *truth = truths + t * a->truth_floats;
        if (!truth[0]) break; /* darknet: x == 0 ends the list */
        dn_box truth_box = {truth[0], truth[1], truth[2], truth[3]};
        float iou = dn_box_iou(pred, truth_box);
        if (iou > best_iou) best_iou = iou;
    }
    size_t obj_index = dn_region_index(a, b, anchor, cell, a->coords);
    float objectness = a->output[obj_index];
    a->delta[obj_index] = a->noobject_scale * ((a->background ? 1.f : 0.f) - objectness);
    if (best_iou > a->thresh) a->delta[obj_index] = 0;
    if (a->prior) {
        dn_box prior = {(i + .5f) / a->w, (j + .5f) / a->h, a->anchors[2 * anchor] / a->w,
                        a->anchors[2 * anchor + 1] / a->h};
        dn_region_delta_box(a, prior, anchor, box_index, i, j, .01f);
    }
    return objectness;
}

/* Image b's truths, in order: each one's cell, at the anchor of best shape
 * IoU (the anchor shapes themselves with bias_match=1), gets box deltas
 * scaled by coord_scale * (2 - w*h), objectness towards 1 (the IoU with
 * rescore=1) and class deltas. */
static inline DN_HD void dn_region_truths_loss(const dn_region_loss_args *a, const float *truths, int b,
                                               float *sums)
{
    int W = a->w, H = a->h;
    for (int t = 0; t < DN_REGION_MAX_TRUTHS; t++) {
        const float *values = truths + t * a->truth_floats;
        dn_box truth = {values[0], values[1], values[2], values[3]};
        if (!truth.x) break;
        int i, j, cell = dn_truth_cell(truth, W, H, &i, &j);
        dn_box truth_shift = {0, 0, truth.w, truth.h};
        float best_iou = 0;
        int best_n = 0;
        for (int n = 0; n < a->n_anchors; n++) {
            dn_box pred = dn_region_box(a->output, a->anchors, n, dn_region_index(a, b, n, cell, 0), i, j, W, H);
            if (a->bias_match) {
                pred.w = a->anchors[2 * n] / W;
                pred.h = a->anchors[2 * n + 1] / H;
            }
            pred.x = pred.y = 0;
            float iou = dn_box_iou(pred, truth_shift);
            if (iou > best_iou) {
                best_iou = iou;
                best_n = n;
            }
        }
        size_t box_index = dn_region_index(a, b, best_n, cell, 0);
        float iou = dn_region_delta_box(a, truth, best_n, box_index, i, j, a->coord_scale * (2 - truth.w * truth.h));
        if (iou > .5f) sums[DN_LOSS_RECALL] += 1;
        sums[DN_LOSS_IOU] += iou;
        size_t obj_index = dn_region_index(a, b, best_n, cell, a->coords);
        sums[DN_LOSS_OBJ] += a->output[obj_index];
        float target = a->rescore ? iou : 1.f;
        if (a->background) target = 0.f;
        a->delta[obj_index] = a->object_scale * (target - a->output[obj_index]);
        int cls = (int)values[a->coords];
        dn_region_delta_class(a, dn_region_index(a, b, best_n, cell, a->coords + 1), cls, &sums[DN_LOSS_CLASS]);
        sums[DN_LOSS_COUNT] += 1;
    }
}

/* ---- [yolo] ----------------------------------------------------------------------- */

typedef struct {
    const float *output;   /* activated, batch x out_size */
    float *delta;          /* batch x out_size */
    const float *anchors;  /* total (w, h) pairs, in network pixels */
    const int *mask;       /* n_anchors indexes into anchors: the ones this layer predicts */
    int w, h, out_size, n_anchors, total, classes, max_boxes, net_w, net_h;
    float ignore_thresh, truth_thresh;
} dn_yolo_loss_args;

static inline DN_HD size_t dn_yolo_index(const dn_yolo_loss_args *a, int b, int n, int cell, int entry)
{
    return dn_anchor_entry_index(b, a->out_size, a->w * a->h, 4 + 1 + a->classes, n, cell, entry);
}

/* the box of anchor-cell (i, j) whose x entry is x[index]; `anchor` indexes all anchors */
static inline DN_HD dn_box dn_yolo_box(const float *x, const float *anchors, int anchor, size_t index, int i,
                                       int j, int w, int h, int net_w, int net_h)
{
    return dn_anchor_box(x, index, (size_t)w * h, i, j, w, h, anchors[2 * anchor], anchors[2 * anchor + 1], net_w,
                         net_h);
}

static inline DN_HD float dn_yolo_delta_box(const dn_yolo_loss_args *a, dn_box truth, int anchor, size_t index,
                                            int i, int j, float scale)
{
    return dn_anchor_box_delta(a->output, a->delta, index, (size_t)a->w * a->h, i, j, a->w, a->h,
                               a->anchors[2 * anchor], a->anchors[2 * anchor + 1], a->net_w, a->net_h, truth, scale);
}

/* class deltas; an anchor-cell already given a truth only gets the new class
 * pulled up (darknet's delta_yolo_class); avg_cat may be NULL */
static inline DN_HD void dn_yolo_delta_class(const dn_yolo_loss_args *a, size_t index, int cls, float *avg_cat)
{
    size_t stride = (size_t)a->w * a->h;
    if (a->delta[index] != 0) {
        size_t at = index + stride * cls;
        a->delta[at] = 1 - a->output[at];
        if (avg_cat) *avg_cat += a->output[at];
        return;
    }
    for (int n = 0; n < a->classes; n++) {
        size_t at = index + stride * n;
        a->delta[at] = (n == cls ? 1.f : 0.f) - a->output[at];
        if (n == cls && avg_cat) *avg_cat += a->output[at];
    }
}

/* Anchor-cell (n, cell) of image b: objectness towards 0 unless its best IoU
 * with a truth is above ignore_thresh; above truth_thresh, towards 1 with box
 * and class deltas for that truth.  Returns its objectness. */
static inline DN_HD float dn_yolo_cell_loss(const dn_yolo_loss_args *a, const float *truths, int b, int n,
                                            int cell)
{
    int i = cell % a->w, j = cell / a->w;
    size_t box_index = dn_yolo_index(a, b, n, cell, 0);
    dn_box pred = dn_yolo_box(a->output, a->anchors, a->mask[n], box_index, i, j, a->w, a->h, a->net_w, a->net_h);
    float best_iou = 0;
    int best_t = 0;
    for (int t = 0; t < a->max_boxes; t++) {
        const float *truth = truths + t * 5;
        if (!truth[0]) break;
        dn_box truth_box = {truth[0], truth[1], truth[2], truth[3]};
        float iou = dn_box_iou(pred, truth_box);
        if (iou > best_iou) {
            best_iou = iou;
            best_t = t;
        }
    }
    size_t obj_index = dn_yolo_index(a, b, n, cell, 4);
    float objectness = a->output[obj_index];
    a->delta[obj_index] = 0 - objectness;
    if (best_iou > a->ignore_thresh) a->delta[obj_index] = 0;
    if (best_iou > a->truth_thresh) {
        const float *values = truths + best_t * 5;
        a->delta[obj_index] = 1 - objectness;
        dn_yolo_delta_class(a, dn_yolo_index(a, b, n, cell, 5), (int)values[4], NULL);
        dn_box truth = {values[0], values[1], values[2], values[3]};
        dn_yolo_delta_box(a, truth, a->mask[n], box_index, i, j, 2 - truth.w * truth.h);
    }
    return objectness;
}

/* Image b's truths, in order: each goes to the anchor of best shape IoU among
 * ALL anchors; where that anchor is one of this layer's, its cell gets box
 * deltas scaled by (2 - w*h), objectness towards 1 and class deltas. */
static inline DN_HD void dn_yolo_truths_loss(const dn_yolo_loss_args *a, const float *truths, int b, float *sums)
{
    int W = a->w, H = a->h;
    for (int t = 0; t < a->max_boxes; t++) {
        const float *values = truths + t * 5;
        dn_box truth = {values[0], values[1], values[2], values[3]};
        if (!truth.x) break;
        int i, j, cell = dn_truth_cell(truth, W, H, &i, &j);
        dn_box truth_shift = {0, 0, truth.w, truth.h};
        float best_iou = 0;
        int best_n = 0;
        for (int n = 0; n < a->total; n++) {
            dn_box pred = {0, 0, a->anchors[2 * n] / a->net_w, a->anchors[2 * n + 1] / a->net_h};
            float iou = dn_box_iou(pred, truth_shift);
            if (iou > best_iou) {
                best_iou = iou;
                best_n = n;
            }
        }
        int mask_n = -1;
        for (int n = 0; n < a->n_anchors && mask_n < 0; n++)
            if (a->mask[n] == best_n) mask_n = n;
        if (mask_n < 0) continue;
        size_t box_index = dn_yolo_index(a, b, mask_n, cell, 0);
        float iou = dn_yolo_delta_box(a, truth, best_n, box_index, i, j, 2 - truth.w * truth.h);
        size_t obj_index = dn_yolo_index(a, b, mask_n, cell, 4);
        sums[DN_LOSS_OBJ] += a->output[obj_index];
        a->delta[obj_index] = 1 - a->output[obj_index];
        dn_yolo_delta_class(a, dn_yolo_index(a, b, mask_n, cell, 5), (int)values[4], &sums[DN_LOSS_CLASS]);
        sums[DN_LOSS_COUNT] += 1;
        if (iou > .5f) sums[DN_LOSS_RECALL] += 1;
        if (iou > .75f) sums[DN_LOSS_RECALL75] += 1;
        sums[DN_LOSS_IOU] += iou;
    }
}

#endif
