/* AVX2 + FMA GEMM kernel: 6 x 16 register tile (12 ymm accumulators, two
 * B vectors and one broadcast of A), KC 256 (a 16 KiB B sliver in a 32 KiB
 * L1), MC 144 (a 144 KiB A block in a 512 KiB L2), NC 4080 (a 4 MiB B panel
 * in L3): BLIS's Haswell / Zen blocking.  Compiled for avx2,fma whatever the
 * build flags; gemm.c only calls it when the CPU has both. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define K_NAME "avx2"
#define K_NAME_TOKEN avx2
#define K_SYMBOL dn_gemm_kernel_avx2
#define K_ATTR __attribute__((target("avx2,fma")))
#define MR 6
#define NV 2
#define VW 8
#define K_KC 256
#define K_MC 144
#define K_PACK_COST 8.0
#define K_HAS_AVX 1
#define K_NC 4080

typedef __m256 vec;

K_ATTR static inline vec v_load(const float *p) { return _mm256_loadu_ps(p); }
K_ATTR static inline void v_store(float *p, vec x) { _mm256_storeu_ps(p, x); }
K_ATTR static inline vec v_set1(float f) { return _mm256_set1_ps(f); }
K_ATTR static inline vec v_zero(void) { return _mm256_setzero_ps(); }
K_ATTR static inline vec v_fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
K_ATTR static inline vec v_mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
K_ATTR static inline vec v_add(vec a, vec b) { return _mm256_add_ps(a, b); }
K_ATTR static inline vec v_leaky(vec x)
{
    vec positive = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(x, _mm256_set1_ps(.1f)), x, positive);
}
K_ATTR static inline vec v_relu(vec x)
{
    vec positive = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_mul_ps(x, _mm256_and_ps(positive, _mm256_set1_ps(1.f)));
}

#include "gemm_kernel_impl.h"

#endif
