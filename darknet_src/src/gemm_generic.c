/* Portable GEMM kernel: the template of gemm_kernel_impl.h on 4-float
 * vectors (GCC / clang vector extensions, which become SSE on x86-64 and
 * NEON on ARM), a 6 x 8 register tile of 12 accumulators; plain floats
 * (a 4 x 8 tile) with other compilers or -DDN_GEMM_GENERIC_SCALAR. */
#include <string.h>

#define K_NAME "generic"
#define K_NAME_TOKEN generic
#define K_SYMBOL dn_gemm_kernel_generic
#define K_ATTR
#define K_KC 256
#define K_MC 144
#define K_NC 4096
#define K_PACK_COST 3.0
#define K_HAS_AVX 0

#if defined(__GNUC__) && !defined(DN_GEMM_GENERIC_SCALAR)

#define MR 6
#define NV 2
#define VW 4

typedef float vec __attribute__((vector_size(16)));
typedef int ivec __attribute__((vector_size(16)));

static inline vec v_load(const float *p)
{
    vec x;
    memcpy(&x, p, sizeof x);
    return x;
}
static inline void v_store(float *p, vec x) { memcpy(p, &x, sizeof x); }
static inline vec v_set1(float f) { return (vec){f, f, f, f}; }
static inline vec v_zero(void) { return (vec){0.f, 0.f, 0.f, 0.f}; }
static inline vec v_fma(vec a, vec b, vec c) { return a * b + c; }
static inline vec v_mul(vec a, vec b) { return a * b; }
static inline vec v_add(vec a, vec b) { return a + b; }
static inline vec v_leaky(vec x)
{
    ivec positive = x > v_zero();
    return (vec)(((ivec)x & positive) | ((ivec)(x * v_set1(.1f)) & ~positive));
}
static inline vec v_relu(vec x)
{
    ivec positive = x > v_zero();
    return x * (vec)((ivec)v_set1(1.f) & positive);
}

#else

#define MR 4
#define NV 8
#define VW 1

typedef float vec;

static inline vec v_load(const float *p) { return *p; }
static inline void v_store(float *p, vec x) { *p = x; }
static inline vec v_set1(float f) { return f; }
static inline vec v_zero(void) { return 0.f; }
static inline vec v_fma(vec a, vec b, vec c) { return a * b + c; }
static inline vec v_mul(vec a, vec b) { return a * b; }
static inline vec v_add(vec a, vec b) { return a + b; }
static inline vec v_leaky(vec x) { return x > 0 ? x : .1f * x; }
static inline vec v_relu(vec x) { return x * (float)(x > 0); }

#endif

#include "gemm_kernel_impl.h"
