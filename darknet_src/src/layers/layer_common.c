/* Helpers shared by the layers: activation option, buffers, SGD update, shapes. */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "../error.h"
#include "../image.h"
#include "../layer.h"
#include "detection_layers.h"

dn_status dn_layer_read_activation(dn_layer *l, const dn_build *b, const char *def)
{
    const char *name;
    DN_TRY(dn_cfg_str(b->cfg, b->section, "activation", def, &name));
    if (!dn_activation_from_name(name, &l->activation))
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "unknown activation '%s' (darknet's are logistic, loggy, relu, elu, "
                            "selu, relie, plse, hardtan, lhtan, linear, ramp, leaky, tanh, stair)",
                            name);
    l->has_activation = 1;
    return DN_OK;
}

dn_status dn_layer_alloc_output(dn_layer *l, int train)
{
    dn_layer_free_output(l);
    size_t n = (size_t)l->batch * l->out_size;
    l->output = dn_alloc_floats(n, "layer output");
    if (!l->output) return DN_ERR_OOM;
    if (train) {
        l->delta = dn_alloc_floats(n, "layer delta");
        if (!l->delta) return DN_ERR_OOM;
    }
    return DN_OK;
}

void dn_layer_free_output(dn_layer *l)
{
    dn_free(l->output);
    dn_free(l->delta);
    l->output = l->delta = NULL;
}

dn_status dn_layer_alloc_bn(dn_layer *l, int train)
{
    dn_layer_free_bn(l);
    if (!l->batch_normalize || !train) return DN_OK;
    size_t n = (size_t)l->batch * l->out_size;
    l->bn_x = dn_alloc_floats(n, "batch-norm input cache");
    l->bn_x_norm = dn_alloc_floats(n, "batch-norm normalised cache");
    l->bn_mean = dn_alloc_floats((size_t)l->n_biases, "batch-norm mean");
    l->bn_variance = dn_alloc_floats((size_t)l->n_biases, "batch-norm variance");
    l->bn_mean_delta = dn_alloc_floats((size_t)l->n_biases, "batch-norm mean delta");
    l->bn_variance_delta = dn_alloc_floats((size_t)l->n_biases, "batch-norm variance delta");
    if (!l->bn_x || !l->bn_x_norm || !l->bn_mean || !l->bn_variance || !l->bn_mean_delta ||
        !l->bn_variance_delta)
        return DN_ERR_OOM;
    return DN_OK;
}

void dn_layer_free_bn(dn_layer *l)
{
    dn_free(l->bn_x);
    dn_free(l->bn_x_norm);
    dn_free(l->bn_mean);
    dn_free(l->bn_variance);
    dn_free(l->bn_mean_delta);
    dn_free(l->bn_variance_delta);
    l->bn_x = l->bn_x_norm = l->bn_mean = l->bn_variance = NULL;
    l->bn_mean_delta = l->bn_variance_delta = NULL;
}

/* darknet's SGD step, with the gradient kept apart from the momentum:
 *   v += g;  (weights: v += -decay * batch * w)
 *   p += lr / batch * v;  v *= momentum;  g = 0
 * Biases and BN scales get no weight decay. */
static void sgd_step(float *param, float *grad, float *velocity, size_t n, float lr_over_batch,
                     float momentum, float decay_times_batch)
{
    for (size_t i = 0; i < n; i++) {
        float v = velocity[i] + grad[i];
        if (decay_times_batch != 0.f) v += -decay_times_batch * param[i];
        param[i] += lr_over_batch * v;
        velocity[i] = v * momentum;
        grad[i] = 0.f;
    }
}

void dn_layer_sgd_update(dn_layer *l, const dn_update_args *a)
{
    if (!l->n_params) return;
    float lr = a->learning_rate * l->learning_rate_scale;
    float lr_over_batch = lr / a->batch;
    sgd_step(l->biases, l->bias_grads, l->bias_velocity, (size_t)l->n_biases, lr_over_batch,
             a->momentum, 0.f);
    if (l->scales)
        sgd_step(l->scales, l->scale_grads, l->scale_velocity, (size_t)l->n_biases, lr_over_batch,
                 a->momentum, 0.f);
    sgd_step(l->weights, l->weight_grads, l->weight_velocity, l->n_weights, lr_over_batch,
             a->momentum, a->decay * a->batch);
}

dn_status dn_read_anchors(const dn_build *b, int count, const char *unit, float **out)
{
    *out = malloc(2 * (size_t)count * sizeof(float));
    if (!*out) return DN_FAIL(DN_ERR_OOM, "out of memory for anchors");
    for (int i = 0; i < 2 * count; i++) (*out)[i] = .5f; /* darknet's default */
    float *anchors;
    int n_values;
    DN_TRY(dn_cfg_float_list(b->cfg, b->section, "anchors", &anchors, &n_values));
    if (!anchors) return DN_OK;
    if (n_values != 2 * count) {
        free(anchors);
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "anchors= has %d values, expected 2 * num = %d (width,height pairs in "
                            "%s)",
                            n_values, 2 * count, unit);
    }
    memcpy(*out, anchors, 2 * (size_t)count * sizeof(float));
    free(anchors);
    return DN_OK;
}

dn_status dn_cfg_check_augment(const dn_cfg *cfg, const dn_section *s, const char *key, float value)
{
    const char *expected = dn_augment_expected(key, value);
    if (expected) return dn_cfg_error(cfg, s, DN_ERR_CFG, "%s=%g, expected %s", key, value, expected);
    return DN_OK;
}

/* ---- shapes ---------------------------------------------------------------- */

int dn_shape_fits(int64_t w, int64_t h, int64_t c)
{
    if (w < 1 || h < 1 || c < 1) return 0;
    if (w > DN_MAX_VOLUME || h > DN_MAX_VOLUME || c > DN_MAX_VOLUME) return 0;
    /* each side < 2^31: w*h < 2^62, and when w*h fits, w*h*c < 2^62 */
    return w * h <= DN_MAX_VOLUME && w * h * c <= DN_MAX_VOLUME;
}

dn_status dn_layer_shape_error(const dn_build *b, const char *fmt, ...)
{
    char what[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    if (b) return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG, "%s", what);
    return DN_FAIL(DN_ERR_ARG, "%s", what);
}

dn_status dn_layer_set_output_shape(dn_layer *l, const dn_build *b, int64_t out_w, int64_t out_h,
                                    int64_t out_c)
{
    if (out_w < 1 || out_h < 1 || out_c < 1)
        return dn_layer_shape_error(b, "output %lldx%lldx%lld is empty (every side must be >= 1)",
                                    (long long)out_w, (long long)out_h, (long long)out_c);
    if (!dn_shape_fits(out_w, out_h, out_c))
        return dn_layer_shape_error(b, "output %lldx%lldx%lld is too large (%.0f values; at most %d)",
                                    (long long)out_w, (long long)out_h, (long long)out_c,
                                    (double)out_w * (double)out_h * (double)out_c, DN_MAX_VOLUME);
    /* the input is the previous layer's output (or the network's input),
     * both checked already */
    if (!dn_shape_fits(l->in_w, l->in_h, l->in_c))
        return DN_FAIL(DN_ERR_INTERNAL, "layer %d: input %dx%dx%d has no valid shape", l->index,
                       l->in_w, l->in_h, l->in_c);
    l->out_w = (int)out_w;
    l->out_h = (int)out_h;
    l->out_c = (int)out_c;
    l->out_size = (int)(out_w * out_h * out_c);
    l->in_size = (int)((int64_t)l->in_w * l->in_h * l->in_c);
    return DN_OK;
}

dn_status dn_layer_set_window_shape(dn_layer *l, const dn_build *b, const char *what, int64_t size,
                                    int64_t stride, int64_t padding, int64_t added, int64_t out_c)
{
    int64_t padded_w = l->in_w + added, padded_h = l->in_h + added;
    if (padded_w > INT_MAX || padded_h > INT_MAX)
        return dn_layer_shape_error(b, "padding %lld makes its %dx%d input %lldx%lld, more than %d a side",
                                    (long long)padding, l->in_w, l->in_h, (long long)padded_w,
                                    (long long)padded_h, INT_MAX);
    int64_t out_w = (padded_w - size) / stride + 1, out_h = (padded_h - size) / stride + 1;
    if (out_w < 1 || out_h < 1)
        return dn_layer_shape_error(b, "a %lldx%lld %s with stride %lld and padding %lld does not fit a "
                                    "%dx%d input (output %lldx%lld)",
                                    (long long)size, (long long)size, what, (long long)stride,
                                    (long long)padding, l->in_w, l->in_h, (long long)out_w,
                                    (long long)out_h);
    return dn_layer_set_output_shape(l, b, out_w, out_h, out_c);
}
