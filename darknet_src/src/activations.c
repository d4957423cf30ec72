#include "activations.h"

#include "activation_formulas.h"

#include <math.h>
#include <string.h>

static const char *const activation_names[DN_ACT_COUNT] = {
    [DN_ACT_LOGISTIC] = "logistic", [DN_ACT_RELU] = "relu",   [DN_ACT_RELIE] = "relie",
    [DN_ACT_LINEAR] = "linear",     [DN_ACT_RAMP] = "ramp",   [DN_ACT_TANH] = "tanh",
    [DN_ACT_PLSE] = "plse",         [DN_ACT_LEAKY] = "leaky", [DN_ACT_ELU] = "elu",
    [DN_ACT_LOGGY] = "loggy",       [DN_ACT_STAIR] = "stair", [DN_ACT_HARDTAN] = "hardtan",
    [DN_ACT_LHTAN] = "lhtan",       [DN_ACT_SELU] = "selu",
};

int dn_activation_from_name(const char *name, dn_activation *out)
{
    for (int i = 0; i < DN_ACT_COUNT; i++)
        if (strcmp(name, activation_names[i]) == 0) {
            *out = (dn_activation)i;
            return 1;
        }
    return 0;
}

const char *dn_activation_name(dn_activation a)
{
    return (a >= 0 && a < DN_ACT_COUNT) ? activation_names[a] : "?";
}

float dn_activate(float x, dn_activation a) { return dn_activate_formula(x, a); }

float dn_gradient(float y, dn_activation a) { return dn_gradient_formula(y, a); }

/* ---- arrays: the common cases get tight loops the compiler vectorises ---- */

typedef struct {
    float *x;
    const float *y;
    size_t n;
    dn_activation a;
    int parts;
} act_job;

static void activate_range(float *x, size_t n, dn_activation a)
{
    switch (a) {
    case DN_ACT_LINEAR: return;
    case DN_ACT_LEAKY:
        for (size_t i = 0; i < n; i++) x[i] = (x[i] > 0) ? x[i] : .1f * x[i];
        return;
    case DN_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = (x[i] > 0) ? x[i] : 0.f;
        return;
    case DN_ACT_LOGISTIC:
        /* in float (darknet evaluates exp in double): within 1e-7 of it */
        for (size_t i = 0; i < n; i++) x[i] = 1.f / (1.f + expf(-x[i]));
        return;
    default:
        for (size_t i = 0; i < n; i++) x[i] = dn_activate(x[i], a);
    }
}

static void gradient_range(const float *y, size_t n, dn_activation a, float *delta)
{
    switch (a) {
    case DN_ACT_LINEAR: return;
    case DN_ACT_LEAKY:
        for (size_t i = 0; i < n; i++) delta[i] *= (y[i] > 0) ? 1.f : .1f;
        return;
    default:
        for (size_t i = 0; i < n; i++) delta[i] *= dn_gradient(y[i], a);
    }
}

static void chunk(size_t n, int parts, int part, size_t *b, size_t *e)
{
    size_t base = n / (size_t)parts, extra = n % (size_t)parts, p = (size_t)part;
    *b = p * base + (p < extra ? p : extra);
    *e = *b + base + (p < extra ? 1 : 0);
}

static void activate_task(void *ctx, int part, int thread)
{
    (void)thread;
    act_job *j = ctx;
    size_t b, e;
    chunk(j->n, j->parts, part, &b, &e);
    activate_range(j->x + b, e - b, j->a);
}

static void gradient_task(void *ctx, int part, int thread)
{
    (void)thread;
    act_job *j = ctx;
    size_t b, e;
    chunk(j->n, j->parts, part, &b, &e);
    gradient_range(j->y + b, e - b, j->a, j->x + b);
}

/* Below this many values a pool hand-off costs more than it saves. */
#define DN_PARALLEL_MIN 16384

static int parts_for(dn_pool *pool, size_t n)
{
    if (n < DN_PARALLEL_MIN) return 1;
    return dn_pool_threads(pool);
}

void dn_activate_array(dn_pool *pool, float *x, size_t n, dn_activation a)
{
    if (a == DN_ACT_LINEAR) return;
    act_job j = {x, NULL, n, a, parts_for(pool, n)};
    dn_pool_run(pool, j.parts, activate_task, &j);
}

void dn_gradient_array(dn_pool *pool, const float *y, size_t n, dn_activation a, float *delta)
{
    if (a == DN_ACT_LINEAR) return;
    act_job j = {delta, y, n, a, parts_for(pool, n)};
    dn_pool_run(pool, j.parts, gradient_task, &j);
}
