#include "blas.h"

#include <math.h>
#include <string.h>

#include "activation_formulas.h"

void dn_fill(float *x, size_t n, float value)
{
    if (value == 0.f) {
        memset(x, 0, n * sizeof *x);
        return;
    }
    for (size_t i = 0; i < n; i++) x[i] = value;
}

void dn_copy(float *dst, const float *src, size_t n)
{
    if (dst != src) memmove(dst, src, n * sizeof *dst);
}

void dn_axpy(float *y, float alpha, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

void dn_scale(float *x, size_t n, float alpha)
{
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

float dn_sum(const float *x, size_t n)
{
    float s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

void dn_add_bias(float *out, const float *bias, int B, int C, int S)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *o = out + ((size_t)b * C + c) * S;
            float v = bias[c];
            for (int s = 0; s < S; s++) o[s] += v;
        }
}

void dn_scale_bias(float *out, const float *scale, int B, int C, int S)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *o = out + ((size_t)b * C + c) * S;
            float v = scale[c];
            for (int s = 0; s < S; s++) o[s] *= v;
        }
}

void dn_backward_bias(float *bias_grad, const float *delta, int B, int C, int S)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) bias_grad[c] += dn_sum(delta + ((size_t)b * C + c) * S, (size_t)S);
}

typedef struct {
    float *x;
    const float *mean, *variance, *scale, *beta;
    int B, C, S;
} bn_job;

/* Per-channel factors of the inference batch norm folded into one multiply
 * and add: x*a + b with a = scale / (sqrt(var) + 1e-6), b = beta - mean*a
 * (computed in double; outputs agree with darknet's three passes to ~1e-7). */
void dn_batchnorm_factors(const float *mean, const float *variance, const float *scale,
                          const float *beta, int C, float *a, float *b)
{
    for (int c = 0; c < C; c++) {
        double factor = (double)scale[c] / (sqrt((double)variance[c]) + .000001f);
        a[c] = (float)factor;
        b[c] = (float)((double)beta[c] - (double)mean[c] * factor);
    }
}

static void bn_inference_task(void *p, int task, int thread)
{
    (void)thread;
    bn_job *j = p;
    int c = task % j->C;
    float *x = j->x + (size_t)task * j->S;
    double factor = (double)j->scale[c] / (sqrt((double)j->variance[c]) + .000001f);
    float a = (float)factor;
    float b = (float)((double)j->beta[c] - (double)j->mean[c] * factor);
    for (int s = 0; s < j->S; s++) x[s] = x[s] * a + b;
}

void dn_batchnorm_inference(dn_pool *pool, float *x, const float *mean, const float *variance,
                            const float *scale, const float *beta, int B, int C, int S)
{
    bn_job j = {x, mean, variance, scale, beta, B, C, S};
    int tasks = B * C;
    if ((size_t)tasks * S < 32768) {
        for (int t = 0; t < tasks; t++) bn_inference_task(&j, t, 0);
        return;
    }
    dn_pool_run(pool, tasks, bn_inference_task, &j);
}

void dn_softmax(const float *in, int n, float temp, int stride, float *out)
{
    dn_softmax_formula(in, n, temp, stride, out);
}

void dn_softmax_blocks(const float *in, int n, int batch, int batch_offset, int groups,
                       int group_offset, int stride, float temp, float *out)
{
    for (int b = 0; b < batch; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = (size_t)b * batch_offset + (size_t)g * group_offset;
            dn_softmax(in + off, n, temp, stride, out + off);
        }
}
