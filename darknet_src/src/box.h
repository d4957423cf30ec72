/* Boxes (centre x, y, width, height; relative or pixel units), IoU, and
 * darknet's detection post-processing: decoding, letterbox correction, NMS. */
#ifndef DN_BOX_H
#define DN_BOX_H

#include "hd.h"

typedef struct {
    float x, y, w, h;
} dn_box;

/* length of the overlap of two 1-d intervals given by centre and width */
static inline DN_HD float dn_box_overlap(float x1, float w1, float x2, float w2)
{
    float left1 = x1 - w1 / 2, left2 = x2 - w2 / 2;
    float left = left1 > left2 ? left1 : left2;
    float right1 = x1 + w1 / 2, right2 = x2 + w2 / 2;
    float right = right1 < right2 ? right1 : right2;
    return right - left;
}

/* darknet's box_iou (host and device: the region and yolo losses run on both) */
static inline DN_HD float dn_box_iou(dn_box a, dn_box b)
{
    float w = dn_box_overlap(a.x, a.w, b.x, b.w);
    float h = dn_box_overlap(a.y, a.h, b.y, b.h);
    float inter = (w < 0 || h < 0) ? 0 : w * h;
    float uni = a.w * a.h + b.w * b.h - inter;
    return inter / uni;
}

/* One candidate box with a probability per class (darknet's `detection`). */
typedef struct {
    dn_box bbox;
    float objectness;
    float *prob;       /* classes */
    int classes;
    int sort_class;
    int index;         /* anchor x cell it came from */
} dn_candidate;

/* darknet's do_nms_sort (per class; the `detect` command's default) and
 * do_nms_obj (by objectness; darknet.py).  Both move candidates with zero
 * objectness to the end and sort in place; return the count kept in front. */
int dn_nms_sort(dn_candidate *dets, int total, int classes, float thresh);
int dn_nms_obj(dn_candidate *dets, int total, int classes, float thresh);

/* Map boxes decoded on a net_w x net_h input back to an image of w x h that
 * was letterboxed into it (darknet's correct_region_boxes); `relative` keeps
 * them in [0, 1], else pixels.  For plain resizes use letterbox = 0. */
void dn_correct_boxes(dn_candidate *dets, int n, int w, int h, int net_w, int net_h, int relative,
                      int letterbox);

#endif
