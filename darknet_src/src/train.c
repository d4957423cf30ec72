/* Training: darknet's forward/backward, SGD update and learning-rate schedule.
 *
 * darknet's train_network_datum: seen += batch; forward in training mode;
 * backward from the last layer down (stopping at stopbackward); every
 * `subdivisions` forwards, update_network with the rate of the current
 * batch number (seen / (batch * subdivisions)). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "cuda.h"
#include "error.h"
#include "network.h"
#include "layers/detection_loss.h"

/* ---- schedule --------------------------------------------------------------- */

DN_API int64_t dn_network_current_batch(const dn_network *net)
{
    if (!net) return 0;
    return net->seen / ((int64_t)net->batch * net->hp.subdivisions * net->update_replicas);
}

DN_API float dn_network_learning_rate(dn_network *net, int64_t batch_num)
{
    if (!net) return 0;
    const dn_net_hparams *hp = &net->hp;
    float lr = hp->learning_rate;
    if (batch_num < hp->burn_in) return lr * powf((float)batch_num / hp->burn_in, hp->power);
    switch (hp->policy) {
    case DN_POLICY_CONSTANT: return lr;
    case DN_POLICY_STEP: return lr * powf(hp->scale, (float)(batch_num / hp->step));
    case DN_POLICY_STEPS: {
        float rate = lr;
        for (int i = 0; i < hp->n_steps; i++) {
            if (hp->steps[i] > batch_num) return rate;
            rate *= hp->scales[i];
        }
        return rate;
    }
    case DN_POLICY_EXP: return lr * powf(hp->gamma, (float)batch_num);
    case DN_POLICY_POLY:
        return hp->max_batches ? lr * powf(1 - (float)batch_num / hp->max_batches, hp->power) : lr;
    case DN_POLICY_RANDOM: return lr * powf(dn_rng_uniform(&net->rng), hp->power);
    case DN_POLICY_SIG: return lr * (float)(1. / (1. + exp(hp->gamma * (batch_num - hp->step))));
    }
    return lr;
}

/* ---- loss and finiteness --------------------------------------------------------- */

static int has_loss(const dn_layer *l)
{
    return l->type == DN_LAYER_REGION || l->type == DN_LAYER_YOLO || l->type == DN_LAYER_COST ||
           (l->type == DN_LAYER_SOFTMAX && !l->u.softmax.noloss);
}

/* darknet's calc_network_cost: the mean of the loss layers' costs */
static float network_cost(const dn_network *net)
{
    float sum = 0;
    int count = 0;
    for (int i = 0; i < net->n_layers; i++)
        if (has_loss(&net->layers[i])) {
            sum += net->layers[i].cost;
            count++;
        }
    return count ? sum / count : 0;
}

static int all_finite(const float *x, size_t n)
{
    /* x - x is 0 for finite values, NaN otherwise */
    float acc = 0;
    for (size_t i = 0; i < n; i++) acc += x[i] - x[i];
    return acc == 0;
}

/* The iteration the pass now running belongs to (1 for the first step's
 * passes): `seen` already counts this pass's images, and with subdivisions
 * or replicas dn_network_current_batch stays at the previous iteration
 * until the last pass of the step. */
static int64_t iteration_of_pass(const dn_network *net)
{
    int64_t per_step = (int64_t)net->batch * net->hp.subdivisions * net->update_replicas;
    return net->seen > 0 ? (net->seen - 1) / per_step + 1 : 0;
}

static dn_status non_finite_error(const dn_network *net, const char *what, float value)
{
    int64_t iteration = iteration_of_pass(net);
    char shown[32];
    if (isnan(value))
        snprintf(shown, sizeof shown, "NaN"); /* not printf's "-nan" */
    else
        snprintf(shown, sizeof shown, "%g", (double)value);
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (!all_finite(l->output, (size_t)l->batch * l->out_size))
            return DN_FAIL(DN_ERR_NUMERIC,
                           "%s is %s at iteration %lld: the first non-finite values are in the "
                           "output of layer %d ([%s] at cfg line %d); lower the learning rate or "
                           "check the data",
                           what, shown, (long long)iteration, i, l->ops->name, l->cfg_line);
    }
    return DN_FAIL(DN_ERR_NUMERIC, "%s is %s at iteration %lld (layer outputs are finite: the "
                   "loss layer's targets are not; check the labels)", what, shown,
                   (long long)iteration);
}

/* ---- backward -------------------------------------------------------------------- */

static void network_backward(dn_network *net, const float *input)
{
    dn_ctx ctx = dn_network_ctx(net, 1);
    /* layers ADD into their input's delta: the input's, like every layer's
     * (zeroed by the training forward), must start from zero on each pass,
     * or it would sum the gradients of all the passes so far */
    if (net->input_delta) dn_fill(net->input_delta, (size_t)net->batch * net->inputs, 0.f);
    for (int i = net->n_layers - 1; i >= 0; i--) {
        dn_layer *l = &net->layers[i];
        if (l->stopbackward) break;
        if (i == 0) {
            ctx.input = input;
            ctx.input_delta = net->input_delta;
        } else {
            ctx.input = net->layers[i - 1].output;
            ctx.input_delta = net->layers[i - 1].delta;
        }
        struct timespec start, end;
        if (net->profiling) clock_gettime(CLOCK_MONOTONIC, &start);
        if (l->ops->backward) l->ops->backward(l, &ctx);
        if (net->profiling) {
            clock_gettime(CLOCK_MONOTONIC, &end);
            net->layer_ms[net->n_layers + i] =
                (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) / 1e6;
        }
    }
}

static dn_status check_training(const dn_network *net, const float *input, const float *truth)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (!net->train)
        return DN_FAIL(DN_ERR_ARG, "the network was built for inference: create it with "
                       "params.train = 1 to train");
    if (!input) return DN_FAIL(DN_ERR_ARG, "input must not be NULL");
    if (net->truth_size && !truth)
        return DN_FAIL(DN_ERR_ARG, "this network's loss layers need truth");
    return DN_OK;
}

/* The boxes a [region] / [yolo] layer reads from each image's truth (x == 0
 * ends the list): a centre at x > 0, y >= 0 (past 1 is clamped into the last
 * cell) and a class of the layer's.  Anything else would make the loss write
 * outside its anchor-cell, into another image's entries or past the buffer
 * (darknet does not check; its label loader keeps boxes in the image). */
static dn_status check_boxes(const dn_network *net, const float *truth)
{
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        int rows, classes;
        if (l->type == DN_LAYER_REGION) {
            rows = DN_REGION_MAX_TRUTHS;
            classes = l->u.region.classes;
        } else if (l->type == DN_LAYER_YOLO) {
            rows = l->u.yolo.max_boxes;
            classes = l->u.yolo.classes;
        } else {
            continue;
        }
        if (rows > net->truth_size / 5) rows = net->truth_size / 5;
        for (int b = 0; b < net->batch; b++)
            for (int t = 0; t < rows; t++) {
                const float *box = truth + (size_t)b * net->truth_size + 5 * (size_t)t;
                if (box[0] == 0) break;
                if (box[0] > 0 && box[1] >= 0 && isfinite(box[0]) && isfinite(box[1]) && box[4] >= 0 &&
                    box[4] < classes)
                    continue;
                return DN_FAIL(DN_ERR_DATA, "truth of image %d, box %d: x=%g y=%g class=%g; layer %d ([%s]) "
                               "needs a centre inside the image and a class in 0..%d",
                               b, t, box[0], box[1], box[4], i, l->ops->name, classes - 1);
            }
    }
    return DN_OK;
}

DN_API dn_status dn_network_forward_backward(dn_network *net, const float *input,
                                             const float *truth, float *loss)
{
    DN_TRY(check_training(net, input, truth));
    if (truth) DN_TRY(check_boxes(net, truth));
    net->seen = dn_seen_add(net->seen, net->batch); /* darknet counts the images before the forward */
    DN_TRY(dn_network_forward(net, input, 1, truth));
    float cost = network_cost(net);
    if (!isfinite(cost)) {
        if (net->gpu)
            for (int i = 0; i < net->n_layers; i++) DN_TRY(dn_cuda_pull_output(net, i));
        return non_finite_error(net, "the loss", cost);
    }
    if (net->gpu)
        DN_TRY(dn_cuda_backward(net));
    else
        network_backward(net, input);
    if (loss) *loss = cost;
    return DN_OK;
}

/* ---- update ---------------------------------------------------------------------- */

DN_API dn_status dn_network_update(dn_network *net, float *learning_rate)
{
    if (!net || !net->train) return DN_FAIL(DN_ERR_ARG, "a network built for training is needed");
    dn_update_args args;
    args.batch = net->batch * net->hp.subdivisions * net->update_replicas;
    args.learning_rate = dn_network_learning_rate(net, dn_network_current_batch(net));
    args.momentum = net->hp.momentum;
    args.decay = net->hp.decay;
    if (learning_rate) *learning_rate = args.learning_rate;
    if (net->gpu) {
        int finite = 1;
        DN_TRY(dn_cuda_update(net, &args, &finite));
        net->host_params_stale = 1;
        if (finite) return DN_OK;
        DN_TRY(dn_network_sync_host_params(net)); /* to name the layer */
    } else {
        for (int i = 0; i < net->n_layers; i++) {
            dn_layer *l = &net->layers[i];
            if (l->ops->update) l->ops->update(l, &args);
        }
        dn_network_params_changed(net);
    }
    if (!all_finite(net->params, net->n_params)) {
        for (int i = 0; i < net->n_layers; i++) {
            const dn_layer *l = &net->layers[i];
            if (l->n_params && !all_finite(l->biases, l->n_params))
                return DN_FAIL(DN_ERR_NUMERIC,
                               "the weights of layer %d ([%s] at cfg line %d) became non-finite at "
                               "iteration %lld (learning rate %g): training diverged",
                               i, l->ops->name, l->cfg_line,
                               (long long)dn_network_current_batch(net), args.learning_rate);
        }
    }
    return DN_OK;
}

DN_API dn_status dn_network_zero_grads(dn_network *net)
{
    if (!net || !net->grads) return DN_FAIL(DN_ERR_ARG, "a network built for training is needed");
    dn_fill(net->grads, net->n_params, 0.f);
    if (net->gpu) DN_TRY(dn_cuda_zero_grads(net));
    return DN_OK;
}

/* ---- a whole step -------------------------------------------------------------------- */

static void accumulate_stats(const dn_network *net, dn_train_result *out)
{
    int k = 0;
    for (int i = 0; i < net->n_layers && k < 8; i++) {
        const dn_layer *l = &net->layers[i];
        if (l->type != DN_LAYER_REGION && l->type != DN_LAYER_YOLO) continue;
        dn_layer_stats *s = &out->layers[k++];
        const dn_detection_stats *d = &l->stats;
        s->layer = i;
        /* weights: truths matched (for the per-truth averages), 1 for no-obj */
        s->avg_iou += d->avg_iou * d->count;
        s->avg_class += d->avg_class * d->count;
        s->avg_obj += d->avg_obj * d->count;
        s->recall += d->recall * d->count;
        s->recall75 += d->recall75 * d->count;
        s->avg_noobj += d->avg_noobj;
        s->count += d->count;
    }
    out->n_layers = k;
}

static void finish_stats(dn_train_result *out, int passes)
{
    for (int k = 0; k < out->n_layers; k++) {
        dn_layer_stats *s = &out->layers[k];
        float n = s->count ? (float)s->count : 1.f;
        s->avg_iou /= n;
        s->avg_class /= n;
        s->avg_obj /= n;
        s->recall /= n;
        s->recall75 /= n;
        s->avg_noobj /= passes;
    }
}

dn_status dn_network_train_pass(dn_network *net, const float *input, const float *truth, int pass,
                                float *loss)
{
    size_t pass_inputs = (size_t)net->batch * net->inputs;
    const float *in = input + pass * pass_inputs;
    const float *tr = truth ? truth + (size_t)pass * net->batch * net->truth_size : NULL;
    /* on a GPU, the next pass's images upload while this one computes */
    net->next_input = pass + 1 < net->hp.subdivisions ? in + pass_inputs : NULL;
    dn_status st = dn_network_forward_backward(net, in, tr, loss);
    net->next_input = NULL; /* for this call only */
    if (st != DN_OK && net->gpu) dn_cuda_cancel_prefetch(net);
    return st;
}

DN_API dn_status dn_network_train_step(dn_network *net, const float *input, const float *truth,
                                       dn_train_result *out)
{
    DN_TRY(check_training(net, input, truth));
    dn_train_result result;
    memset(&result, 0, sizeof result);
    int passes = net->hp.subdivisions;
    float loss_sum = 0;
    for (int s = 0; s < passes; s++) {
        float loss;
        DN_TRY(dn_network_train_pass(net, input, truth, s, &loss));
        loss_sum += loss;
        accumulate_stats(net, &result);
    }
    finish_stats(&result, passes);
    DN_TRY(dn_network_update(net, &result.learning_rate));
    /* darknet's train_network: the costs summed over the passes, per image */
    result.loss = loss_sum / ((float)passes * net->batch);
    result.batch_num = dn_network_current_batch(net);
    result.seen = net->seen;
    result.updated = 1;
    if (out) *out = result;
    return DN_OK;
}

/* ---- information and views -------------------------------------------------------------- */

DN_API int dn_network_truth_size(const dn_network *net) { return net ? net->truth_size : 0; }

DN_API int dn_network_images_per_step(const dn_network *net)
{
    return net ? net->batch * net->hp.subdivisions : 0;
}

static const dn_layer *last_detection_layer(const dn_network *net)
{
    for (int i = net->n_layers - 1; i >= 0; i--)
        if (net->layers[i].type == DN_LAYER_REGION || net->layers[i].type == DN_LAYER_YOLO)
            return &net->layers[i];
    return NULL;
}

DN_API dn_status dn_network_get_train_params(const dn_network *net, dn_train_params *out)
{
    if (!net || !out) return DN_FAIL(DN_ERR_ARG, "network and out must not be NULL");
    memset(out, 0, sizeof *out);
    out->learning_rate = net->hp.learning_rate;
    out->momentum = net->hp.momentum;
    out->decay = net->hp.decay;
    out->batch = net->hp.batch;
    out->subdivisions = net->hp.subdivisions;
    out->max_batches = net->hp.max_batches;
    out->burn_in = net->hp.burn_in;
    out->power = net->hp.power;
    out->hue = net->hp.hue;
    out->saturation = net->hp.saturation;
    out->exposure = net->hp.exposure;
    out->angle = net->hp.angle;
    const dn_layer *l = last_detection_layer(net);
    if (l && l->type == DN_LAYER_REGION) {
        out->jitter = l->u.region.jitter;
        out->random = l->u.region.random;
        out->max_boxes = l->truth_size / 5;
    } else if (l) {
        out->jitter = l->u.yolo.jitter;
        out->random = l->u.yolo.random;
        out->max_boxes = l->u.yolo.max_boxes;
    }
    return DN_OK;
}

DN_API dn_status dn_network_set_max_batches(dn_network *net, int max_batches)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (max_batches < 0) return DN_FAIL(DN_ERR_ARG, "max_batches must be >= 0");
    net->hp.max_batches = max_batches;
    return DN_OK;
}

DN_API dn_status dn_network_layer_grad(dn_network *net, int index, dn_param_kind kind,
                                       float **data, size_t *n)
{
    if (!net || !net->grads) return DN_FAIL(DN_ERR_ARG, "a network built for training is needed");
    if (index < 0 || index >= net->n_layers)
        return DN_FAIL(DN_ERR_ARG, "layer index %d out of range", index);
    if (!data || !n) return DN_FAIL(DN_ERR_ARG, "data and n must not be NULL");
    if (net->gpu) DN_TRY(dn_cuda_pull_training_state(net));
    dn_layer *l = &net->layers[index];
    *data = NULL;
    *n = 0;
    switch (kind) {
    case DN_PARAM_BIASES: *data = l->bias_grads; *n = l->bias_grads ? (size_t)l->n_biases : 0; break;
    case DN_PARAM_SCALES: *data = l->scale_grads; *n = l->scale_grads ? (size_t)l->n_biases : 0; break;
    case DN_PARAM_WEIGHTS: *data = l->weight_grads; *n = l->weight_grads ? l->n_weights : 0; break;
    default: break; /* rolling statistics have no gradient */
    }
    return DN_OK;
}

DN_API dn_status dn_network_layer_delta(const dn_network *net, int index, const float **data,
                                        size_t *n)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    if (index < 0 || index >= net->n_layers)
        return DN_FAIL(DN_ERR_ARG, "layer index %d out of range", index);
    if (!data || !n) return DN_FAIL(DN_ERR_ARG, "data and n must not be NULL");
    DN_TRY(dn_network_check_buffers(net));
    if (net->gpu) DN_TRY(dn_cuda_pull_training_state((dn_network *)net));
    const dn_layer *l = &net->layers[index];
    *data = l->delta;
    *n = l->delta ? (size_t)l->batch * l->out_size : 0;
    return DN_OK;
}

DN_API dn_status dn_network_input_delta(dn_network *net, const float **data, size_t *n)
{
    if (!net || !net->train) return DN_FAIL(DN_ERR_ARG, "a network built for training is needed");
    if (!data || !n) return DN_FAIL(DN_ERR_ARG, "data and n must not be NULL");
    DN_TRY(dn_network_check_buffers(net));
    if (!net->input_delta) {
        net->input_delta = dn_alloc_floats((size_t)net->batch * net->inputs, "input delta");
        if (!net->input_delta) return DN_ERR_OOM;
        if (net->gpu) { /* adds the device copy */
            net->buffers_lost = dn_cuda_network_realloc(net);
            DN_TRY(net->buffers_lost);
        }
    } else if (net->gpu) {
        DN_TRY(dn_cuda_pull_training_state(net));
    }
    *data = net->input_delta;
    *n = (size_t)net->batch * net->inputs;
    return DN_OK;
}

DN_API dn_status dn_network_seed(dn_network *net, uint64_t seed)
{
    if (!net) return DN_FAIL(DN_ERR_ARG, "network must not be NULL");
    dn_rng_seed(&net->rng, seed);
    return DN_OK;
}
