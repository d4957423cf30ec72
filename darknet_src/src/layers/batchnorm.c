#include "batchnorm.h"

#include <math.h>
#include <string.h>

#include "../blas.h"

/* ---- statistics (darknet's accumulation order: batch outer, space inner) -- */

static void batch_mean(const float *x, int B, int F, int S, float *mean)
{
    float scale = 1.f / (B * S);
    for (int f = 0; f < F; f++) {
        float sum = 0;
        for (int b = 0; b < B; b++) {
            const float *row = x + ((size_t)b * F + f) * S;
            for (int s = 0; s < S; s++) sum += row[s];
        }
        mean[f] = sum * scale;
    }
}

/* unbiased: divides by B*S - 1 (as darknet) */
static void batch_variance(const float *x, const float *mean, int B, int F, int S, float *variance)
{
    float scale = 1.f / (B * S - 1);
    for (int f = 0; f < F; f++) {
        float sum = 0;
        for (int b = 0; b < B; b++) {
            const float *row = x + ((size_t)b * F + f) * S;
            for (int s = 0; s < S; s++) {
                float d = row[s] - mean[f];
                sum += d * d;
            }
        }
        variance[f] = sum * scale;
    }
}

/* Quirk (darknet): the forward pass divides by sqrt(var) + 1e-6, while the
 * backward pass below differentiates sqrt(var + 1e-5). */
static void normalize(float *x, const float *mean, const float *variance, int B, int F, int S)
{
    for (int b = 0; b < B; b++)
        for (int f = 0; f < F; f++) {
            float *row = x + ((size_t)b * F + f) * S;
            float denom = sqrtf(variance[f]) + .000001f;
            for (int s = 0; s < S; s++) row[s] = (row[s] - mean[f]) / denom;
        }
}

void dn_batchnorm_forward(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    int F = l->n_biases, B = l->batch;
    size_t n = (size_t)B * F * spatial;
    if (!ctx->train) {
        dn_batchnorm_inference(ctx->pool, l->output, l->rolling_mean, l->rolling_variance,
                               l->scales, l->biases, B, F, spatial);
        return;
    }
    dn_copy(l->bn_x, l->output, n);
    batch_mean(l->output, B, F, spatial, l->bn_mean);
    batch_variance(l->output, l->bn_mean, B, F, spatial, l->bn_variance);
    for (int f = 0; f < F; f++) {
        l->rolling_mean[f] = .99f * l->rolling_mean[f] + .01f * l->bn_mean[f];
        l->rolling_variance[f] = .99f * l->rolling_variance[f] + .01f * l->bn_variance[f];
    }
    normalize(l->output, l->bn_mean, l->bn_variance, B, F, spatial);
    dn_copy(l->bn_x_norm, l->output, n);
    dn_scale_bias(l->output, l->scales, B, F, spatial);
    dn_add_bias(l->output, l->biases, B, F, spatial);
}

/* ---- backward -------------------------------------------------------------- */

void dn_batchnorm_backward(dn_layer *l, const dn_ctx *ctx, int spatial)
{
    (void)ctx;
    int F = l->n_biases, B = l->batch;
    float *delta = l->delta;
    dn_backward_bias(l->bias_grads, delta, B, F, spatial);
    for (int f = 0; f < F; f++) {
        float sum = 0;
        for (int b = 0; b < B; b++) {
            size_t off = ((size_t)b * F + f) * spatial;
            for (int s = 0; s < spatial; s++) sum += delta[off + s] * l->bn_x_norm[off + s];
        }
        l->scale_grads[f] += sum;
    }
    dn_scale_bias(delta, l->scales, B, F, spatial);

    for (int f = 0; f < F; f++) {
        float inv_std = 1.f / sqrtf(l->bn_variance[f] + .00001f);
        float mean_delta = 0, variance_delta = 0;
        for (int b = 0; b < B; b++) {
            size_t off = ((size_t)b * F + f) * spatial;
            for (int s = 0; s < spatial; s++) {
                mean_delta += delta[off + s];
                variance_delta += delta[off + s] * (l->bn_x[off + s] - l->bn_mean[f]);
            }
        }
        mean_delta *= -inv_std;
        variance_delta *= -.5f * powf(l->bn_variance[f] + .00001f, -1.5f);
        l->bn_mean_delta[f] = mean_delta;
        l->bn_variance_delta[f] = variance_delta;
        float count = (float)B * spatial;
        for (int b = 0; b < B; b++) {
            size_t off = ((size_t)b * F + f) * spatial;
            for (int s = 0; s < spatial; s++)
                delta[off + s] = delta[off + s] * inv_std +
                                 variance_delta * 2.f * (l->bn_x[off + s] - l->bn_mean[f]) / count +
                                 mean_delta / count;
        }
    }
}
