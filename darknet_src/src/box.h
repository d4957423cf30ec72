/* Boxes (centre x, y, width, height; relative or pixel units), IoU, and
 * darknet's detection post-processing: decoding, letterbox correction, NMS. */
#ifndef DN_BOX_H
#define DN_BOX_H

typedef struct {
    float x, y, w, h;
} dn_box;

float dn_box_iou(dn_box a, dn_box b);

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
