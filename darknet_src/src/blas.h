/* Vector helpers on the CPU (darknet's blas.c operations, our own code).
 * Shape letters: B batch, C channels (filters), S spatial size (h*w). */
#ifndef DN_BLAS_H
#define DN_BLAS_H

#include <stddef.h>

#include "pool.h"

void dn_fill(float *x, size_t n, float value);
void dn_copy(float *dst, const float *src, size_t n);
/* y += alpha * x */
void dn_axpy(float *y, float alpha, const float *x, size_t n);
void dn_scale(float *x, size_t n, float alpha);
float dn_sum(const float *x, size_t n);

/* out[b][c][s] += bias[c] */
void dn_add_bias(float *out, const float *bias, int B, int C, int S);
/* out[b][c][s] *= scale[c] */
void dn_scale_bias(float *out, const float *scale, int B, int C, int S);
/* bias_grad[c] += sum over b, s of delta[b][c][s] */
void dn_backward_bias(float *bias_grad, const float *delta, int B, int C, int S);

/* Batch norm at inference, darknet's CPU formula (quirk: epsilon OUTSIDE the
 * square root, 1e-6):  x = (x - mean) / (sqrt(var) + .000001) * scale + beta */
void dn_batchnorm_inference(dn_pool *pool, float *x, const float *mean, const float *variance,
                            const float *scale, const float *beta, int B, int C, int S);

/* The same as per-channel x*a + b factors (for fused epilogues). */
void dn_batchnorm_factors(const float *mean, const float *variance, const float *scale,
                          const float *beta, int C, float *a, float *b);

/* darknet's softmax over n values `stride` apart, with temperature. */
void dn_softmax(const float *in, int n, float temp, int stride, float *out);
/* darknet's softmax_cpu: for each of `batch` blocks (batch_offset apart) and
 * `groups` groups (group_offset apart) a softmax over n values. */
void dn_softmax_blocks(const float *in, int n, int batch, int batch_offset, int groups,
                       int group_offset, int stride, float temp, float *out);

#endif
