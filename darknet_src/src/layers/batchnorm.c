#include "batchnorm.h"

#include <math.h>
#include <string.h>

#include "../blas.h"

/* Every channel is independent in both directions: one pool task per
 * channel, each summing in darknet's order (batch outer, space inner), so
 * results do not depend on the thread count. */

typedef struct {
    dn_layer *l;
    int B, F, S;
} bn_job;

static void forward_channel(void *p, int f, int thread)
{
    (void)thread;
    bn_job *j = p;
    dn_layer *l = j->l;
    int B = j->B, F = j->F, S = j->S;
    float sum = 0;
    for (int b = 0; b < B; b++) {
        const float *row = l->output + ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) sum += row[s];
    }
    float mean = sum * (1.f / (B * S));
    float squares = 0;
    for (int b = 0; b < B; b++) {
        const float *row = l->output + ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) {
            float d = row[s] - mean;
            squares += d * d;
        }
    }
    float variance = squares * (1.f / (B * S - 1)); /* unbiased, as darknet */
    l->bn_mean[f] = mean;
    l->bn_variance[f] = variance;
    l->rolling_mean[f] = .99f * l->rolling_mean[f] + .01f * mean;
    l->rolling_variance[f] = .99f * l->rolling_variance[f] + .01f * variance;
    /* Quirk (darknet): the forward pass divides by sqrt(var) + 1e-6, while
     * the backward pass differentiates sqrt(var + 1e-5). */
    float denom = sqrtf(variance) + .000001f;
    float scale = l->scales[f], beta = l->biases[f];
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        float *out = l->output + off, *x = l->bn_x + off, *x_norm = l->bn_x_norm + off;
        for (int s = 0; s < S; s++) {
            x[s] = out[s];
            float normed = (out[s] - mean) / denom;
            x_norm[s] = normed;
            out[s] = normed * scale + beta;
        }
    }
}

void dn_batchnorm_forward(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    int F = l->n_biases, B = l->batch;
    if (!ctx->train) {
        dn_batchnorm_inference(ctx->pool, l->output, l->rolling_mean, l->rolling_variance,
                               l->scales, l->biases, B, F, spatial);
        return;
    }
    bn_job j = {l, B, F, spatial};
    if ((size_t)B * F * spatial < 32768)
        for (int f = 0; f < F; f++) forward_channel(&j, f, 0);
    else
        dn_pool_run(ctx->pool, F, forward_channel, &j);
}

/* ---- backward -------------------------------------------------------------------
 * darknet's: bias and scale gradients, delta *= scale, then the mean and
 * variance terms (with darknet's 2 (x - mean) / N for the variance although
 * the forward divided by N - 1: reproduced). */

static void backward_channel(void *p, int f, int thread)
{
    (void)thread;
    bn_job *j = p;
    dn_layer *l = j->l;
    int B = j->B, F = j->F, S = j->S;
    float *delta = l->delta;
    float bias_sum = 0, scale_sum = 0;
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) bias_sum += delta[off + s];
    }
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) scale_sum += delta[off + s] * l->bn_x_norm[off + s];
    }
    l->bias_grads[f] += bias_sum;
    l->scale_grads[f] += scale_sum;
    float scale = l->scales[f];
    for (int b = 0; b < B; b++) {
        float *d = delta + ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) d[s] *= scale;
    }
    float mean = l->bn_mean[f], variance = l->bn_variance[f];
    float inv_std = 1.f / sqrtf(variance + .00001f);
    float mean_delta = 0, variance_delta = 0;
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) mean_delta += delta[off + s];
    }
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++) variance_delta += delta[off + s] * (l->bn_x[off + s] - mean);
    }
    mean_delta *= -inv_std;
    variance_delta *= -.5f * powf(variance + .00001f, -1.5f);
    l->bn_mean_delta[f] = mean_delta;
    l->bn_variance_delta[f] = variance_delta;
    float count = (float)B * S;
    for (int b = 0; b < B; b++) {
        size_t off = ((size_t)b * F + f) * S;
        for (int s = 0; s < S; s++)
            delta[off + s] = delta[off + s] * inv_std +
                             variance_delta * 2.f * (l->bn_x[off + s] - mean) / count +
                             mean_delta / count;
    }
}

void dn_batchnorm_backward(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    int F = l->n_biases, B = l->batch;
    bn_job j = {l, B, F, spatial};
    if ((size_t)B * F * spatial < 32768)
        for (int f = 0; f < F; f++) backward_channel(&j, f, 0);
    else
        dn_pool_run(ctx->pool, F, backward_channel, &j);
}
