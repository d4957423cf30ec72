/* The network: layers in order, the parameter buffers, activations, the
 * thread pool.  Built from a parsed cfg by network.c. */
#ifndef DN_NETWORK_H
#define DN_NETWORK_H

#include "darknet.h"
#include "layer.h"

typedef enum {
    DN_POLICY_CONSTANT,
    DN_POLICY_STEP,
    DN_POLICY_EXP,
    DN_POLICY_POLY,
    DN_POLICY_STEPS,
    DN_POLICY_SIG,
    DN_POLICY_RANDOM
} dn_lr_policy;

/* The [net] section: what darknet reads, with darknet's defaults. */
typedef struct {
    int batch;            /* images per update = batch (cfg); per forward = batch/subdivisions */
    int subdivisions;
    int time_steps;
    int width, height, channels, inputs;
    float learning_rate, momentum, decay;
    dn_lr_policy policy;
    int step;             /* step, sig */
    float scale;          /* step */
    float gamma;          /* exp, sig */
    float power;          /* poly and burn_in (default 4) */
    int burn_in;
    int max_batches;
    int n_steps;
    int *steps;           /* steps policy */
    float *scales;
    int adam;
    float adam_b1, adam_b2, adam_eps;
    /* augmentation */
    float angle, aspect, saturation, exposure, hue;
    int min_crop, max_crop;
    float min_ratio, max_ratio;
    int center;
    float clip;
    int random;
    int notruth;
} dn_net_hparams;

struct dn_network {
    char *name;                 /* cfg path or name, for messages */
    dn_net_hparams hp;
    int n_layers;
    dn_layer *layers;
    int output_layer;           /* last non-cost layer */

    int batch;                  /* images per forward now */
    int w, h, c, inputs;        /* network input now */
    int train;                  /* built with training buffers */

    int64_t seen;               /* images seen (weights header) */
    int weights_major, weights_minor, weights_revision;

    size_t n_params, n_stats;
    float *params, *grads, *velocity;
    float *stats;

    float *input;               /* batch * inputs, for callers that fill it in place */
    float *truth;               /* batch * truth_size (training) */
    int truth_size;             /* truth floats per image */
    float *workspace;
    size_t workspace_size;

    int threads;
    dn_pool *pool;
    dn_rng rng;
    char *warnings;             /* unused cfg options, one per line, or NULL */
    int params_ready;           /* params hold weights (initialised or loaded) */
    int update_replicas;        /* all-reduce training: replicas whose images one update
                                   counts (1 otherwise) */
    float *input_delta;         /* delta of the network input, when asked for */

    /* CUDA (cuda.h): the device copy of the network */
    int gpu_index;              /* -1: the network runs on the CPU */
    struct dn_gpu *gpu;
    float *params_gpu, *grads_gpu, *velocity_gpu, *stats_gpu;
    float *input_gpu, *input_delta_gpu, *workspace_gpu;
    size_t workspace_gpu_floats;     /* >= workspace_size: room for several images' columns */
    float *input_spare_gpu;          /* training in subdivisions: the next pass's input, copied on the */
    const float *next_input;         /* copy stream while this pass computes (set by the pass loop, */
    const float *prefetched;         /* taken by the next forward; cuda.cu) */
    float *grad_partials_gpu;        /* split weight gradients (convolutional_layer.cu), training */
    size_t grad_partials_gpu_floats;
    dn_status buffers_lost;     /* not DN_OK: the last reallocation (set_batch, resize) failed so */
    int host_params_stale;      /* the device holds newer parameters (after updates) */
    int device_params_stale;    /* the host holds newer parameters (loaded, edited) */
    uint64_t params_version;    /* bumped whenever the host parameters may have changed:
                                   layers keep what they derive from them (packed or
                                   Winograd-transformed weights) until it moves */
    int profiling;              /* record per-layer forward times */
    double *layer_ms;           /* 2 * n_layers: last forward's, then last backward's times */
};

/* DN_OK, or the failure of the last reallocation (the activations are then
 * unusable until one succeeds). */
dn_status dn_network_check_buffers(const dn_network *net);

/* The host parameters may have changed (written, loaded, updated, averaged). */
void dn_network_params_changed(dn_network *net);

/* What every layer's forward/backward sees of the network (train flag,
 * scratch, pool, truth stride, seen, input size, rng, parameters version);
 * the caller adds the input, truth and deltas. */
dn_ctx dn_network_ctx(dn_network *net, int train);

/* Views of layer l's parameters in `buffer`, a buffer with the network's
 * parameter layout (params, grads or velocity, on the host or the device):
 * biases | BN scales (NULL without batch norm) | weights. */
void dn_layer_param_views(const dn_layer *l, float *buffer, float **biases, float **scales, float **weights);
/* Views of layer l's rolling mean and variance in a stats-layout buffer. */
void dn_layer_stats_views(const dn_layer *l, float *stats, float **rolling_mean, float **rolling_variance);

/* darknet's random initialisation, done lazily: a network whose weights are
 * then loaded in full never pays for it. */
void dn_network_ensure_params(dn_network *net);

int dn_hardware_threads_internal(void);

/* Host copies current before the host reads or writes parameters
 * (pulls them from the GPU when the device holds newer ones). */
dn_status dn_network_sync_host_params(dn_network *net);

/* (Re)allocate every layer's activations for net->batch and the current
 * input size; also the workspace, input and truth buffers. */
/* A clear error where `batch` times the largest layer's values per image
 * (the layers' shapes as they are, the input at width x height) would
 * overflow an int (the layers count whole batches in ints, as darknet). */
dn_status dn_network_check_batch_volume(const dn_network *net, int batch, int width, int height);
dn_status dn_network_reallocate_activations(dn_network *net);

/* Pass `pass` (0 .. subdivisions - 1) of a training step whose inputs and truth
 * lie one pass after another: forward and backward on its slice; on a GPU the
 * next slice uploads meanwhile (train.c). */
dn_status dn_network_train_pass(dn_network *net, const float *input, const float *truth, int pass,
                                float *loss);

/* Forward over all layers.  `input` may be net->input.  With train = 1 the
 * losses run against `truth` (truth_size floats per image). */
dn_status dn_network_forward(dn_network *net, const float *input, int train, const float *truth);

/* Map an image of img_w x img_h to the candidates of every detection layer.
 * Implemented in detect.c. */

#endif
