/* Building a network from a cfg, its buffers, and the forward pass. */
#define _GNU_SOURCE
#include "network.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "cfg.h"
#include "cuda.h"
#include "error.h"
#include "util.h"

/* ---- [net] ------------------------------------------------------------------- */

static dn_status parse_policy(const dn_cfg *cfg, dn_section *s, dn_net_hparams *hp)
{
    const char *name;
    DN_TRY(dn_cfg_str(cfg, s, "policy", "constant", &name));
    static const struct {
        const char *name;
        dn_lr_policy policy;
    } policies[] = {{"constant", DN_POLICY_CONSTANT}, {"step", DN_POLICY_STEP},
                    {"exp", DN_POLICY_EXP},           {"poly", DN_POLICY_POLY},
                    {"steps", DN_POLICY_STEPS},       {"sigmoid", DN_POLICY_SIG},
                    {"sig", DN_POLICY_SIG},           {"random", DN_POLICY_RANDOM}};
    int found = 0;
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++)
        if (strcmp(name, policies[i].name) == 0) {
            hp->policy = policies[i].policy;
            found = 1;
        }
    if (!found)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "policy=%s: expected constant, step, steps, exp, poly, sigmoid or random",
                            name);
    DN_TRY(dn_cfg_int(cfg, s, "burn_in", 0, &hp->burn_in));
    DN_TRY(dn_cfg_float(cfg, s, "power", 4, &hp->power));
    switch (hp->policy) {
    case DN_POLICY_STEP:
        DN_TRY(dn_cfg_int(cfg, s, "step", 1, &hp->step));
        DN_TRY(dn_cfg_float(cfg, s, "scale", 1, &hp->scale));
        break;
    case DN_POLICY_STEPS: {
        int n_scales = 0;
        DN_TRY(dn_cfg_int_list(cfg, s, "steps", &hp->steps, &hp->n_steps));
        DN_TRY(dn_cfg_float_list(cfg, s, "scales", &hp->scales, &n_scales));
        if (!hp->steps || !hp->scales)
            return dn_cfg_error(cfg, s, DN_ERR_CFG, "policy=steps needs both steps= and scales=");
        if (n_scales != hp->n_steps)
            return dn_cfg_error(cfg, s, DN_ERR_CFG,
                                "steps= has %d values but scales= has %d: expected one scale per "
                                "step",
                                hp->n_steps, n_scales);
        break;
    }
    case DN_POLICY_EXP: DN_TRY(dn_cfg_float(cfg, s, "gamma", 1, &hp->gamma)); break;
    case DN_POLICY_SIG:
        DN_TRY(dn_cfg_float(cfg, s, "gamma", 1, &hp->gamma));
        DN_TRY(dn_cfg_int(cfg, s, "step", 1, &hp->step));
        break;
    default: break;
    }
    return DN_OK;
}

static int clamp_to_int(int64_t v) { return v > INT_MAX ? INT_MAX : v < INT_MIN ? INT_MIN : (int)v; }

static dn_status parse_net_section(const dn_cfg *cfg, dn_section *s, dn_net_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    DN_TRY(dn_cfg_int(cfg, s, "batch", 1, &hp->batch));
    DN_TRY(dn_cfg_float(cfg, s, "learning_rate", .001f, &hp->learning_rate));
    DN_TRY(dn_cfg_float(cfg, s, "momentum", .9f, &hp->momentum));
    DN_TRY(dn_cfg_float(cfg, s, "decay", .0001f, &hp->decay));
    DN_TRY(dn_cfg_int(cfg, s, "subdivisions", 1, &hp->subdivisions));
    DN_TRY(dn_cfg_int(cfg, s, "time_steps", 1, &hp->time_steps));
    DN_TRY(dn_cfg_int(cfg, s, "notruth", 0, &hp->notruth));
    DN_TRY(dn_cfg_int(cfg, s, "random", 0, &hp->random));
    DN_TRY(dn_cfg_int(cfg, s, "adam", 0, &hp->adam));
    if (hp->adam) {
        DN_TRY(dn_cfg_float(cfg, s, "B1", .9f, &hp->adam_b1));
        DN_TRY(dn_cfg_float(cfg, s, "B2", .999f, &hp->adam_b2));
        DN_TRY(dn_cfg_float(cfg, s, "eps", .0000001f, &hp->adam_eps));
    }
    DN_TRY(dn_cfg_int(cfg, s, "height", 0, &hp->height));
    DN_TRY(dn_cfg_int(cfg, s, "width", 0, &hp->width));
    DN_TRY(dn_cfg_int(cfg, s, "channels", 0, &hp->channels));
    /* darknet's defaults, h*w*c and 2*w, computed without overflow (absurd
     * sizes are refused below and in build_network) */
    int volume = dn_shape_fits(hp->width, hp->height, hp->channels)
                     ? hp->height * hp->width * hp->channels : 0;
    DN_TRY(dn_cfg_int(cfg, s, "inputs", volume, &hp->inputs));
    DN_TRY(dn_cfg_int(cfg, s, "max_crop", clamp_to_int((int64_t)hp->width * 2), &hp->max_crop));
    DN_TRY(dn_cfg_int(cfg, s, "min_crop", hp->width, &hp->min_crop));
    hp->max_ratio = hp->width ? (float)hp->max_crop / hp->width : 0;
    hp->min_ratio = hp->width ? (float)hp->min_crop / hp->width : 0;
    DN_TRY(dn_cfg_float(cfg, s, "max_ratio", hp->max_ratio, &hp->max_ratio));
    DN_TRY(dn_cfg_float(cfg, s, "min_ratio", hp->min_ratio, &hp->min_ratio));
    DN_TRY(dn_cfg_int(cfg, s, "center", 0, &hp->center));
    DN_TRY(dn_cfg_float(cfg, s, "clip", 0, &hp->clip));
    DN_TRY(dn_cfg_float(cfg, s, "angle", 0, &hp->angle));
    DN_TRY(dn_cfg_float(cfg, s, "aspect", 1, &hp->aspect));
    DN_TRY(dn_cfg_float(cfg, s, "saturation", 1, &hp->saturation));
    DN_TRY(dn_cfg_float(cfg, s, "exposure", 1, &hp->exposure));
    DN_TRY(dn_cfg_float(cfg, s, "hue", 0, &hp->hue));
    DN_TRY(dn_cfg_check_augment(cfg, s, "saturation", hp->saturation));
    DN_TRY(dn_cfg_check_augment(cfg, s, "exposure", hp->exposure));
    DN_TRY(dn_cfg_check_augment(cfg, s, "hue", hp->hue));
    DN_TRY(parse_policy(cfg, s, hp));
    DN_TRY(dn_cfg_int(cfg, s, "max_batches", 0, &hp->max_batches));

    if (hp->subdivisions < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "subdivisions=%d, expected >= 1", hp->subdivisions);
    if (hp->batch < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "batch=%d, expected >= 1", hp->batch);
    if (hp->batch < hp->subdivisions)
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "batch=%d is smaller than subdivisions=%d (images per forward would be "
                            "0)",
                            hp->batch, hp->subdivisions);
    if (hp->time_steps != 1)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED,
                            "time_steps=%d: recurrent networks are not implemented", hp->time_steps);
    if (!(hp->height && hp->width && hp->channels))
        return dn_cfg_error(cfg, s, hp->inputs ? DN_ERR_UNSUPPORTED : DN_ERR_CFG,
                            "needs width=, height= and channels= (inputs=-only networks are not "
                            "supported)");
    if (hp->height < 1 || hp->width < 1 || hp->channels < 1)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "width, height and channels must be positive");
    return DN_OK;
}

/* ---- layers ------------------------------------------------------------------ */

static dn_status read_common_options(const dn_cfg *cfg, dn_section *s, dn_layer *l)
{
    int ignored;
    float ignored_f;
    DN_TRY(dn_cfg_float(cfg, s, "learning_rate", 1, &l->learning_rate_scale));
    DN_TRY(dn_cfg_int(cfg, s, "stopbackward", 0, &l->stopbackward));
    DN_TRY(dn_cfg_int(cfg, s, "dontload", 0, &l->dontload));
    DN_TRY(dn_cfg_int(cfg, s, "dontloadscales", 0, &l->dontloadscales));
    DN_TRY(dn_cfg_int(cfg, s, "dontsave", 0, &l->dontsave));
    DN_TRY(dn_cfg_int(cfg, s, "onlyforward", 0, &l->onlyforward));
    DN_TRY(dn_cfg_int(cfg, s, "truth", 0, &ignored));
    DN_TRY(dn_cfg_float(cfg, s, "smooth", 0, &ignored_f));
    DN_TRY(dn_cfg_require_int(cfg, s, "numload", 0, "numload is not implemented"));
    return DN_OK;
}

static dn_status build_layer(dn_network *net, dn_cfg *cfg, int section_index, int w, int h, int c)
{
    dn_section *s = &cfg->sections[section_index];
    int index = section_index - 1;
    dn_layer *l = &net->layers[index];
    const dn_layer_ops *ops = dn_layer_ops_for(s->name);
    if (!ops) {
        const char *what = dn_layer_unsupported_reason(s->name);
        if (what)
            return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED,
                                "unsupported layer (darknet's %s is not implemented by pydarknet)",
                                what);
        if (strcmp(s->name, "net") == 0 || strcmp(s->name, "network") == 0)
            return dn_cfg_error(cfg, s, DN_ERR_CFG, "a second [net] section (layer %d)", index);
        return dn_cfg_error(cfg, s, DN_ERR_CFG,
                            "unknown section (expected a darknet layer: convolutional, maxpool, "
                            "avgpool, route, reorg, shortcut, upsample, region, yolo, softmax, "
                            "connected, dropout, cost, crop)");
    }
    l->type = ops->type;
    l->ops = ops;
    l->index = index;
    l->cfg_line = s->line;
    l->batch = net->batch;
    DN_TRY(read_common_options(cfg, s, l));
    dn_build b = {net->batch, w, h, c, net->w, net->h, index, cfg, s, net->layers};
    dn_status st = ops->parse(l, &b);
    if (st != DN_OK) return st;
    if (l->out_size <= 0)
        return dn_cfg_error(cfg, s, DN_ERR_CFG, "produces an empty output (%dx%dx%d)", l->out_w,
                            l->out_h, l->out_c);
    return DN_OK;
}

static const dn_option *first_with_key(const dn_section *s, const char *key)
{
    for (int i = 0; i < s->n_options; i++)
        if (strcmp(s->options[i].key, key) == 0) return &s->options[i];
    return NULL;
}

static int section_was_read(const dn_section *s)
{
    for (int j = 0; j < s->n_options; j++)
        if (s->options[j].used) return 1;
    return 0;
}

/* A cfg that failed to build: the unused options of the sections read
 * before the one that failed (a misspelt key being a likely cause:
 * "filtres=255" leaves filters=1, and the [yolo] after it fails), added to
 * the error, since the warnings they would have been are never shown. */
static void note_unused_options(const dn_cfg *cfg)
{
    int failed = cfg->n_sections - 1;  /* the last section read */
    while (failed > 0 && !section_was_read(&cfg->sections[failed])) failed--;
    int noted = 0;
    for (int i = 0; i < failed && noted < 3; i++) {
        const dn_section *s = &cfg->sections[i];
        for (int j = 0; j < s->n_options && noted < 3; j++) {
            const dn_option *o = &s->options[j];
            if (o->used || first_with_key(s, o->key) != o) continue;
            dn_error_append("%s unused option '%s=%s' in [%s] at line %d", noted ? "," : " (note:", o->key,
                            o->value, s->name, o->line);
            noted++;
        }
    }
    if (noted) dn_error_append(")");
}

static dn_status collect_unused_options(dn_network *net, const dn_cfg *cfg, char **warnings)
{
    size_t cap = 0, len = 0;
    char *text = NULL;
    for (int i = 0; i < cfg->n_sections; i++) {
        const dn_section *s = &cfg->sections[i];
        for (int j = 0; j < s->n_options; j++) {
            const dn_option *o = &s->options[j];
            if (o->used) continue;
            const dn_option *first = first_with_key(s, o->key);
            char line[512];
            int n = first != o && first->used
                        /* darknet's option_find reads a repeated key's first value */
                        ? snprintf(line, sizeof line, "%s:%d: [%s]: '%s=%s' ignored: '%s' is set on line %d"
                                   " (darknet reads the first)\n", cfg->source, o->line, s->name, o->key,
                                   o->value, o->key, first->line)
                        : snprintf(line, sizeof line, "%s:%d: [%s]: unused option '%s=%s'\n", cfg->source,
                                   o->line, s->name, o->key, o->value);
            if (n < 0) continue;
            if (len + (size_t)n + 1 > cap) {
                cap = 2 * (len + (size_t)n + 1);
                char *grown = realloc(text, cap);
                if (!grown) {
                    free(text);
                    return DN_FAIL(DN_ERR_OOM, "out of memory collecting warnings");
                }
                text = grown;
            }
            memcpy(text + len, line, (size_t)n + 1);
            len += (size_t)n;
        }
    }
    (void)net;
    *warnings = text;
    return DN_OK;
}

/* ---- parameter buffers ------------------------------------------------------------ */

dn_ctx dn_network_ctx(dn_network *net, int train)
{
    dn_ctx ctx = {0};
    ctx.train = train;
    ctx.workspace = net->workspace;
    ctx.pool = net->pool;
    ctx.truth_stride = net->truth_size;
    ctx.seen = net->seen;
    ctx.net_w = net->w;
    ctx.net_h = net->h;
    ctx.rng = &net->rng;
    ctx.params_version = net->params_version;
    return ctx;
}

void dn_layer_param_views(const dn_layer *l, float *buffer, float **biases, float **scales, float **weights)
{
    size_t scales_at = l->param_offset + (size_t)l->n_biases;
    *biases = buffer + l->param_offset;
    *scales = l->batch_normalize ? buffer + scales_at : NULL;
    *weights = buffer + scales_at + (l->batch_normalize ? (size_t)l->n_biases : 0);
}

void dn_layer_stats_views(const dn_layer *l, float *stats, float **rolling_mean, float **rolling_variance)
{
    *rolling_mean = l->batch_normalize ? stats + l->stats_offset : NULL;
    *rolling_variance = l->batch_normalize ? stats + l->stats_offset + l->n_biases : NULL;
}

static void bind_views(dn_network *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_params) continue;
        dn_layer_param_views(l, net->params, &l->biases, &l->scales, &l->weights);
        if (net->grads) {
            dn_layer_param_views(l, net->grads, &l->bias_grads, &l->scale_grads, &l->weight_grads);
            dn_layer_param_views(l, net->velocity, &l->bias_velocity, &l->scale_velocity, &l->weight_velocity);
        }
        dn_layer_stats_views(l, net->stats, &l->rolling_mean, &l->rolling_variance);
    }
}

/* darknet's initialisation of a fresh network: conv weights ~ N(0, 2/fan_in),
 * connected weights ~ U(-1, 1) * sqrt(2/inputs), biases 0, BN scales 1,
 * rolling mean and variance 0 (as darknet's calloc leaves them). */
static void initialise_params(dn_network *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_params) continue;
        if (l->type == DN_LAYER_CONVOLUTIONAL) {
            int fan_in = l->u.conv.size * l->u.conv.size * l->in_c / l->u.conv.groups;
            float scale = sqrtf(2.f / fan_in);
            for (size_t k = 0; k < l->n_weights; k++)
                l->weights[k] = scale * dn_rng_normal(&net->rng);
        } else {
            float scale = sqrtf(2.f / l->in_size);
            for (size_t k = 0; k < l->n_weights; k++)
                l->weights[k] = scale * dn_rng_range(&net->rng, -1, 1);
        }
        if (l->scales)
            for (int k = 0; k < l->n_biases; k++) l->scales[k] = 1.f;
    }
}

static dn_status allocate_params(dn_network *net)
{
    size_t n_params = 0, n_stats = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_weights) continue;
        l->param_offset = n_params;
        l->n_params = (size_t)l->n_biases * (l->batch_normalize ? 2 : 1) + l->n_weights;
        n_params += l->n_params;
        if (l->batch_normalize) {
            l->stats_offset = n_stats;
            l->n_stats = 2 * (size_t)l->n_biases;
            n_stats += l->n_stats;
        }
    }
    net->n_params = n_params;
    net->n_stats = n_stats;
    net->params = dn_alloc_floats(n_params, "parameters");
    net->stats = dn_alloc_floats(n_stats, "batch-norm statistics");
    if (!net->params || !net->stats) return DN_ERR_OOM;
    if (net->train) {
        net->grads = dn_alloc_floats(n_params, "gradients");
        net->velocity = dn_alloc_floats(n_params, "momentum");
        if (!net->grads || !net->velocity) return DN_ERR_OOM;
    }
    bind_views(net);
    net->params_ready = 0; /* initialised on first use, unless weights arrive first */
    return DN_OK;
}

void dn_network_ensure_params(dn_network *net)
{
    if (net->params_ready) return;
    initialise_params(net);
    net->params_ready = 1;
    dn_network_params_changed(net);
}

void dn_network_params_changed(dn_network *net) { net->params_version++; }

/* ---- activations ------------------------------------------------------------------- */

/* Whole-batch counts (batch * values per image) are ints in the layers'
 * loops, indexes and kernels, as in darknet: refuse a batch that would
 * overflow them, before allocating anything. */
dn_status dn_network_check_batch_volume(const dn_network *net, int batch, int width, int height)
{
    int64_t largest = (int64_t)width * height * net->c;
    int at = -1;
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        int64_t values = l->out_size > l->in_size ? l->out_size : l->in_size;
        if (values > largest) {
            largest = values;
            at = i;
        }
    }
    if ((int64_t)batch * largest <= INT_MAX) return DN_OK;
    char where[96] = "the input";
    if (at >= 0) snprintf(where, sizeof where, "layer %d ([%s])", at, net->layers[at].ops->name);
    return DN_FAIL(DN_ERR_ARG,
                   "batch %d is too large for this network at %dx%d: %s holds %lld values per "
                   "image, and a batch's values are counted in an int (at most %d: batch <= %lld)",
                   batch, width, height, where, (long long)largest, INT_MAX,
                   (long long)(INT_MAX / largest));
}

static dn_status allocate_activations(dn_network *net)
{
    DN_TRY(dn_network_check_batch_volume(net, net->batch, net->w, net->h));
    size_t workspace = 0;
    int truth_size = 0;
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        l->batch = net->batch;
        dn_status st = l->ops->alloc(l, net->train);
        if (st != DN_OK) {
            dn_error_prefix("layer %d ([%s]): ", i, l->ops->name);
            return st;
        }
        if (l->workspace_size > workspace) workspace = l->workspace_size;
        if (l->truth_size > truth_size) truth_size = l->truth_size;
    }
    dn_free(net->workspace);
    dn_free(net->input);
    dn_free(net->truth);
    net->truth = NULL;
    if (net->input_delta) {
        dn_free(net->input_delta);
        net->input_delta = dn_alloc_floats((size_t)net->batch * net->inputs, "input delta");
        if (!net->input_delta) return DN_ERR_OOM;
    }
    net->workspace = dn_alloc_floats(workspace, "workspace");
    net->workspace_size = workspace;
    net->input = dn_alloc_floats((size_t)net->batch * net->inputs, "network input");
    if (!net->workspace || !net->input) return DN_ERR_OOM;
    net->truth_size = truth_size;
    if (net->train && truth_size) {
        net->truth = dn_alloc_floats((size_t)net->batch * truth_size, "truth");
        if (!net->truth) return DN_ERR_OOM;
    }
    return DN_OK;
}

dn_status dn_network_reallocate_activations(dn_network *net)
{
    dn_status st = allocate_activations(net);
    if (st == DN_OK && net->gpu) st = dn_cuda_network_realloc(net);
    /* a failure part way leaves buffers of the old shape, or none: nothing runs
     * on them until a reallocation succeeds */
    net->buffers_lost = st;
    return st;
}

dn_status dn_network_check_buffers(const dn_network *net)
{
    if (net->buffers_lost == DN_OK) return DN_OK;
    return DN_FAIL(net->buffers_lost, "this network's buffers were not reallocated: its last set_batch or "
                   "resize (to batch %d, %dx%d) failed; set its batch or size again, or create it anew",
                   net->batch, net->w, net->h);
}

dn_status dn_network_sync_host_params(dn_network *net)
{
    if (net->gpu && net->host_params_stale) {
        DN_TRY(dn_cuda_pull_params(net));
        net->host_params_stale = 0;
        dn_network_params_changed(net);
    }
    return DN_OK;
}

/* ---- create / free ------------------------------------------------------------------ */

int dn_hardware_threads_internal(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

DN_API int dn_hardware_threads(void) { return dn_hardware_threads_internal(); }

DN_API dn_network_params dn_network_default_params(void)
{
    dn_network_params p = {0, 0, 0, 0, 0, -1};
    return p;
}


/* Name the first layer pydarknet cannot build before anything else fails
 * (recurrent cfgs also lack [net] width/height, which would hide the cause). */
static dn_status check_supported(const dn_cfg *cfg)
{
    for (int i = 1; i < cfg->n_sections; i++) {
        const dn_section *s = &cfg->sections[i];
        const char *what = dn_layer_unsupported_reason(s->name);
        if (what)
            return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED,
                                "unsupported layer (darknet's %s is not implemented by pydarknet)",
                                what);
    }
    return DN_OK;
}

/* The input of one image (w*h*c values) must fit an int, as every layer's
 * shapes must (DN_MAX_VOLUME). */
static dn_status check_input_volume(const dn_cfg *cfg, const dn_section *net_section,
                                    const dn_network *net, const dn_network_params *p)
{
    if (dn_shape_fits(net->w, net->h, net->c)) return DN_OK;
    double volume = (double)net->w * net->h * net->c;
    if (p->width || p->height)
        return DN_FAIL(DN_ERR_ARG, "width=%d height=%d (given) with channels=%d: the input is too "
                       "large (%.0f values; at most %d)", net->w, net->h, net->c, volume, DN_MAX_VOLUME);
    return dn_cfg_error(cfg, net_section, DN_ERR_CFG,
                        "width=%d height=%d channels=%d: the input is too large (%.0f values; at "
                        "most %d)", net->w, net->h, net->c, volume, DN_MAX_VOLUME);
}

static dn_status build_network(dn_network *net, dn_cfg *cfg, const dn_network_params *p)
{
    dn_section *net_section = &cfg->sections[0];
    DN_TRY(check_supported(cfg));
    if (strcmp(net_section->name, "net") != 0 && strcmp(net_section->name, "network") != 0)
        return dn_cfg_error(cfg, net_section, DN_ERR_CFG,
                            "the first section must be [net] or [network]");
    DN_TRY(parse_net_section(cfg, net_section, &net->hp));
    if (p->batch < 0 || p->threads < 0 || p->width < 0 || p->height < 0)
        return DN_FAIL(DN_ERR_ARG, "batch, threads, width and height must not be negative");
    net->batch = p->batch ? p->batch : net->hp.batch / net->hp.subdivisions;
    net->w = p->width ? p->width : net->hp.width;
    net->h = p->height ? p->height : net->hp.height;
    net->c = net->hp.channels;
    DN_TRY(check_input_volume(cfg, net_section, net, p));
    net->inputs = net->w * net->h * net->c;
    net->train = p->train ? 1 : 0;
    net->weights_major = 0;
    net->weights_minor = 2;
    net->weights_revision = 0;

    net->n_layers = cfg->n_sections - 1;
    if (net->n_layers < 1)
        return dn_cfg_error(cfg, net_section, DN_ERR_CFG, "the network has no layers after [net]");
    net->layers = calloc((size_t)net->n_layers, sizeof *net->layers);
    if (!net->layers) return DN_FAIL(DN_ERR_OOM, "out of memory for %d layers", net->n_layers);
    int w = net->w, h = net->h, c = net->c;
    for (int i = 1; i < cfg->n_sections; i++) {
        DN_TRY(build_layer(net, cfg, i, w, h, c));
        dn_layer *l = &net->layers[i - 1];
        w = l->out_w;
        h = l->out_h;
        c = l->out_c;
    }
    net->output_layer = net->n_layers - 1;
    while (net->output_layer > 0 && net->layers[net->output_layer].type == DN_LAYER_COST)
        net->output_layer--;
    DN_TRY(allocate_params(net));
    DN_TRY(allocate_activations(net));
    net->threads = p->threads ? p->threads : dn_hardware_threads_internal();
    DN_TRY(dn_pool_create(net->threads, &net->pool));
    if (p->gpu >= 0) DN_TRY(dn_cuda_network_attach(net, p->gpu));
    return DN_OK;
}

DN_API void dn_network_free(dn_network *net)
{
    if (!net) return;
    if (net->gpu) dn_cuda_network_detach(net);
    if (net->layers)
        for (int i = 0; i < net->n_layers; i++)
            if (net->layers[i].ops && net->layers[i].ops->free) net->layers[i].ops->free(&net->layers[i]);
    free(net->layers);
    dn_free(net->params);
    dn_free(net->grads);
    dn_free(net->velocity);
    dn_free(net->stats);
    dn_free(net->input);
    dn_free(net->truth);
    dn_free(net->workspace);
    dn_free(net->input_delta);
    dn_pool_free(net->pool);
    free(net->hp.steps);
    free(net->hp.scales);
    free(net->warnings);
    free(net->layer_ms);
    free(net->name);
    free(net);
}

DN_API dn_status dn_network_create_from_text(const char *cfg_text, const char *name,
                                             const dn_network_params *params, dn_network **out)
{
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    *out = NULL;
    if (!cfg_text) return DN_FAIL(DN_ERR_ARG, "cfg text must not be NULL");
    dn_network_params defaults = dn_network_default_params();
    if (!params) params = &defaults;
    dn_cfg cfg;
    DN_TRY(dn_cfg_parse(cfg_text, name, &cfg));
    dn_network *net = calloc(1, sizeof *net);
    if (!net) {
        dn_cfg_free(&cfg);
        return DN_FAIL(DN_ERR_OOM, "out of memory creating a network");
    }
    dn_rng_seed(&net->rng, 0);
    net->update_replicas = 1;
    net->gpu_index = -1;
    net->name = dn_strdup(cfg.source);
    dn_status st = net->name ? build_network(net, &cfg, params) : DN_ERR_OOM;
    if (st == DN_OK) st = collect_unused_options(net, &cfg, &net->warnings);
    else if (st != DN_ERR_OOM) note_unused_options(&cfg);
    dn_cfg_free(&cfg);
    if (st != DN_OK) {
        dn_network_free(net);
        return st;
    }
    *out = net;
    return DN_OK;
}

DN_API dn_status dn_network_create(const char *cfg_path, const dn_network_params *params,
                                   dn_network **out)
{
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    *out = NULL;
    if (!cfg_path) return DN_FAIL(DN_ERR_ARG, "cfg path must not be NULL");
    char *text;
    size_t size;
    DN_TRY(dn_read_file(cfg_path, &text, &size));
    if (strlen(text) != size) {
        free(text);
        return DN_FAIL(DN_ERR_CFG, "%s: contains NUL bytes: not a text cfg file", cfg_path);
    }
    dn_status st = dn_network_create_from_text(text, cfg_path, params, out);
    free(text);
    return st;
}

DN_API const char *dn_network_warnings(const dn_network *net)
{
    return (net && net->warnings) ? net->warnings : "";
}

/* ---- forward --------------------------------------------------------------------------- */

dn_status dn_network_forward(dn_network *net, const float *input, int train, const float *truth)
{
    if (train && !net->train)
        return DN_FAIL(DN_ERR_ARG, "the network was built for inference (params.train = 0)");
    DN_TRY(dn_network_check_buffers(net));
    dn_network_ensure_params(net);
    if (net->gpu) {
        if (net->device_params_stale) {
            DN_TRY(dn_cuda_push_params(net));
            net->device_params_stale = 0;
        }
        return dn_cuda_forward(net, input, train, truth);
    }
    dn_ctx ctx = dn_network_ctx(net, train);
    ctx.input = input;
    ctx.truth = truth;
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        struct timespec start, end;
        if (net->profiling) clock_gettime(CLOCK_MONOTONIC, &start);
        if (train && l->delta) dn_fill(l->delta, (size_t)l->batch * l->out_size, 0.f);
        l->ops->forward(l, &ctx);
        ctx.input = l->output;
        if (net->profiling) {
            clock_gettime(CLOCK_MONOTONIC, &end);
            net->layer_ms[i] = (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) / 1e6;
        }
    }
    return DN_OK;
}
