/* Single-precision GEMM on the CPU, row-major, darknet's signature:
 *
 *   C = alpha * op(A) * op(B) + beta * C
 *
 * op(A) is M x K (A is K x M when trans_a), op(B) is K x N (B is N x K when
 * trans_b), lda/ldb/ldc are row strides.  Work is split over the pool by
 * blocks of C only (never over K), so every element of C is summed in the
 * same order whatever the thread count: results are repeatable bit for bit.
 * The kernel (AVX-512, AVX2+FMA or portable C) is chosen once at run time.
 * Below dn_gemm_ex: entry points for convolutions at inference (A packed
 * ahead of time, B as an implicit im2col matrix, batches of products). */
#ifndef DN_GEMM_H
#define DN_GEMM_H

#include <stddef.h>

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

// ---- A packed ahead of time (a layer's weights) -------------------------------

/* Floats that op(A) of M x K takes packed in the chosen kernel's layout. */
size_t dn_gemm_packed_a_floats(int M, int K);
/* Pack the whole of A (M x K, not transposed, row stride lda) into `packed`
 * (dn_gemm_packed_a_floats(M, K) floats), over the pool. */
void dn_gemm_pack_a(dn_pool *pool, int M, int K, const float *A, int lda, float *packed);

/* The layout dn_gemm_pack_a writes, for callers that produce packed values
 * directly: K blocks of kc columns (the last may be shorter, k_len long),
 * each of ceil(M / mr) slivers of mr rows; row i, column k of K block b is at
 *   b * block_floats + (i / mr) * (mr * k_len + sliver_pad) + (k - b * kc) * mr + i % mr
 * and the rows of the last sliver past M hold zeros. */
typedef struct {
    int mr, kc, sliver_pad;
    size_t block_floats;
} dn_gemm_packed_a_layout;
dn_gemm_packed_a_layout dn_gemm_packed_a_layout_of(int M, int K);

/* dn_gemm_ex(pool, 0, 0, M, N, K, 1, A, K, B, ldb, 0, C, ldc, epilogue) with A
 * packed by dn_gemm_pack_a: the same bits (for M >= 2: dn_gemm_ex runs
 * M == 1 as a vector product), without packing A again. */
void dn_gemm_packed(dn_pool *pool, int M, int N, int K, const float *packed_a, const float *B,
                    int ldb, float *C, int ldc, const dn_gemm_epilogue *epilogue);

/* `count` independent products C_i = A_i * B_i (no epilogue) in one pass over
 * the pool: A_i at packed_a + i * a_stride (each packed by dn_gemm_pack_a,
 * M x K), B_i at B + i * b_stride (K x N, row stride ldb), C_i at
 * C + i * c_stride (M x N, row stride ldc).  Each product's bits are those of
 * dn_gemm_packed. */
void dn_gemm_packed_batch(dn_pool *pool, int count, int M, int N, int K, const float *packed_a,
                          size_t a_stride, const float *B, int ldb, size_t b_stride, float *C,
                          int ldc, size_t c_stride);

/* A 64-byte aligned buffer of at least `floats` floats owned by the calling
 * thread, kept between calls (freed at thread exit), or NULL without memory.
 * The GEMM itself never uses it, so a pool task may hold it across GEMMs. */
float *dn_thread_scratch(size_t floats);

// ---- convolution as a GEMM on the implicit im2col matrix -----------------------

/* The im2col matrix of one image (darknet's layout, im2col.h) without
 * building it: row (c * ksize + ky) * ksize + kx, column oy * out_w + ox
 * holds im[c][oy * stride + ky - pad][ox * stride + kx - pad], 0 outside. */
typedef struct {
    const float *im;   /* channels x height x width */
    int channels, height, width;
    int ksize, stride, pad;
    int out_h, out_w;
} dn_gemm_im2col;

/* C (M x N, N = out_h * out_w, row stride N) = A * columns(image) and the
 * epilogue: dn_gemm_ex(pool, 0, 0, M, N, K, 1, A, K, im2col(image), N, 0,
 * C, N, epilogue) bit for bit (M >= 2), K = channels * ksize^2, with the B
 * panels packed straight from the image.  A is packed_a (dn_gemm_pack_a)
 * or, when that is NULL, A itself (M x K, row stride K). */
void dn_gemm_conv(dn_pool *pool, int M, const float *A, const float *packed_a,
                  const dn_gemm_im2col *columns, float *C, const dn_gemm_epilogue *epilogue);

#endif
