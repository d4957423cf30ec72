/* Batch normalisation as used inside convolutional and connected layers
 * (darknet's batch_normalize=1): per output channel f, over B x S values.
 * Shape letters: B batch, F filters (channels), S spatial size. */
#ifndef DN_BATCHNORM_H
#define DN_BATCHNORM_H

#include "../layer.h"

/* Normalise l->output in place, scale, and add the biases (BN's beta).
 * Training: batch statistics, rolling averages .99*old + .01*new, caches
 * kept for backward.  Inference: the rolling statistics. */
void dn_batchnorm_forward(dn_layer *l, const dn_ctx *ctx, int spatial);

/* Gradients of the biases and scales, and l->delta turned into the delta
 * of the pre-normalisation values. */
void dn_batchnorm_backward(dn_layer *l, const dn_ctx *ctx, int spatial);

#endif
