/* The public network calls: information, batch and size changes, predict,
 * views of activations and parameters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "darknet.h"
#include "error.h"
#include "gemm.h"
#include "network.h"

#define DN_VERSION "0.1.0"

DN_API const char *dn_version(void) { return DN_VERSION; }
DN_API const char *dn_cpu_kernel(void) { return dn_gemm_kernel_name(); }

DN_API dn_status dn_network_get_info(const dn_network *net, dn_network_info *out)
{
    if (!net || !out) return DN_FAIL(DN_ERR_ARG, "network and out must not be NULL");
    memset(out, 0, sizeof *out);
    out->width = net->w;
    out->height = net->h;
    out->channels = net->c;
    out->batch = net->batch;
    out->subdivisions = net->hp.subdivisions;
    out->inputs = net->inputs;
    out->outputs = net->layers[net->output_layer].out_size;
    out->n_layers = net->n_layers;
    out->output_layer = net->output_layer;
    out->seen = net->seen;
    out->weights_major = net->weights_major;
    out->weights_minor = net->weights_minor;
    out->weights_revision = net->weights_revision;
    out->n_params = net->n_params;
    out->n_stats = net->n_stats;
    double bflops = 0;
    for (int i = 0; i < net->n_layers; i++) bflops += net->layers[i].bflops;
    out->bflops = bflops;
    out->threads = net->threads;
    out->gpu = net->gpu ? net->gpu_index : -1;
    return DN_OK;
}

static dn_status check_index(const dn_network *net, int index)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (index < 0 || index >= net->n_layers)
        return DN_FAIL(DN_ERR_ARG, "layer index %d out of range (the network has %d layers)",
                       index, net->n_layers);
    return DN_OK;
}

DN_API dn_status dn_network_get_layer(const dn_network *net, int index, dn_layer_info *out)
{
    DN_TRY(check_index(net, index));
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    const dn_layer *l = &net->layers[index];
    memset(out, 0, sizeof *out);
    out->index = index;
    out->type = l->ops->name;
    out->cfg_line = l->cfg_line;
    out->in_w = l->in_w;
    out->in_h = l->in_h;
    out->in_c = l->in_c;
    out->out_w = l->out_w;
    out->out_h = l->out_h;
    out->out_c = l->out_c;
    out->outputs = l->out_size;
    out->batch_normalize = l->batch_normalize;
    out->activation = l->has_activation ? dn_activation_name(l->activation) : "";
    out->n_params = l->n_params;
    out->bflops = l->bflops;
    switch (l->type) {
    case DN_LAYER_CONVOLUTIONAL:
        out->filters = l->u.conv.filters;
        out->size = l->u.conv.size;
        out->stride = l->u.conv.stride;
        out->pad = l->u.conv.pad;
        out->groups = l->u.conv.groups;
        break;
    case DN_LAYER_CONNECTED: out->filters = l->out_size; break;
    case DN_LAYER_MAXPOOL:
        out->size = l->u.pool.size;
        out->stride = l->u.pool.stride;
        out->pad = l->u.pool.pad;
        break;
    case DN_LAYER_REORG: out->stride = l->u.reorg.stride; break;
    case DN_LAYER_UPSAMPLE: out->stride = l->u.upsample.reverse ? -l->u.upsample.stride : l->u.upsample.stride; break;
    case DN_LAYER_REGION:
        out->n_anchors = l->u.region.n_anchors;
        out->classes = l->u.region.classes;
        break;
    case DN_LAYER_YOLO:
        out->n_anchors = l->u.yolo.n_anchors;
        out->classes = l->u.yolo.classes;
        break;
    case DN_LAYER_SOFTMAX: out->groups = l->u.softmax.groups; break;
    case DN_LAYER_DROPOUT: out->probability = l->u.dropout.probability; break;
    default: break;
    }
    out->n_inputs = l->n_sources;
    for (int i = 0; i < l->n_sources && i < 8; i++) out->input_layers[i] = l->source_index[i];
    return DN_OK;
}

static dn_status reallocate(dn_network *net) { return dn_network_reallocate_activations(net); }

DN_API dn_status dn_network_set_batch(dn_network *net, int batch)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (batch < 1) return DN_FAIL(DN_ERR_ARG, "batch must be >= 1, got %d", batch);
    if (batch == net->batch && net->buffers_lost == DN_OK) return DN_OK;
    /* refused before anything changes: the old buffers stay usable */
    DN_TRY(dn_network_check_batch_volume(net, batch, net->w, net->h));
    net->batch = batch;
    return reallocate(net);
}

/* every layer's shape for a width x height input (each layer's resize
 * refuses a shape it cannot take; its message gets the size and the layer) */
static dn_status resize_layers(dn_network *net, int width, int height)
{
    int w = width, h = height;
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        dn_status st = l->ops->resize(l, w, h);
        if (st != DN_OK) {
            dn_error_prefix("resizing to %dx%d: layer %d ([%s]): ", width, height, i, l->ops->name);
            return st;
        }
        w = l->out_w;
        h = l->out_h;
    }
    return DN_OK;
}

DN_API dn_status dn_network_resize(dn_network *net, int width, int height)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (width < 1 || height < 1)
        return DN_FAIL(DN_ERR_ARG, "size must be positive, got %dx%d", width, height);
    if (!dn_shape_fits(width, height, net->c))
        return DN_FAIL(DN_ERR_ARG, "resizing to %dx%d: the %dx%dx%d input is too large (%.0f values; at most %d)",
                       width, height, width, height, net->c, (double)width * height * net->c,
                       DN_MAX_VOLUME);
    if (width == net->w && height == net->h && net->buffers_lost == DN_OK) return DN_OK;
    dn_status st = resize_layers(net, width, height);
    if (st == DN_OK) st = dn_network_check_batch_volume(net, net->batch, width, height);
    if (st != DN_OK) {
        /* a layer refused the size, or the batch at it: the layers took it; back to
         * the size the buffers have (it worked before, so the message stays) */
        if (resize_layers(net, net->w, net->h) != DN_OK) net->buffers_lost = st;
        return st;
    }
    net->w = width;
    net->h = height;
    net->inputs = width * height * net->c; /* fits: checked above */
    return reallocate(net);
}

DN_API dn_status dn_network_set_threads(dn_network *net, int threads)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (threads < 0) return DN_FAIL(DN_ERR_ARG, "threads must be >= 0, got %d", threads);
    if (threads == 0) threads = dn_hardware_threads_internal();
    if (threads == net->threads) return DN_OK;
    dn_pool *pool;
    DN_TRY(dn_pool_create(threads, &pool));
    dn_pool_free(net->pool);
    net->pool = pool;
    net->threads = threads;
    return DN_OK;
}

DN_API dn_status dn_network_predict(dn_network *net, const float *input, const float **output)
{
    if (!net || !output) return DN_FAIL(DN_ERR_ARG, "network and output must not be NULL");
    *output = NULL;
    if (!input) input = net->input;
    DN_TRY(dn_network_forward(net, input, 0, NULL));
    if (net->gpu) DN_TRY(dn_cuda_pull_output(net, net->output_layer));
    *output = net->layers[net->output_layer].output;
    return DN_OK;
}

DN_API dn_status dn_network_set_profiling(dn_network *net, int on)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (on && !net->layer_ms) {
        net->layer_ms = calloc(2 * (size_t)net->n_layers, sizeof *net->layer_ms);
        if (!net->layer_ms) return DN_FAIL(DN_ERR_OOM, "out of memory for layer timings");
    }
    net->profiling = on ? 1 : 0;
    return DN_OK;
}

DN_API dn_status dn_network_layer_time(const dn_network *net, int index, double *ms)
{
    DN_TRY(check_index(net, index));
    if (!ms) return DN_FAIL(DN_ERR_ARG, "ms must not be NULL");
    *ms = net->layer_ms ? net->layer_ms[index] : 0;
    return DN_OK;
}

DN_API dn_status dn_network_layer_backward_time(const dn_network *net, int index, double *ms)
{
    DN_TRY(check_index(net, index));
    if (!ms) return DN_FAIL(DN_ERR_ARG, "ms must not be NULL");
    *ms = net->layer_ms ? net->layer_ms[net->n_layers + index] : 0;
    return DN_OK;
}

DN_API dn_status dn_network_layer_output(const dn_network *net, int index, const float **data,
                                         size_t *n)
{
    DN_TRY(check_index(net, index));
    if (!data || !n) return DN_FAIL(DN_ERR_ARG, "data and n must not be NULL");
    DN_TRY(dn_network_check_buffers(net));
    if (net->gpu) DN_TRY(dn_cuda_pull_output((dn_network *)net, index));
    const dn_layer *l = &net->layers[index];
    *data = l->output;
    *n = (size_t)l->batch * l->out_size;
    return DN_OK;
}

DN_API dn_status dn_network_layer_param(dn_network *net, int index, dn_param_kind kind,
                                        float **data, size_t *n)
{
    DN_TRY(check_index(net, index));
    if (!data || !n) return DN_FAIL(DN_ERR_ARG, "data and n must not be NULL");
    dn_layer *l = &net->layers[index];
    *data = NULL;
    *n = 0;
    if (!l->n_params) return DN_OK;
    dn_network_ensure_params(net);
    DN_TRY(dn_network_sync_host_params(net));
    if (net->gpu) net->device_params_stale = 1; /* the caller may write through the view */
    dn_network_params_changed(net);
    switch (kind) {
    case DN_PARAM_BIASES: *data = l->biases; *n = (size_t)l->n_biases; break;
    case DN_PARAM_SCALES: *data = l->scales; *n = l->scales ? (size_t)l->n_biases : 0; break;
    case DN_PARAM_ROLLING_MEAN:
        *data = l->rolling_mean;
        *n = l->rolling_mean ? (size_t)l->n_biases : 0;
        break;
    case DN_PARAM_ROLLING_VARIANCE:
        *data = l->rolling_variance;
        *n = l->rolling_variance ? (size_t)l->n_biases : 0;
        break;
    case DN_PARAM_WEIGHTS: *data = l->weights; *n = l->n_weights; break;
    default: return DN_FAIL(DN_ERR_ARG, "unknown parameter kind %d", (int)kind);
    }
    return DN_OK;
}

DN_API dn_status dn_network_params_touched(dn_network *net)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    dn_network_params_changed(net);
    if (net->gpu) net->device_params_stale = 1;
    return DN_OK;
}

DN_API dn_status dn_network_randomize(dn_network *net, uint64_t seed)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    dn_rng rng;
    dn_rng_seed(&rng, seed);
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_params) continue;
        float fan_in = l->type == DN_LAYER_CONVOLUTIONAL
                           ? (float)l->u.conv.size * l->u.conv.size * l->in_c / l->u.conv.groups
                           : (float)l->in_size;
        float scale = sqrtf(2.f / fan_in);
        for (size_t k = 0; k < l->n_weights; k++) l->weights[k] = scale * dn_rng_normal(&rng);
        for (int k = 0; k < l->n_biases; k++) l->biases[k] = .1f * dn_rng_normal(&rng);
        if (l->batch_normalize)
            for (int k = 0; k < l->n_biases; k++) {
                l->scales[k] = 1.f + .1f * dn_rng_normal(&rng);
                l->rolling_mean[k] = .1f * dn_rng_normal(&rng);
                l->rolling_variance[k] = 1.f + .5f * dn_rng_uniform(&rng);
            }
    }
    net->params_ready = 1; /* every parameter was just written */
    dn_network_params_changed(net);
    if (net->gpu) {
        net->host_params_stale = 0;
        net->device_params_stale = 1;
    }
    return DN_OK;
}

DN_API dn_status dn_network_set_seen(dn_network *net, int64_t seen)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (seen < 0) return DN_FAIL(DN_ERR_ARG, "seen must be >= 0");
    net->seen = seen;
    return DN_OK;
}
