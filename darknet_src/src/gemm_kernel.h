/* Internal interface between the GEMM driver (gemm.c) and its kernels
 * (gemm_generic.c, gemm_avx2.c, gemm_avx512.c, all built from the template
 * gemm_kernel_impl.h).  Not part of the library's API. */
#ifndef DN_GEMM_KERNEL_H
#define DN_GEMM_KERNEL_H

#include "gemm.h"

/* What a micro-kernel does with its finished MR x NR block of partial sums
 * `acc` for one K block:
 *   first K block:  C = alpha * acc + beta * C   (beta == 0: C is not read)
 *   later blocks:   C = alpha * acc + C
 *   last K block:   then C = act(C * row_scale[i] + row_shift[i])  */
typedef struct {
    float alpha;
    float beta;
    int first_k_block;
    int last_k_block;
    const float *row_scale;  /* at the block's first row; NULL = no scale */
    const float *row_shift;  /* at the block's first row; NULL = no shift */
    int activation;          /* a dn_activation */
    int activation_is_slow;  /* not linear/leaky/relu: done by dn_activate afterwards */
} gemm_tile_update;

/* Pack rows [first, first + count) of op(A) (or columns of op(B)), K range
 * [k0, k0 + kc), into ceil(count / MR) slivers laid out [kc][MR] (B: [kc][NR]),
 * zero-padded past `count`; sliver s starts at s * (MR * kc + GEMM_SLIVER_PAD)
 * (B: s * (NR * kc + GEMM_SLIVER_PAD)). */
#define GEMM_SLIVER_PAD 16
typedef void (*gemm_pack_fn)(int trans, const float *src, int ld, int first, int count, int k0,
                             int kc, float *out);

/* Pack columns [first, first + count) of the implicit im2col matrix
 * (gemm.h), rows [k0, k0 + kc), like gemm_pack_fn packs op(B). */
typedef void (*gemm_pack_im2col_fn)(const dn_gemm_im2col *columns, int first, int count,
                                    int k0, int kc, float *out);

/* A block of a source matrix (rows x row_floats at stride ld) that will be
 * packed next: the macro-kernel prefetches it into L2, a little per tile, so
 * that reading it from memory overlaps the arithmetic. */
typedef struct {
    const float *first; /* NULL = nothing to prefetch */
    int rows;
    int row_floats;
    int ld;
} gemm_prefetch;

/* C[0..m)[0..n) updated from packed A (m rows) and packed B (n columns). */
typedef void (*gemm_macro_fn)(int kc, int m, int n, const float *a_packed, const float *b_packed,
                              float *c, int ldc, const gemm_tile_update *update,
                              const gemm_prefetch *next);

/* sums[j] = sum over k of a[k] * op(B)[k][first + j] for j < count: the
 * M == 1 case (a contiguous); first is a multiple of the kernel's
 * vector_floats, and then every column gets the same operations however
 * the columns are split between calls. */
typedef void (*gemm_gemv_fn)(int trans_b, const float *a, const float *B, int ldb, int K,
                             int first, int count, float *sums);

typedef struct {
    const char *name;
    int mr, nr;            /* register tile */
    int kc, mc, nc;        /* cache blocks: B sliver kc x nr in L1, A block mc x kc in L2,
                              B panel kc x nc in L3 */
    double pack_cost;      /* packing one value costs about this many multiply-adds */
    gemm_pack_fn pack_a;
    gemm_pack_fn pack_b;
    gemm_pack_im2col_fn pack_b_im2col;
    gemm_macro_fn macro;
    gemm_gemv_fn gemv;
    int vector_floats;     /* floats per vector register */
} gemm_kernel;

extern const gemm_kernel dn_gemm_kernel_generic;
#if defined(__x86_64__) || defined(__i386__)
extern const gemm_kernel dn_gemm_kernel_avx2;
extern const gemm_kernel dn_gemm_kernel_avx512;
#endif

/* Apply a non-vectorised activation to rows x cols of c (gemm.c). */
void dn_gemm_activate_tile(float *c, int ldc, int rows, int cols, int activation);

#endif
