/* darknet's activation functions, by name, forward and gradient.
 * Gradients are expressed in terms of the activation's OUTPUT, as darknet
 * computes them (it keeps only the output). */
#ifndef DN_ACTIVATIONS_H
#define DN_ACTIVATIONS_H

#include "pool.h"

typedef enum {
    DN_ACT_LOGISTIC,
    DN_ACT_RELU,
    DN_ACT_RELIE,
    DN_ACT_LINEAR,
    DN_ACT_RAMP,
    DN_ACT_TANH,
    DN_ACT_PLSE,
    DN_ACT_LEAKY,
    DN_ACT_ELU,
    DN_ACT_LOGGY,
    DN_ACT_STAIR,
    DN_ACT_HARDTAN,
    DN_ACT_LHTAN,
    DN_ACT_SELU,
    DN_ACT_COUNT
} dn_activation;

/* 0 and *out set when `name` is one of darknet's activations. */
int dn_activation_from_name(const char *name, dn_activation *out);
const char *dn_activation_name(dn_activation a);

float dn_activate(float x, dn_activation a);
float dn_gradient(float y, dn_activation a);

/* x[i] = f(x[i]) for n values, split over the pool for large n. */
void dn_activate_array(dn_pool *pool, float *x, size_t n, dn_activation a);
/* delta[i] *= f'(y[i]) */
void dn_gradient_array(dn_pool *pool, const float *y, size_t n, dn_activation a, float *delta);

#endif
