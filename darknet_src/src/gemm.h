/* Single-precision GEMM on the CPU, row-major, darknet's signature:
 *
 *   C = alpha * op(A) * op(B) + beta * C
 *
 * op(A) is M x K (A is K x M when trans_a), op(B) is K x N (B is N x K when
 * trans_b), lda/ldb/ldc are row strides.  Work is split over the pool by
 * blocks of C only (never over K), so every element of C is summed in the
 * same order whatever the thread count: results are repeatable bit for bit.
 * The kernel (AVX-512, AVX2+FMA or portable C) is chosen once at run time. */
#ifndef DN_GEMM_H
#define DN_GEMM_H

#include "pool.h"

void dn_gemm(dn_pool *pool, int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* "avx512", "avx2" or "generic". */
const char *dn_gemm_kernel_name(void);

/* What to do to each element of C once its whole sum is known, while the
 * tile is still in registers / cache (a convolution's bias or batch-norm
 * and activation):
 *
 *   C[i][j] = act(C[i][j] * row_scale[i] + row_shift[i])
 *
 * where C[i][j] is the finished alpha * op(A) * op(B) + beta * C. */
typedef struct {
    const float *row_scale;  /* NULL = 1: C[i][j] *= row_scale[i] */
    const float *row_shift;  /* NULL = 0: C[i][j] += row_shift[i] (after the scale) */
    int activation;          /* a dn_activation (activations.h); DN_ACT_LINEAR = none */
} dn_gemm_epilogue;

/* dn_gemm with an epilogue (NULL = none); dn_gemm(...) is dn_gemm_ex(..., NULL). */
void dn_gemm_ex(dn_pool *pool, int trans_a, int trans_b, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
                const dn_gemm_epilogue *epilogue);

#endif
