/* Candidate boxes from the detection layers, for get_network_boxes, and the
 * training losses of the output layers. */
#ifndef DN_DETECTION_LAYERS_H
#define DN_DETECTION_LAYERS_H

#include "../box.h"
#include "../layer.h"
#include "detection_loss.h"

/* [region]: one candidate per anchor x cell (W*H*n, all of them, as darknet),
 * boxes relative to the network input.  `probs` holds W*H*n*classes floats.
 * Returns the number written. */
int dn_region_candidates(const dn_layer *l, int batch_index, float thresh, dn_candidate *dets,
                         float *probs);

/* [yolo]: candidates whose objectness is above thresh only (darknet's
 * yolo_num_detections); at most W*H*n.  Returns the number written. */
int dn_yolo_candidates(const dn_layer *l, int batch_index, float thresh, int net_w, int net_h,
                       dn_candidate *dets, float *probs);

/* anchors= of a [region]/[yolo] section: `count` width,height pairs (in
 * `unit`), 0.5 each when absent (darknet's default); malloc'ed into *out. */
dn_status dn_read_anchors(const dn_build *b, int count, const char *unit, float **out);

/* The training losses on the host, from l->output (already activated):
 * l->delta, l->cost and l->stats.  The CUDA twins run the same code on the
 * device (detection_loss.h); softmax's runs on the host on both paths. */
void dn_region_loss(dn_layer *l, const dn_ctx *ctx);
void dn_yolo_loss(dn_layer *l, const dn_ctx *ctx);
/* The losses' view of a layer, host or device pointers (layers/detection_loss.h) */
dn_region_loss_args dn_region_loss_args_of(const dn_layer *l, const dn_ctx *ctx, const float *output,
                                           float *delta, const float *anchors);
dn_yolo_loss_args dn_yolo_loss_args_of(const dn_layer *l, const dn_ctx *ctx, const float *output,
                                       float *delta, const float *anchors, const int *mask);
/* l->stats from a batch's truth sums (DN_LOSS_*), the objectness summed over
 * all `predictions` anchor-cells */
void dn_detection_stats_from_sums(dn_detection_stats *stats, const float *sums, float anyobj, int predictions);
/* [softmax]'s cross-entropy against the truth (softmax_layer.c) */
void dn_softmax_loss(dn_layer *l, const dn_ctx *ctx);
/* [cost]'s sum of squares of truth - input (cost_layer.c); `input` on the host */
void dn_sse_loss(dn_layer *l, const dn_ctx *ctx, const float *input);

/* The most candidates a layer can give (W*H*n), and its class count. */
int dn_detection_layer_capacity(const dn_layer *l);
int dn_detection_layer_classes(const dn_layer *l);

#endif
