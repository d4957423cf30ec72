/*
 * pydarknet: the whole C API.
 *
 * This header is the single source of what Python sees: pydarknet/_build_ffi.py
 * hands it to cffi's cdef after dropping the lines that start with '#'.  So:
 * no macros, no #ifdef inside declarations, only plain C types.
 *
 * Conventions (ggml / llama.h style):
 *  - opaque handles with create/free pairs; every free accepts NULL;
 *  - every fallible call returns a dn_status; results come back through
 *    out-parameters; on failure dn_last_error() holds a message that names
 *    the file, line, cfg section and what was expected;
 *  - a failed create frees what it built and sets *out = NULL;
 *  - the library never prints, exits or aborts.
 *
 * Tensor layout: NCHW, float32, batch outermost (darknet's layout).
 */
#ifndef PYDARKNET_DARKNET_H
#define PYDARKNET_DARKNET_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DN_OK = 0,
    DN_ERR_ARG = 1,          /* bad argument from the caller */
    DN_ERR_IO = 2,           /* file missing, unreadable, unwritable */
    DN_ERR_CFG = 3,          /* malformed or inconsistent .cfg */
    DN_ERR_WEIGHTS = 4,      /* .weights does not fit the network */
    DN_ERR_OOM = 5,          /* allocation failed */
    DN_ERR_UNSUPPORTED = 6,  /* a layer or option pydarknet does not implement */
    DN_ERR_IMAGE = 7,        /* bad image / frame */
    DN_ERR_DATA = 8,         /* bad dataset, list or label file */
    DN_ERR_NUMERIC = 9,      /* NaN or infinite loss / values */
    DN_ERR_CUDA = 10,        /* CUDA runtime or cuBLAS error */
    DN_ERR_INTERRUPTED = 11, /* stopped on request */
    DN_ERR_INTERNAL = 12     /* a bug in pydarknet */
} dn_status;

/* Message of the last failure on this thread ("" when none). */
const char *dn_last_error(void);
/* Status of the last failure on this thread. */
dn_status dn_last_error_status(void);
/* Library source location (file:line) that raised the last failure. */
const char *dn_last_error_origin(void);
void dn_clear_error(void);

const char *dn_version(void);
/* "avx512" / "avx2" / "generic": which GEMM kernel this CPU runs. */
const char *dn_cpu_kernel(void);
/* 1 when the library was built with CUDA kernels. */
int dn_built_with_cuda(void);
/* 1 when its convolutions run through cuDNN (a PYDARKNET_CUDNN=1 build). */
int dn_built_with_cudnn(void);
/* Number of CUDA devices present (0 on a CPU build or without a GPU). */
int dn_cuda_device_count(void);
/* Name of CUDA device k into buf (e.g. "NVIDIA H100 80GB HBM3"). */
dn_status dn_cuda_device_name(int device, char *buf, int size);
/* Number of hardware threads (the default thread count). */
int dn_hardware_threads(void);

/* Host memory for batches: page-locked (pinned) when `pinned` is 1 and a
 * CUDA device is present, so uploads to the GPU run at full DMA speed;
 * plain mapped pages otherwise (also when the system refuses to lock more
 * pages), returned to the system when freed.  64-byte aligned.  *is_pinned (may be NULL) says which.  Contents are
 * uninitialised.  Free with dn_host_free (NULL is a no-op). */
dn_status dn_host_alloc(size_t n_floats, int pinned, float **out, int *is_pinned);
void dn_host_free(float *p);

/* ------------------------------------------------------------------ */
/* Network                                                             */

typedef struct dn_network dn_network;

typedef struct {
    int threads;     /* worker threads; 0 = one per hardware thread */
    int batch;       /* images per forward; 0 = the cfg's batch/subdivisions */
    int train;       /* 1: allocate what training needs (deltas, gradients) */
    int width;       /* 0 = the cfg's width; else resize the network input */
    int height;      /* 0 = the cfg's height */
    int gpu;         /* -1: run on the CPU; k >= 0: on CUDA device k (CUDA builds) */
} dn_network_params;

/* Start from these (gpu = -1: the CPU). */
dn_network_params dn_network_default_params(void);

/* Parse a darknet .cfg (path) and build the network. */
dn_status dn_network_create(const char *cfg_path, const dn_network_params *params,
                            dn_network **out);
/* The same from cfg text in memory; `name` is used in error messages. */
dn_status dn_network_create_from_text(const char *cfg_text, const char *name,
                                      const dn_network_params *params, dn_network **out);
void dn_network_free(dn_network *net);

/* Options in the cfg that no layer read (darknet prints them as "Unused
 * field"), one per line with file:line, or "". */
const char *dn_network_warnings(const dn_network *net);

typedef struct {
    int width, height, channels;  /* network input */
    int batch;                    /* images per forward */
    int subdivisions;
    int inputs;                   /* floats per image at the input */
    int outputs;                  /* floats per image at the output layer */
    int n_layers;
    int output_layer;             /* index of the output layer (last non-cost) */
    int64_t seen;                 /* images seen (from the weights file) */
    int weights_major, weights_minor, weights_revision;
    size_t n_params;              /* learnable floats (one buffer) */
    size_t n_stats;               /* batch-norm rolling floats (one buffer) */
    double bflops;                /* total over all layers */
    int threads;
    int gpu;                      /* CUDA device, or -1 */
} dn_network_info;

dn_status dn_network_get_info(const dn_network *net, dn_network_info *out);

typedef struct {
    int index;
    const char *type;        /* darknet's section name, e.g. "convolutional" */
    int cfg_line;            /* line of the section header in the cfg */
    int in_w, in_h, in_c;
    int out_w, out_h, out_c;
    int outputs;             /* floats per image */
    int filters, size, stride, pad, groups;   /* 0 where meaningless */
    int batch_normalize;
    const char *activation;  /* "" where none */
    size_t n_params;         /* learnable floats of this layer */
    double bflops;
    int n_inputs;            /* route: how many inputs; shortcut: 1 */
    int input_layers[8];     /* route/shortcut: absolute indexes of inputs */
    int n_anchors;           /* region / yolo: anchors predicted per cell */
    int classes;             /* region / yolo: classes */
    float probability;       /* dropout: probability */
} dn_layer_info;

dn_status dn_network_get_layer(const dn_network *net, int index, dn_layer_info *out);

/* Change images per forward (reallocates activations). */
dn_status dn_network_set_batch(dn_network *net, int batch);
/* Change the input size (YOLO multi-scale); keeps the weights. */
dn_status dn_network_resize(dn_network *net, int width, int height);
dn_status dn_network_set_threads(dn_network *net, int threads);

/* Forward on batch*inputs floats (NCHW).  *output points at the output
 * layer's activations (batch*outputs floats), owned by the network and valid
 * until the next call on it. */
dn_status dn_network_predict(dn_network *net, const float *input, const float **output);

/* Per-layer timing: with profiling on, every forward records each layer's
 * wall time; dn_network_layer_time reads the last one (milliseconds). */
dn_status dn_network_set_profiling(dn_network *net, int on);
dn_status dn_network_layer_time(const dn_network *net, int index, double *ms);
/* The same for the last backward (training). */
dn_status dn_network_layer_backward_time(const dn_network *net, int index, double *ms);

/* Activations of layer `index` after the last forward (batch*outputs floats). */
dn_status dn_network_layer_output(const dn_network *net, int index, const float **data,
                                  size_t *n);

typedef enum {
    DN_PARAM_BIASES = 0,
    DN_PARAM_SCALES = 1,
    DN_PARAM_ROLLING_MEAN = 2,
    DN_PARAM_ROLLING_VARIANCE = 3,
    DN_PARAM_WEIGHTS = 4
} dn_param_kind;

/* A view of one parameter tensor of one layer (writable).  n = 0 and
 * data = NULL where the layer has none of that kind. */
dn_status dn_network_layer_param(dn_network *net, int index, dn_param_kind kind,
                                 float **data, size_t *n);

/* Tell the engine that parameters were written through views obtained
 * earlier from dn_network_layer_param (caches of transformed weights are
 * rebuilt, a GPU copy is refreshed before the next forward). */
dn_status dn_network_params_touched(dn_network *net);

/* Fill the weights with seeded He-scaled normals, biases and BN betas with
 * small normals, BN scales near 1, rolling mean near 0, rolling variance
 * near 1: random networks whose activations stay O(1). */
dn_status dn_network_randomize(dn_network *net, uint64_t seed);

/* .weights: darknet's binary format.  load checks the size exactly and
 * names the layer where a short file runs out; save is atomic (temporary
 * file + rename) and writes the header read by load (major, minor,
 * revision, seen width), so save(load(w)) is byte-identical. */
dn_status dn_network_load_weights(dn_network *net, const char *path);
/* Load layers [0, cutoff) (cutoff <= 0: all), darknet's load_weights_upto.
 * The file may end at a layer boundary before the cutoff (pretrained
 * backbones such as darknet19_448.conv.23: the rest keeps its initial
 * values) and may hold more after it; a file ending inside a layer is an
 * error.  *layers_loaded (may be NULL) gets n: layers [0, n) hold the
 * file's values or have none (the cutoff, or the first layer with weights
 * the file did not reach; the layer count for a whole file). */
dn_status dn_network_load_weights_upto(dn_network *net, const char *path, int cutoff,
                                       int *layers_loaded);
dn_status dn_network_save_weights(dn_network *net, const char *path);
dn_status dn_network_set_seen(dn_network *net, int64_t seen);

/* ------------------------------------------------------------------ */
/* Training (networks created with params.train = 1)                   */
/*
 * darknet's scheme: an update consumes batch * subdivisions images, in
 * `subdivisions` forward/backward passes of `batch` images (the network's
 * batch); `seen` counts images and the current batch number is
 * seen / (batch * subdivisions).  Gradients are accumulated by
 * dn_network_forward_backward and applied by dn_network_update, so a
 * data-parallel trainer can reduce them in between.                    */

/* Statistics of one [region] or [yolo] layer (darknet's training line). */
typedef struct {
    int layer;                /* layer index */
    float avg_iou, avg_class, avg_obj, avg_noobj, recall, recall75;
    int count;                /* truths matched */
} dn_layer_stats;

typedef struct {
    float loss;               /* darknet's: mean cost of the loss layers per image */
    float learning_rate;      /* rate of the update made (0 if none) */
    int64_t batch_num;        /* current batch (iteration) after the step */
    int64_t seen;             /* images seen after the step */
    int updated;              /* 1 if the step ended with an update */
    int n_layers;             /* entries used in `layers` */
    dn_layer_stats layers[8]; /* per detection layer, averaged over the step */
} dn_train_result;

/* One forward/backward pass of net->batch images in training mode:
 * seen += batch, losses against `truth` (see dn_network_truth_size), and the
 * gradients ADDED to the gradient buffer.  *loss gets darknet's cost (mean
 * over loss layers, summed over the batch).  A non-finite loss is
 * DN_ERR_NUMERIC naming the first layer whose output is not finite. */
dn_status dn_network_forward_backward(dn_network *net, const float *input, const float *truth,
                                      float *loss);

/* One SGD step with darknet's rule and learning-rate schedule at the
 * current batch number; gradients are consumed (zeroed).  Checks that the
 * parameters stay finite. */
dn_status dn_network_update(dn_network *net, float *learning_rate);

/* darknet's train_network on batch * subdivisions images: `subdivisions`
 * forward/backward passes, then one update. */
dn_status dn_network_train_step(dn_network *net, const float *input, const float *truth,
                                dn_train_result *out);

/* darknet's get_current_rate for a batch number (policy, burn_in). */
float dn_network_learning_rate(dn_network *net, int64_t batch_num);
int64_t dn_network_current_batch(const dn_network *net);
/* Truth floats per image the loss layers read (5 per box for region/yolo). */
int dn_network_truth_size(const dn_network *net);
/* Images one dn_network_train_step consumes: batch * subdivisions. */
int dn_network_images_per_step(const dn_network *net);
/* Hyper-parameters of [net] (darknet's names). */
typedef struct {
    float learning_rate, momentum, decay;
    int batch, subdivisions, max_batches, burn_in;
    float power;
    float jitter, hue, saturation, exposure, angle;
    int random;               /* multi-scale training (last layer's random=) */
    int max_boxes;            /* truths per image the loss layer reads */
} dn_train_params;
dn_status dn_network_get_train_params(const dn_network *net, dn_train_params *out);
dn_status dn_network_set_max_batches(dn_network *net, int max_batches);

/* Gradient views (same layout as dn_network_layer_param; rolling stats have
 * none) and the delta (negative gradient of the loss w.r.t. a layer's
 * output) after the last backward. */
dn_status dn_network_layer_grad(dn_network *net, int index, dn_param_kind kind, float **data,
                                size_t *n);
dn_status dn_network_layer_delta(const dn_network *net, int index, const float **data, size_t *n);
/* Keep the delta of the network input (for gradient checks): after each
 * backward it holds the negative gradient w.r.t. the input. */
dn_status dn_network_input_delta(dn_network *net, const float **data, size_t *n);
dn_status dn_network_zero_grads(dn_network *net);
/* Seed the generator used by dropout, crop and the random policy. */
dn_status dn_network_seed(dn_network *net, uint64_t seed);

/* ------------------------------------------------------------------ */
/* Data-parallel training over replicas (CPU threads, or GPUs)          */
/*
 * N replicas of one network, each owned by its own thread and started from
 * identical weights.  Each step takes N * batch * subdivisions images; replica
 * i trains on the i-th contiguous share (darknet's get_data_part).
 *
 * DN_SYNC_DARKNET: each replica runs its own forward, backward and SGD
 *   update; every sync_every steps the weights, biases and BN scales are
 *   averaged and written back to all (and the BN rolling statistics with
 *   sync_bn_stats).  As in darknet: the learning rate is multiplied by N, and
 *   at each sync `seen` grows by sync_every * (N - 1) * batch * subdivisions
 *   (so max_batches counts the images of all replicas).
 * DN_SYNC_ALLREDUCE: gradients are summed over the replicas every step and
 *   every replica applies the same update for N * batch * subdivisions
 *   images: the same weights as one replica trained on the whole batch (up to
 *   float summation order).  Batch-norm statistics are each replica's share.
 * warmup_single: the first K steps train replica 0 alone (one share of
 *   images), then its state is copied to all: the usual advice for darknet's
 *   multi-GPU training, which diverges early otherwise.                 */

typedef struct dn_trainer dn_trainer;

typedef enum { DN_SYNC_DARKNET = 0, DN_SYNC_ALLREDUCE = 1 } dn_sync_mode;

typedef struct {
    int replicas;             /* N >= 1 (CPU replicas) */
    const int *gpus;          /* GPU ordinals, one replica each (CUDA builds), or NULL */
    int n_gpus;
    dn_sync_mode sync;
    int sync_every;           /* darknet mode: steps between syncs (darknet: 4) */
    int sync_bn_stats;        /* also average the BN rolling statistics */
    int warmup_single;        /* first K steps on replica 0 alone */
    int threads;              /* per replica; 0 = hardware threads / replicas */
    uint64_t seed;
} dn_trainer_params;

typedef struct {
    dn_train_result train;    /* loss: mean over replicas; lr; batch_num, seen of replica 0 */
    int replicas_used;        /* 1 during warm-up */
    int synced;               /* 1 if the replicas were synchronised this step */
    double sync_seconds;      /* time spent in the reduction/averaging */
    double replica_seconds[64];
} dn_trainer_result;

dn_trainer_params dn_trainer_default_params(void);
dn_status dn_trainer_create(const char *cfg_path, const dn_trainer_params *params,
                            dn_trainer **out);
void dn_trainer_free(dn_trainer *trainer);
int dn_trainer_replicas(const dn_trainer *trainer);
/* Replica i's network (owned by the trainer). */
dn_network *dn_trainer_network(dn_trainer *trainer, int index);
/* Images the next dn_trainer_step takes (one share during warm-up). */
int dn_trainer_images_per_step(const dn_trainer *trainer);
/* Load weights into every replica (partial files allowed, as
 * dn_network_load_weights_upto with no cutoff). */
dn_status dn_trainer_load_weights(dn_trainer *trainer, const char *path, int *layers_loaded);
dn_status dn_trainer_set_seen(dn_trainer *trainer, int64_t seen);
dn_status dn_trainer_set_max_batches(dn_trainer *trainer, int max_batches);
dn_status dn_trainer_resize(dn_trainer *trainer, int width, int height);
dn_status dn_trainer_step(dn_trainer *trainer, const float *input, const float *truth,
                          dn_trainer_result *out);
/* Save replica 0 (BN rolling statistics averaged first with sync_bn_stats). */
dn_status dn_trainer_save_weights(dn_trainer *trainer, const char *path);

/* ------------------------------------------------------------------ */
/* Images                                                              */

/* A frame as OpenCV gives it: height x width x 3 uint8, BGR, rows
 * `row_stride` bytes apart (>= 3*width). */
typedef struct {
    const uint8_t *data;
    int width, height;
    int row_stride;
} dn_frame;

typedef enum {
    DN_RESIZE_LETTERBOX = 0,  /* pjreddie's letterbox_image: fit, pad with 0.5 */
    DN_RESIZE_PLAIN = 1       /* darknet's resize_image to the network size */
} dn_resize_mode;

/* Frame -> network input: BGR->RGB, /255, HWC->CHW, darknet's bilinear
 * resize (letterboxed or plain).  `out` holds 3*out_w*out_h floats. */
dn_status dn_frame_to_input(const dn_frame *frame, int out_w, int out_h, dn_resize_mode mode,
                            float *out);

/* darknet's detection data augmentation (load_data_detection) for one
 * image: random aspect jitter (+-jitter), scale in [.25, 2], placement,
 * hue/saturation/exposure distortion, horizontal flip; the boxes follow.
 * `labels` holds n_labels rows (class, x, y, w, h) of a darknet label file
 * (relative to the image).  Writes 3*out_h*out_w floats (CHW RGB) and
 * max_boxes rows (x, y, w, h, class) of truth, zero-padded (a zero x ends
 * the list, as darknet reads it).  augment = 0: a plain resize with no
 * randomness and the boxes unchanged.  The same seed gives the same
 * sample. */
typedef struct {
    int augment;
    float jitter, hue, saturation, exposure;
    int flip;                 /* allow random horizontal flips (darknet: 1) */
    int max_boxes;
} dn_augment_params;

dn_status dn_detection_sample(const dn_frame *frame, const float *labels, int n_labels,
                              int out_w, int out_h, const dn_augment_params *params,
                              uint64_t seed, float *image_out, float *truth_out);

/* darknet's resize_image on a CHW float image. */
dn_status dn_image_resize(const float *in, int w, int h, int c, int out_w, int out_h,
                          float *out);
/* darknet's letterbox_image on a CHW float image. */
dn_status dn_image_letterbox(const float *in, int w, int h, int c, int out_w, int out_h,
                             float *out);

/* ------------------------------------------------------------------ */
/* Detection                                                           */

typedef enum {
    DN_NMS_SORT = 0,  /* darknet's do_nms_sort: per class (the `detect` command) */
    DN_NMS_OBJ = 1,   /* darknet's do_nms_obj: by objectness (darknet.py) */
    DN_NMS_NONE = 2
} dn_nms_kind;

typedef struct {
    float thresh;        /* darknet's thresh (default .5) */
    float hier_thresh;   /* darknet's hier_thresh (default .5) */
    float nms;           /* IoU threshold (default .45); <= 0 disables */
    dn_nms_kind nms_kind;
    dn_resize_mode resize;
} dn_detect_params;

dn_detect_params dn_detect_default_params(void);

/* One (box, class) pair above thresh, as darknet's draw_detections prints it.
 * Box in pixels of the original image: centre x, y and size w, h. */
typedef struct {
    int image;           /* index of the frame in a batch */
    int box_index;       /* the box (anchor x cell) it comes from */
    int class_id;
    float confidence;    /* darknet's prob: objectness * class probability */
    float objectness;
    float x, y, w, h;
} dn_detection;

/* The results of one call: owned by the caller, freed with dn_detections_free. */
typedef struct {
    dn_detection *items;
    int count;
} dn_detections;

void dn_detections_free(dn_detections *dets);

/* Frames -> detections: resize each into the network input, forward, decode
 * every region/yolo layer (darknet's get_network_boxes), NMS, and list the
 * (box, class) pairs above thresh.  n_frames must not exceed the network
 * batch (use dn_network_set_batch).  *out is NULL on failure. */
dn_status dn_network_detect(dn_network *net, const dn_frame *frames, int n_frames,
                            const dn_detect_params *params, dn_detections **out);

/* Decode boxes from the last forward, for an image of size img_w x img_h
 * that was given to the network with `resize`.  For tests and tools that
 * run the forward themselves. */
dn_status dn_network_boxes(dn_network *net, int batch_index, int img_w, int img_h,
                           const dn_detect_params *params, dn_detections **out);

#endif
