/* GEMM kernel template: packing routines, the register-blocked micro-kernel
 * and the macro-kernel, written once and instantiated per instruction set
 * by gemm_generic.c, gemm_avx2.c and gemm_avx512.c (BLIS / Goto layout:
 * A packed in slivers [k][MR], B in slivers [k][NR], the micro-kernel keeps
 * an MR x NR block of C in MR * NV vector registers).
 *
 * The including file defines, before including this one:
 *   K_NAME        "avx2"                      the kernel's name
 *   K_SYMBOL      dn_gemm_kernel_avx2         the gemm_kernel it defines
 *   K_ATTR        __attribute__((target(..))) on every function here
 *   MR, NV, VW    rows, vectors per row, floats per vector (NR = NV * VW)
 *   K_KC, K_MC, K_NC                          cache blocks
 *   K_PACK_COST   multiply-adds one packed value costs (for task planning)
 *   vec           the vector type (float for the portable kernel)
 * and these K_ATTR static inline functions on vec:
 *   v_load(p) v_store(p, x) (unaligned)  v_set1(f)  v_zero()
 *   v_fma(a, b, c) = a * b + c   v_mul  v_add
 *   v_leaky(x) = x > 0 ? x : .1f * x     v_relu(x) = x * (x > 0)
 * and K_HAS_AVX: 1 where packing may use 8-float AVX loads / stores and
 * 8 x 8 transposes, 0 for plain C.
 *
 * An edge tile (fewer than MR rows or NR columns) goes through a padded
 * copy in memory so that it sees exactly the same arithmetic as a full one:
 * each element of C gets the same operations whatever tile it falls in. */

#include <stddef.h>
#include <string.h>

#include "activations.h"
#include "gemm_kernel.h"

#define NR (NV * VW)

#define K_CAT2(a, b) a##b
#define K_CAT(a, b) K_CAT2(a, b)
#define FN(name) K_CAT(name##_, K_NAME_TOKEN)

#if defined(__GNUC__)
#define K_UNROLL _Pragma("GCC unroll 16")
#define K_UNROLL_K _Pragma("GCC unroll 4")
#else
#define K_UNROLL
#define K_UNROLL_K
#endif

static inline int FN(k_min)(int a, int b) { return a < b ? a : b; }

// ---- packing ---------------------------------------------------------------

#if K_HAS_AVX
/* Rows src[0..8) hold 8 floats each (from offset k); store column c
 * (src[0][k + c] .. src[7][k + c]) as 8 floats at dst + c * dst_stride, in
 * increasing c, so a dst_stride < 8 lets each store overwrite the previous
 * one's tail (the last store writes 8 - dst_stride floats past 8 * dst_stride). */
K_ATTR static inline void FN(transpose8_store)(const float *const src[8], int k, float *dst,
                                               int dst_stride)
{
    __m256 r0 = _mm256_loadu_ps(src[0] + k), r1 = _mm256_loadu_ps(src[1] + k);
    __m256 r2 = _mm256_loadu_ps(src[2] + k), r3 = _mm256_loadu_ps(src[3] + k);
    __m256 r4 = _mm256_loadu_ps(src[4] + k), r5 = _mm256_loadu_ps(src[5] + k);
    __m256 r6 = _mm256_loadu_ps(src[6] + k), r7 = _mm256_loadu_ps(src[7] + k);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * dst_stride, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + 1 * dst_stride, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

/* Packed slivers are GEMM_SLIVER_PAD floats longer than their data so that
 * consecutive slivers do not start at the same offset modulo 4 KiB (which
 * would put the same row of every sliver in one L1 set). */
#define A_SLIVER(kc) ((size_t)MR * (kc) + GEMM_SLIVER_PAD)
#define B_SLIVER(kc) ((size_t)NR * (kc) + GEMM_SLIVER_PAD)

/* One full sliver of op(A) = A (not transposed): MR rows of A, kc values
 * each, gathered into [kc][MR]. */
K_ATTR static inline void FN(pack_a_rows)(const float *const row[MR], int kc, float *out)
{
    int k = 0;
#if K_HAS_AVX && MR <= 8
    const float *src[8];
    for (int r = 0; r < 8; r++) src[r] = row[r < MR ? r : 0];
    /* with MR < 8 each 8-float store runs 8 - MR floats past its k: they
     * land on the next k's values (rewritten next) or in the sliver's padding */
    for (; k + 16 <= kc; k += 16) { /* a whole cache line of each row at once */
        FN(transpose8_store)(src, k, out + (size_t)k * MR, MR);
        FN(transpose8_store)(src, k + 8, out + (size_t)(k + 8) * MR, MR);
    }
#endif
    for (; k < kc; k++)
        K_UNROLL for (int r = 0; r < MR; r++) out[(size_t)k * MR + r] = row[r][k];
}

/* op(A) rows [first, first + count), columns [k0, k0 + kc) -> [kc][MR] slivers. */
K_ATTR static void FN(pack_a)(int trans, const float *A, int lda, int first, int count, int k0,
                              int kc, float *out)
{
    const int full = count / MR, rows = count % MR;
    if (!trans) {
        /* A[i][k] = A[i * lda + k]: gather one value from each of MR rows per k */
        for (int s = 0; s < full; s++) {
            const float *row[MR];
            K_UNROLL for (int r = 0; r < MR; r++)
                row[r] = A + (size_t)(first + s * MR + r) * lda + k0;
            FN(pack_a_rows)(row, kc, out + s * A_SLIVER(kc));
        }
        if (rows) {
            float *edge = out + full * A_SLIVER(kc);
            for (int r = 0; r < MR; r++) {
                const float *src = A + (size_t)(first + full * MR + (r < rows ? r : 0)) * lda + k0;
                for (int k = 0; k < kc; k++) edge[(size_t)k * MR + r] = r < rows ? src[k] : 0.f;
            }
        }
        return;
    }
    /* A^T: op(A)[i][k] = A[k * lda + i]: walk each row of A once, dealing MR
     * contiguous values to each sliver */
    const float *src = A + (size_t)k0 * lda + first;
    for (int k = 0; k < kc; k++, src += lda) {
        float *dst = out + (size_t)k * MR;
        int s = 0;
#if K_HAS_AVX && MR <= 8
        /* 8 floats at a time: the MR < 8 extra ones land on the next k's
         * values (rewritten next) or in the sliver's padding */
        for (; s * MR + 8 <= count && s < full; s++)
            _mm256_storeu_ps(dst + s * A_SLIVER(kc), _mm256_loadu_ps(src + s * MR));
#endif
        for (; s < full; s++) memcpy(dst + s * A_SLIVER(kc), src + s * MR, MR * sizeof(float));
        if (rows) {
            float *edge = dst + full * A_SLIVER(kc);
            for (int r = 0; r < MR; r++) edge[r] = r < rows ? src[full * MR + r] : 0.f;
        }
    }
}

/* NR columns of op(B) = B^T, i.e. NR rows of B (kc values from k0 each),
 * into one [kc][NR] sliver. */
K_ATTR static inline void FN(pack_b_rows)(const float *B, int ldb, int first_row, int k0, int kc,
                                          float *out)
{
    int k = 0;
#if K_HAS_AVX
    for (; k + 16 <= kc; k += 16) { /* a whole cache line of each row at once */
        K_UNROLL for (int g = 0; g < NR / 8; g++) {
            const float *src[8];
            for (int r = 0; r < 8; r++) src[r] = B + (size_t)(first_row + 8 * g + r) * ldb + k0;
            FN(transpose8_store)(src, k, out + (size_t)k * NR + 8 * g, NR);
            FN(transpose8_store)(src, k + 8, out + (size_t)(k + 8) * NR + 8 * g, NR);
        }
    }
#endif
    for (int j = 0; j < NR; j++) {
        const float *src = B + (size_t)(first_row + j) * ldb + k0;
        for (int kk = k; kk < kc; kk++) out[(size_t)kk * NR + j] = src[kk];
    }
}

/* op(B) columns [first, first + count), rows [k0, k0 + kc) -> [kc][NR] slivers. */
K_ATTR static void FN(pack_b)(int trans, const float *B, int ldb, int first, int count, int k0,
                              int kc, float *out)
{
    const int full = count / NR, cols = count % NR;
    if (!trans) {
        /* B[k][j] = B[k * ldb + j]: walk each row of B once (a long
         * sequential read), dealing NR values to each sliver */
        const float *src = B + (size_t)k0 * ldb + first;
        for (int k = 0; k < kc; k++, src += ldb) {
            float *dst = out + (size_t)k * NR;
            for (int s = 0; s < full; s++)
                K_UNROLL for (int v = 0; v < NV; v++)
                    v_store(dst + s * B_SLIVER(kc) + v * VW, v_load(src + s * NR + v * VW));
            if (cols) {
                float *edge = dst + full * B_SLIVER(kc);
                for (int j = 0; j < NR; j++) edge[j] = j < cols ? src[full * NR + j] : 0.f;
            }
        }
        return;
    }
    /* B^T: op(B)[k][j] = B[j * ldb + k]: one contiguous row of B per column */
    for (int s = 0; s < full; s++)
        FN(pack_b_rows)(B, ldb, first + s * NR, k0, kc, out + s * B_SLIVER(kc));
    if (cols) {
        float *edge = out + full * B_SLIVER(kc);
        for (int j = 0; j < NR; j++) {
            const float *src = B + (size_t)(first + full * NR + (j < cols ? j : 0)) * ldb + k0;
            for (int k = 0; k < kc; k++) edge[(size_t)k * NR + j] = j < cols ? src[k] : 0.f;
        }
    }
}

/* A run of a B sliver's columns that lie in one output row: sliver columns
 * [col, col + len) are the output pixels (oy, ox .. ox + len - 1). */
typedef struct {
    int oy, ox, len, col;
} im2col_run;

/* dst[run->col ..] = row (c, ky, kx) of the im2col matrix over the run:
 * im[c][oy * stride + ky - pad][ox * stride + kx - pad ...], 0 outside. */
K_ATTR static inline void FN(im2col_run_copy)(const dn_gemm_im2col *g, const float *channel,
                                              const im2col_run *run, int ky, int kx, float *dst)
{
    float *d = dst + run->col;
    const int iy = run->oy * g->stride + ky - g->pad;
    if (iy < 0 || iy >= g->height) {
        for (int t = 0; t < run->len; t++) d[t] = 0.f;
        return;
    }
    const float *row = channel + (size_t)iy * g->width;
    const int x0 = run->ox * g->stride + kx - g->pad;
    if (g->stride != 1) {
        for (int t = 0; t < run->len; t++) {
            const int ix = x0 + t * g->stride;
            d[t] = (ix >= 0 && ix < g->width) ? row[ix] : 0.f;
        }
        return;
    }
    if (run->len == NR && x0 >= 0 && x0 + NR <= g->width) { /* the common case: one vector row */
        K_UNROLL for (int v = 0; v < NV; v++) v_store(d + v * VW, v_load(row + x0 + v * VW));
        return;
    }
    int t = 0;
    for (; t < run->len && x0 + t < 0; t++) d[t] = 0.f;
    const int end = FN(k_min)(run->len, g->width - x0);
    for (; t < end; t++) d[t] = row[x0 + t];
    for (; t < run->len; t++) d[t] = 0.f;
}

/* One sliver of NR columns that are NR neighbouring outputs of one row
 * (oy, ox ..), stride 1: the common case, one (c, ky) input row at a time
 * for its kx, mostly whole vectors. */
K_ATTR static void FN(pack_im2col_row)(const dn_gemm_im2col *g, int oy, int ox, int k0, int kc,
                                       float *sliver)
{
    const int ks = g->ksize;
    int c = k0 / (ks * ks), ky = (k0 / ks) % ks, kx = k0 % ks;
    for (int k = 0; k < kc;) {
        const int n = FN(k_min)(ks - kx, kc - k), iy = oy + ky - g->pad;
        float *dst = sliver + (size_t)k * NR;
        if (iy < 0 || iy >= g->height) {
            for (int t = 0; t < n * NR; t++) dst[t] = 0.f;
        } else {
            const float *row = g->im + ((size_t)c * g->height + iy) * g->width;
            for (int t = 0; t < n; t++, dst += NR) {
                const int x0 = ox + kx + t - g->pad;
                if (x0 >= 0 && x0 + NR <= g->width) {
                    K_UNROLL for (int v = 0; v < NV; v++) v_store(dst + v * VW, v_load(row + x0 + v * VW));
                } else {
                    for (int j = 0; j < NR; j++)
                        dst[j] = (x0 + j >= 0 && x0 + j < g->width) ? row[x0 + j] : 0.f;
                }
            }
        }
        k += n;
        kx += n;
        if (kx == ks) {
            kx = 0;
            if (++ky == ks) {
                ky = 0;
                c++;
            }
        }
    }
}

/* Columns [first, first + count), rows [k0, k0 + kc) of the implicit im2col
 * matrix into [kc][NR] slivers: the values dn_im2col would have written and
 * pack_b would have copied, read straight from the image. */
K_ATTR static void FN(pack_b_im2col)(const dn_gemm_im2col *g, int first, int count, int k0, int kc,
                                     float *out)
{
    const int ks = g->ksize;
    const size_t plane = (size_t)g->height * g->width;
    for (int s = 0; s * NR < count; s++) {
        float *sliver = out + s * B_SLIVER(kc);
        const int j0 = first + s * NR, cols = FN(k_min)(NR, count - s * NR);
        if (cols == NR && g->stride == 1 && j0 % g->out_w + NR <= g->out_w) {
            FN(pack_im2col_row)(g, j0 / g->out_w, j0 % g->out_w, k0, kc, sliver);
            continue;
        }
        im2col_run runs[NR];
        int n_runs = 0;
        for (int j = 0; j < cols;) {
            const int oy = (j0 + j) / g->out_w, ox = (j0 + j) % g->out_w;
            const int len = FN(k_min)(cols - j, g->out_w - ox);
            runs[n_runs++] = (im2col_run){oy, ox, len, j};
            j += len;
        }
        int c = k0 / (ks * ks), ky = (k0 / ks) % ks, kx = k0 % ks;
        for (int k = 0; k < kc; k++) {
            float *dst = sliver + (size_t)k * NR;
            const float *channel = g->im + (size_t)c * plane;
            for (int r = 0; r < n_runs; r++) FN(im2col_run_copy)(g, channel, &runs[r], ky, kx, dst);
            for (int j = cols; j < NR; j++) dst[j] = 0.f;
            if (++kx == ks) {
                kx = 0;
                if (++ky == ks) {
                    ky = 0;
                    c++;
                }
            }
        }
    }
}

// ---- write-back -------------------------------------------------------------

/* The first `rows` rows and nv vectors of columns of C (MR x NR at c, row
 * stride ldc) updated from the sums in acc; scale and shift have `rows`
 * entries (or are NULL). */
K_ATTR static inline __attribute__((always_inline)) void FN(update_tile)(
    vec acc[MR][NV], float *c, int ldc, const gemm_tile_update *u, const float *scale,
    const float *shift, int rows, const int nv)
{
    const vec alpha = v_set1(u->alpha);
    const int overwrite = u->first_k_block && u->beta == 0.f;
    const vec beta = v_set1(u->first_k_block ? u->beta : 1.f);
    const int last = u->last_k_block;
    K_UNROLL for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        float *c_row = c + (size_t)r * ldc;
        K_UNROLL for (int v = 0; v < nv; v++) {
            vec x;
            if (overwrite)
                x = v_mul(acc[r][v], alpha);
            else
                x = v_fma(acc[r][v], alpha, v_mul(v_load(c_row + v * VW), beta));
            if (last) {
                if (scale) x = v_mul(x, v_set1(scale[r]));
                if (shift) x = v_add(x, v_set1(shift[r]));
                if (u->activation == DN_ACT_LEAKY) x = v_leaky(x);
                else if (u->activation == DN_ACT_RELU) x = v_relu(x);
            }
            v_store(c_row + v * VW, x);
        }
    }
}

// ---- micro-kernel -----------------------------------------------------------

/* The rows x cols block of C at c (cols <= nv * VW, rows <= MR) from one A
 * sliver and the first nv vectors of one B sliver.  Each element gets the
 * same operations whatever nv is. */
K_ATTR static inline __attribute__((always_inline)) void FN(micro_body)(
    int kc, const float *a, const float *b, float *c, int ldc, int rows, int cols,
    const gemm_tile_update *u, const float *c_next, const int nv)
{
    vec acc[MR][NV];
    K_UNROLL for (int r = 0; r < MR; r++)
        K_UNROLL for (int v = 0; v < nv; v++) acc[r][v] = v_zero();

    /* fetch the next tile of C (for writing) while this one computes */
    K_UNROLL for (int r = 0; r < MR; r++) {
        __builtin_prefetch(c_next + (size_t)r * ldc, 1);
        __builtin_prefetch(c_next + (size_t)r * ldc + NR - 1, 1);
    }

    K_UNROLL_K for (int k = 0; k < kc; k++) {
        vec bv[NV];
        K_UNROLL for (int v = 0; v < nv; v++) bv[v] = v_load(b + v * VW);
        K_UNROLL for (int r = 0; r < MR; r++) {
            const vec av = v_set1(a[r]);
            K_UNROLL for (int v = 0; v < nv; v++) acc[r][v] = v_fma(av, bv[v], acc[r][v]);
        }
        a += MR;
        b += NR;
    }

    if (cols == nv * VW) { /* all rows, or the first rows of an edge: straight from registers */
        if (rows == MR)
            FN(update_tile)(acc, c, ldc, u, u->row_scale, u->row_shift, MR, nv);
        else
            FN(update_tile)(acc, c, ldc, u, u->row_scale, u->row_shift, rows, nv);
        if (u->last_k_block && u->activation_is_slow)
            dn_gemm_activate_tile(c, ldc, rows, cols, u->activation);
        return;
    }

    /* edge columns: the same update on a padded copy, then the valid part back */
    float tile[MR * NR] __attribute__((aligned(64)));
    float scale[MR], shift[MR];
    const int reads_c = !(u->first_k_block && u->beta == 0.f);
    memset(tile, 0, sizeof tile);
    for (int r = 0; r < MR; r++) {
        scale[r] = (u->row_scale && r < rows) ? u->row_scale[r] : 1.f;
        shift[r] = (u->row_shift && r < rows) ? u->row_shift[r] : 0.f;
    }
    if (reads_c)
        for (int r = 0; r < rows; r++)
            memcpy(tile + r * NR, c + (size_t)r * ldc, sizeof(float) * (size_t)cols);
    FN(update_tile)(acc, tile, NR, u, u->row_scale ? scale : NULL, u->row_shift ? shift : NULL, MR,
                    nv);
    if (u->last_k_block && u->activation_is_slow)
        dn_gemm_activate_tile(tile, NR, rows, cols, u->activation);
    for (int r = 0; r < rows; r++)
        memcpy(c + (size_t)r * ldc, tile + r * NR, sizeof(float) * (size_t)cols);
}

/* A full-width tile (any cols <= NR). */
K_ATTR static void FN(micro)(int kc, const float *a, const float *b, float *c, int ldc, int rows,
                             int cols, const gemm_tile_update *u, const float *c_next)
{
    FN(micro_body)(kc, a, b, c, ldc, rows, cols, u, c_next, NV);
}

/* A tile of at most one vector of columns (the last of an N that is not a
 * multiple of NR): half the work of a full one or less, the same bits. */
K_ATTR static void FN(micro_narrow)(int kc, const float *a, const float *b, float *c, int ldc,
                                    int rows, int cols, const gemm_tile_update *u,
                                    const float *c_next)
{
    FN(micro_body)(kc, a, b, c, ldc, rows, cols, u, c_next, 1);
}

// ---- macro-kernel -----------------------------------------------------------

/* C[0..m)[0..n) from m rows of packed A and n columns of packed B: each B
 * sliver stays in L1 while the A slivers of the block stream from L2. */
K_ATTR static void FN(macro)(int kc, int m, int n, const float *a_packed, const float *b_packed,
                             float *c, int ldc, const gemm_tile_update *update,
                             const gemm_prefetch *next)
{
    gemm_tile_update u = *update;
    /* spread the prefetch of `next` (one 64-byte line at a time) evenly over the tiles */
    const int lines_per_row = next->first ? (next->row_floats + 15) / 16 + 1 : 0;
    const long lines = (long)lines_per_row * (next->first ? next->rows : 0);
    const long tiles = (long)((m + MR - 1) / MR) * ((n + NR - 1) / NR);
    const int lines_per_tile = (int)((lines + tiles - 1) / tiles);
    int pf_row = 0, pf_line = 0;
    for (int j = 0; j < n; j += NR) {
        const float *b_sliver = b_packed + (j / NR) * B_SLIVER(kc);
        for (int i = 0; i < m; i += MR) {
            u.row_scale = update->row_scale ? update->row_scale + i : NULL;
            u.row_shift = update->row_shift ? update->row_shift + i : NULL;
            /* the tile after this one: down the column of tiles, then the next column */
            const float *c_next = i + MR < m ? c + (size_t)(i + MR) * ldc + j
                                             : c + (j + NR < n ? j + NR : j);
            for (int l = 0; l < lines_per_tile && pf_row < next->rows; l++) {
                int at = FN(k_min)(pf_line * 16, next->row_floats - 1);
                __builtin_prefetch(next->first + (size_t)pf_row * next->ld + at, 0, 2);
                if (++pf_line == lines_per_row) {
                    pf_line = 0;
                    pf_row++;
                }
            }
            const int cols = FN(k_min)(NR, n - j);
            if (NV > 1 && cols <= VW)
                FN(micro_narrow)(kc, a_packed + (i / MR) * A_SLIVER(kc), b_sliver,
                                 c + (size_t)i * ldc + j, ldc, FN(k_min)(MR, m - i), cols, &u, c_next);
            else
                FN(micro)(kc, a_packed + (i / MR) * A_SLIVER(kc), b_sliver, c + (size_t)i * ldc + j,
                          ldc, FN(k_min)(MR, m - i), cols, &u, c_next);
        }
    }
}

// ---- one row of A (M == 1) -----------------------------------------------

/* sums[r] = the dot product of a with rows[r] (K values each), for `rows`
 * rows side by side; each row gets the same operations whatever `rows` is. */
K_ATTR static inline void FN(dot_rows)(const float *a, const float *const *row, int rows, int K,
                                       float *sums)
{
    vec acc[4][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = v_zero();
    int k = 0;
    for (; k + 2 * VW <= K; k += 2 * VW) {
        const vec a0 = v_load(a + k), a1 = v_load(a + k + VW);
        for (int r = 0; r < rows; r++) {
            acc[r][0] = v_fma(a0, v_load(row[r] + k), acc[r][0]);
            acc[r][1] = v_fma(a1, v_load(row[r] + k + VW), acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        float lanes[2 * VW];
        v_store(lanes, acc[r][0]);
        v_store(lanes + VW, acc[r][1]);
        float sum = 0.f;
        for (int l = 0; l < 2 * VW; l++) sum += lanes[l];
        for (int kk = k; kk < K; kk++) sum += a[kk] * row[r][kk];
        sums[r] = sum;
    }
}

/* sums[j] = sum over k of a[k] * op(B)[k][first + j], j < count, for a
 * contiguous row a of K values.  Each column gets the same operations
 * however the columns are split between calls, except that the last
 * N % VW columns of B (not transposed) are summed without vectors. */
K_ATTR static void FN(gemv)(int trans_b, const float *a, const float *B, int ldb, int K, int first,
                            int count, float *sums)
{
    if (trans_b) {
        /* op(B)[k][j] = B[j * ldb + k]: dot products with rows of B, four
         * rows at a time (four memory streams) */
        int j = 0;
        for (; j < count; j += 4) {
            const int rows = FN(k_min)(4, count - j);
            const float *row[4];
            for (int r = 0; r < rows; r++) row[r] = B + (size_t)(first + j + r) * ldb;
            if (rows == 4)
                FN(dot_rows)(a, row, 4, K, sums + j);
            else
                for (int r = 0; r < rows; r++) FN(dot_rows)(a, row + r, 1, K, sums + j + r);
        }
        return;
    }
    /* op(B)[k][j] = B[k * ldb + j]: the rows of B weighted by a[k] added up
     * in sums, in order, four rows at a time (four memory streams, each row
     * read from start to end) */
    const int vectors = count / VW;
    for (int j = 0; j < count; j++) sums[j] = 0.f;
    const float *row = B + first;
    int k = 0;
    for (; k + 4 <= K; k += 4, row += 4 * (size_t)ldb) {
        const float *r1 = row + ldb, *r2 = r1 + ldb, *r3 = r2 + ldb;
        const vec a0 = v_set1(a[k]), a1 = v_set1(a[k + 1]);
        const vec a2 = v_set1(a[k + 2]), a3 = v_set1(a[k + 3]);
        for (int v = 0; v < vectors; v++) {
            vec x = v_fma(a0, v_load(row + v * VW), v_load(sums + v * VW));
            x = v_fma(a1, v_load(r1 + v * VW), x);
            x = v_fma(a2, v_load(r2 + v * VW), x);
            v_store(sums + v * VW, v_fma(a3, v_load(r3 + v * VW), x));
        }
        for (int j = vectors * VW; j < count; j++) {
            float x = sums[j];
            x += a[k] * row[j];
            x += a[k + 1] * r1[j];
            x += a[k + 2] * r2[j];
            sums[j] = x + a[k + 3] * r3[j];
        }
    }
    for (; k < K; k++, row += ldb) {
        const vec ak = v_set1(a[k]);
        for (int v = 0; v < vectors; v++)
            v_store(sums + v * VW, v_fma(ak, v_load(row + v * VW), v_load(sums + v * VW)));
        for (int j = vectors * VW; j < count; j++) sums[j] += a[k] * row[j];
    }
}

const gemm_kernel K_SYMBOL = {
    .name = K_NAME,
    .mr = MR,
    .nr = NR,
    .kc = K_KC,
    .mc = K_MC,
    .nc = K_NC,
    .pack_cost = K_PACK_COST,
    .pack_a = FN(pack_a),
    .pack_b = FN(pack_b),
    .pack_b_im2col = FN(pack_b_im2col),
    .macro = FN(macro),
    .gemv = FN(gemv),
    .vector_floats = VW,
};
