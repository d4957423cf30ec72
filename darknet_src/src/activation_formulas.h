/* darknet's activation functions, their gradients and its softmax, written
 * once for the CPU (activations.c, blas.c) and the GPU (blas_kernels.cu).  Gradients take the
 * activation's OUTPUT, as darknet keeps only the output.  On the CPU, exp()
 * runs in double where darknet calls it on a float (its promotion), so the
 * outputs agree to the last bits; on the GPU, expf. */
#ifndef DN_ACTIVATION_FORMULAS_H
#define DN_ACTIVATION_FORMULAS_H

#include <float.h>
#include <math.h>

#include "activations.h"
#include "hd.h"

#if defined(__CUDA_ARCH__)
#define DN_EXP(x) expf(x)
#else
#define DN_EXP(x) exp((double)(x))
#endif

static inline DN_HD float dn_activate_formula(float x, int a)
{
    switch (a) {
    case DN_ACT_LOGISTIC: return (float)(1. / (1. + DN_EXP(-x)));
    case DN_ACT_RELU: return x * (x > 0);
    case DN_ACT_RELIE: return (x > 0) ? x : .01f * x;
    case DN_ACT_LINEAR: return x;
    case DN_ACT_RAMP: return x * (x > 0) + .1f * x;
    case DN_ACT_TANH: return (float)((DN_EXP(2 * x) - 1) / (DN_EXP(2 * x) + 1));
    case DN_ACT_PLSE:
        if (x < -4) return .01f * (x + 4);
        if (x > 4) return .01f * (x - 4) + 1;
        return .125f * x + .5f;
    case DN_ACT_LEAKY: return (x > 0) ? x : .1f * x;
    case DN_ACT_ELU: return (float)((x >= 0) * x + (x < 0) * (DN_EXP(x) - 1));
    case DN_ACT_LOGGY: return (float)(2. / (1. + DN_EXP(-x)) - 1);
    case DN_ACT_STAIR: {
        int n = (int)floorf(x);
        if (n % 2 == 0) return floorf(x / 2.f);
        return (x - n) + floorf(x / 2.f);
    }
    case DN_ACT_HARDTAN: return x < -1 ? -1.f : (x > 1 ? 1.f : x);
    case DN_ACT_LHTAN:
        if (x < 0) return .001f * x;
        if (x > 1) return .001f * (x - 1) + 1;
        return x;
    case DN_ACT_SELU:
        return (float)((x >= 0) * 1.0507f * x + (x < 0) * 1.0507f * 1.6732f * (DN_EXP(x) - 1));
    default: return x;
    }
}

static inline DN_HD float dn_gradient_formula(float y, int a)
{
    switch (a) {
    case DN_ACT_LOGISTIC: return (1 - y) * y;
    case DN_ACT_RELU: return (float)(y > 0);
    case DN_ACT_RELIE: return (y > 0) ? 1.f : .01f;
    case DN_ACT_LINEAR: return 1.f;
    case DN_ACT_RAMP: return (float)(y > 0) + .1f;
    case DN_ACT_TANH: return 1 - y * y;
    case DN_ACT_PLSE: return (y < 0 || y > 1) ? .01f : .125f;
    case DN_ACT_LEAKY: return (y > 0) ? 1.f : .1f;
    case DN_ACT_ELU: return (float)(y >= 0) + (float)(y < 0) * (y + 1);
    case DN_ACT_LOGGY: {
        float z = (y + 1) / 2;
        return 2 * (1 - z) * z;
    }
    case DN_ACT_STAIR: return floorf(y) == y ? 0.f : 1.f;
    case DN_ACT_HARDTAN: return (y > -1 && y < 1) ? 1.f : 0.f;
    case DN_ACT_LHTAN: return (y > 0 && y < 1) ? 1.f : .001f;
    case DN_ACT_SELU: return (y >= 0) * 1.0507f + (y < 0) * (y + 1.0507f * 1.6732f);
    default: return 1.f;
    }
}

/* darknet's softmax of n values `stride` apart, at temperature temp (its
 * softmax(): largest from -FLT_MAX, expf). */
static inline DN_HD void dn_softmax_formula(const float *in, int n, float temp, int stride, float *out)
{
    float largest = -FLT_MAX;
    for (int i = 0; i < n; i++)
        if (in[i * stride] > largest) largest = in[i * stride];
    float sum = 0;
    for (int i = 0; i < n; i++) {
        float e = expf(in[i * stride] / temp - largest / temp);
        sum += e;
        out[i * stride] = e;
    }
    for (int i = 0; i < n; i++) out[i * stride] /= sum;
}

#endif
