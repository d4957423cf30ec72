/* AVX-512 GEMM kernel: 8 x 32 register tile (16 zmm accumulators, two B
 * vectors and one broadcast of A), KC 384 (a 48 KiB B sliver: L1 of Ice
 * Lake / Sapphire Rapids, L2 elsewhere), MC 192 (a 288 KiB A block in a
 * 1-2 MiB L2), NC 4096 (a 6 MiB B panel in L3).  KC 384 measured best of
 * 192 / 256 / 384 (and of a 12 x 32 tile) on a Sapphire Rapids Xeon.
 * The same template as the AVX2 kernel with wider vectors.  Compiled for
 * avx512f/vl/bw/dq whatever the build flags; gemm.c only calls it when the
 * CPU has them. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define K_NAME "avx512"
#define K_NAME_TOKEN avx512
#define K_SYMBOL dn_gemm_kernel_avx512
#define K_ATTR __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define MR 8
#define NV 2
#define VW 16
#define K_KC 384
#define K_MC 192
#define K_PACK_COST 16.0
#define K_HAS_AVX 1
#define K_NC 4096

typedef __m512 vec;

K_ATTR static inline vec v_load(const float *p) { return _mm512_loadu_ps(p); }
K_ATTR static inline void v_store(float *p, vec x) { _mm512_storeu_ps(p, x); }
K_ATTR static inline vec v_set1(float f) { return _mm512_set1_ps(f); }
K_ATTR static inline vec v_zero(void) { return _mm512_setzero_ps(); }
K_ATTR static inline vec v_fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
K_ATTR static inline vec v_mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
K_ATTR static inline vec v_add(vec a, vec b) { return _mm512_add_ps(a, b); }
K_ATTR static inline vec v_leaky(vec x)
{
    __mmask16 positive = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
    return _mm512_mask_blend_ps(positive, _mm512_mul_ps(x, _mm512_set1_ps(.1f)), x);
}
K_ATTR static inline vec v_relu(vec x)
{
    __mmask16 positive = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
    return _mm512_mul_ps(x, _mm512_maskz_mov_ps(positive, _mm512_set1_ps(1.f)));
}

#include "gemm_kernel_impl.h"

#endif
