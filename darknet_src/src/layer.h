/* The layer interface.
 *
 * Shapes: a layer reads in_c x in_h x in_w floats per image and writes
 * out_c x out_h x out_w (NCHW, batch outermost).  B = batch.
 *
 * Gradient convention (darknet's): `delta` holds the NEGATIVE gradient of the
 * loss with respect to the layer's output (target - output for an L2 loss).
 * backward() ADDS the batch-summed negative gradients of its parameters into
 * the *_grads views and ADDS its input's negative gradient into
 * ctx->input_delta (NULL when the input is the network's own input).
 * update() then moves the parameters along grads (see sgd.c).
 *
 * Parameters live in three buffers owned by the network (llm.c style), so a
 * replica's whole model is one reduction or one copy:
 *   params   biases | BN scales | weights       of every layer, in layer order
 *   grads    the same layout, gradients summed since the last update
 *   velocity the same layout, momentum (darknet's *_updates after the step)
 *   stats    BN rolling mean | rolling variance of every layer
 * Layers only hold views into them (biases, scales, weights, ...).
 *
 * A layer knows its inputs, not the graph: route and shortcut get pointers to
 * the layers they read, resolved when the network is built. */
#ifndef DN_LAYER_H
#define DN_LAYER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "activations.h"
#include "cfg.h"
#include "pool.h"
#include "util.h"

typedef enum {
    DN_LAYER_CONVOLUTIONAL,
    DN_LAYER_CONNECTED,
    DN_LAYER_MAXPOOL,
    DN_LAYER_AVGPOOL,
    DN_LAYER_ROUTE,
    DN_LAYER_REORG,
    DN_LAYER_SHORTCUT,
    DN_LAYER_UPSAMPLE,
    DN_LAYER_REGION,
    DN_LAYER_YOLO,
    DN_LAYER_SOFTMAX,
    DN_LAYER_DROPOUT,
    DN_LAYER_COST,
    DN_LAYER_CROP,
    DN_LAYER_TYPE_COUNT
} dn_layer_type;

typedef struct dn_layer dn_layer;
typedef struct dn_layer_ops dn_layer_ops;

/* What a layer's forward/backward sees of the network. */
typedef struct {
    const float *input;   /* this layer's input: B * in_size floats */
    float *input_delta;   /* the input's delta (backward), or NULL */
    int train;            /* training-mode forward (BN batch stats, dropout, losses) */
    float *workspace;     /* scratch shared by all layers (im2col) */
    dn_pool *pool;
    const float *truth;   /* ground truth, truth_stride floats per image, or NULL */
    int truth_stride;
    int64_t seen;         /* images seen so far (region's prior term) */
    int net_w, net_h;     /* network input size (yolo anchors are in its pixels) */
    dn_rng *rng;          /* dropout masks, crop offsets */
    uint64_t params_version; /* the network's: changes whenever parameters may have */
    const struct dn_gpu_ctx *gpu; /* CUDA forward/backward: device pointers, or NULL */
} dn_ctx;

/* What a layer's CUDA twin sees in addition (cuda.h has the definition). */
typedef struct dn_gpu_ctx dn_gpu_ctx;

/* Per-update hyperparameters (see sgd.c). */
typedef struct {
    int batch;            /* images per update: batch * subdivisions */
    float learning_rate;
    float momentum;
    float decay;
} dn_update_args;

/* Region / yolo statistics of the last training forward (darknet's line). */
typedef struct {
    float avg_iou, avg_class, avg_obj, avg_noobj, recall, recall75;
    int count;
} dn_detection_stats;

/* Shape information the parser gives a layer. */
typedef struct {
    int batch;
    int w, h, c;          /* output of the previous layer (or the network input) */
    int net_w, net_h;
    int index;            /* this layer's index */
    const dn_cfg *cfg;
    dn_section *section;
    dn_layer *layers;     /* the layers before this one (route, shortcut) */
} dn_build;

struct dn_layer_ops {
    dn_layer_type type;
    const char *name;             /* darknet's section name */
    const char *alias;            /* another accepted name, or NULL */
    /* Read the options, set shapes, parameter counts and workspace needs. */
    dn_status (*parse)(dn_layer *l, const dn_build *b);
    /* (Re)allocate buffers that depend on batch or input size. */
    dn_status (*alloc)(dn_layer *l, int train);
    void (*forward)(dn_layer *l, const dn_ctx *ctx);
    void (*backward)(dn_layer *l, const dn_ctx *ctx);
    void (*update)(dn_layer *l, const dn_update_args *a);
    /* New input size (multi-scale training): recompute the output shape. */
    dn_status (*resize)(dn_layer *l, int in_w, int in_h);
    void (*free)(dn_layer *l);
};

/* The CUDA twin of a layer kind (layers/layers_gpu.cu).  Kept in a table of
 * its own so that CPU code never sees a CUDA symbol: dn_layer_gpu_ops_for
 * returns NULL in a CPU build (device.c), and the #ifdef lives there. */
typedef struct {
    dn_layer_type type;
    void (*forward)(dn_layer *l, const dn_ctx *ctx);
    void (*backward)(dn_layer *l, const dn_ctx *ctx);
} dn_layer_gpu_ops;

const dn_layer_gpu_ops *dn_layer_gpu_ops_for(dn_layer_type type);

typedef enum { DN_COST_SSE, DN_COST_MASKED, DN_COST_L1, DN_COST_SMOOTH, DN_COST_SEG, DN_COST_WGAN } dn_cost_type;

struct dn_layer {
    dn_layer_type type;
    const dn_layer_ops *ops;
    int index;
    int cfg_line;

    int batch;
    int in_w, in_h, in_c, in_size;      /* in_size = in_w*in_h*in_c floats per image */
    int out_w, out_h, out_c, out_size;  /* out_size floats per image */
    dn_activation activation;
    int has_activation;
    int batch_normalize;

    /* per-layer cfg options darknet reads for every section */
    float learning_rate_scale;
    int stopbackward, dontload, dontloadscales, dontsave, onlyforward;

    /* parameters: counts decided by parse, views bound by the network */
    int n_biases;                     /* biases (and BN scales/means/variances) */
    size_t n_weights;
    size_t param_offset, n_params;    /* range in net->params, grads, velocity */
    size_t stats_offset, n_stats;     /* range in net->stats */
    float *biases, *scales, *weights;
    float *bias_grads, *scale_grads, *weight_grads;
    float *bias_velocity, *scale_velocity, *weight_velocity;
    float *rolling_mean, *rolling_variance;

    /* activations */
    float *output;                    /* B * out_size */
    float *delta;                     /* B * out_size (training) */

    /* batch-norm training caches (B * out_size and per-filter) */
    float *bn_x, *bn_x_norm;
    float *bn_mean, *bn_variance, *bn_mean_delta, *bn_variance_delta;

    size_t workspace_size;            /* floats of scratch this layer needs */
    double bflops;

    /* losses */
    int truth_size;                   /* truth floats per image this layer reads */
    float cost;
    dn_detection_stats stats;

    /* CUDA copies (device pointers, NULL for a CPU network); parameter
     * views point into the network's device buffers */
    struct {
        float *output, *delta;
        float *bn_x, *bn_x_norm, *bn_mean, *bn_variance, *bn_mean_delta, *bn_variance_delta;
        float *biases, *scales, *weights;
        float *bias_grads, *scale_grads, *weight_grads;
        float *bias_velocity, *scale_velocity, *weight_velocity;
        float *rolling_mean, *rolling_variance;
        int *indexes;             /* maxpool argmax */
        float *mask;              /* dropout */
        float *factors;           /* folded batch-norm scale | shift (inference) */
        float *bn_partials;       /* batch-norm per-block partial sums (training) */
        float *loss;              /* region / yolo loss scratch (training; detection_loss_kernels.cuh) */
        void *dnn;                /* cuDNN descriptors of a convolution (conv_cudnn.cu) */
    } gpu;

    /* route / shortcut inputs */
    int n_sources;
    dn_layer **sources;
    int *source_index;

    union {
        struct {
            int filters, size, stride, pad, groups, flipped, backward_parts;
            struct dn_conv_cache *cache; /* inference: weights packed / transformed */
        } conv;
        struct { int size, stride, pad; int *indexes; } pool;
        struct { int stride, reverse; } reorg;
        struct { float alpha, beta; } shortcut;
        struct { int stride, reverse; float scale; } upsample;
        struct {
            int classes, coords, n_anchors;
            float *anchors;               /* 2 * n_anchors, in grid cells */
            int softmax, background, rescore, bias_match, max_boxes;
            int absolute, log, sqrt, classfix, random;
            float thresh, jitter, coord_scale, object_scale, noobject_scale, class_scale,
                mask_scale;
        } region;
        struct {
            int classes, n_anchors, total;
            int *mask;                    /* n_anchors indexes into anchors */
            float *anchors;               /* 2 * total, in network pixels */
            int max_boxes, random;
            float ignore_thresh, truth_thresh, jitter;
        } yolo;
        struct { int groups, noloss; float temperature; } softmax;
        struct { float probability, scale; float *rand; } dropout;
        struct { dn_cost_type kind; float scale, ratio, noobject_scale, thresh; } cost;
        struct {
            int flip, noadjust;
            float angle, saturation, exposure, shift;
        } crop;
    } u;
};

/* The table of layer kinds (layers.c). */
const dn_layer_ops *dn_layer_ops_for(const char *section_name);
/* 1 when darknet knows the section but pydarknet does not implement it. */
const char *dn_layer_unsupported_reason(const char *section_name);

/* Helpers shared by layers ------------------------------------------------ */

/* Read "activation=" (darknet's default differs per layer). */
dn_status dn_layer_read_activation(dn_layer *l, const dn_build *b, const char *def);
/* Allocate output (and delta when training) for batch * out_size. */
dn_status dn_layer_alloc_output(dn_layer *l, int train);
void dn_layer_free_output(dn_layer *l);
/* Batch-norm caches for layers with batch_normalize=1. */
dn_status dn_layer_alloc_bn(dn_layer *l, int train);
void dn_layer_free_bn(dn_layer *l);
/* Standard SGD update of biases, scales and weights (darknet's rule). */
void dn_layer_sgd_update(dn_layer *l, const dn_update_args *a);
/* A cfg error unless `value` of option `key` (jitter, hue, saturation,
 * exposure) is an augmentation setting the data loader can use. */
dn_status dn_cfg_check_augment(const dn_cfg *cfg, const dn_section *s, const char *key, float value);

/* Shapes ------------------------------------------------------------------- */

/* The most values (w*h*c) one image's input or output may hold: shapes,
 * offsets and loop bounds inside an image are ints, as in darknet. */
#define DN_MAX_VOLUME INT_MAX

/* 1 when every side is >= 1 and w*h*c <= DN_MAX_VOLUME (no overflow on the
 * way, whatever the arguments). */
int dn_shape_fits(int64_t w, int64_t h, int64_t c);

/* A layer's shape error.  Parsing (b != NULL): a DN_ERR_CFG naming b's file,
 * line and section.  Resizing (b == NULL): a DN_ERR_ARG, which the network's
 * resize prefixes with the new size and the layer. */
dn_status dn_layer_shape_error(const dn_build *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Every layer's parse and resize set their output shape here: the caller
 * computes out_w, out_h, out_c in int64 (so no formula overflows), this
 * refuses a side < 1 or more than DN_MAX_VOLUME values, then sets out_*,
 * out_size and in_size (from in_w, in_h, in_c).  b as in dn_layer_shape_error. */
dn_status dn_layer_set_output_shape(dn_layer *l, const dn_build *b, int64_t out_w, int64_t out_h,
                                    int64_t out_c);

/* A sliding window's output shape (convolution, max pooling): out = (in +
 * added - size)/stride + 1 on each side, where `added` is what the padding
 * adds to a side (2*pad for a convolution, padding= for darknet's maxpool)
 * and `padding` the option as the cfg says it, for messages; `what` names
 * the window ("kernel").  The padded input must fit an int too: the index
 * loops run over it.  Then as dn_layer_set_output_shape. */
dn_status dn_layer_set_window_shape(dn_layer *l, const dn_build *b, const char *what, int64_t size,
                                    int64_t stride, int64_t padding, int64_t added, int64_t out_c);

#endif
