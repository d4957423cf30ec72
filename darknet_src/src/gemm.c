/* Blocked single-precision GEMM (row-major, darknet's argument order).
 *
 * Blocking scheme: Goto & van de Geijn, "Anatomy of High-Performance Matrix
 * Multiplication" (ACM TOMS 2008), as laid out by BLIS (Van Zee & van de
 * Geijn 2015):
 *
 *   for jc in [0, N) step NC          B panel  kc x NC, packed    -> L3
 *     for pc in [0, K) step kc          (one K block)
 *       pack B panel in NR-wide slivers [k][NR]
 *       for ic in [0, M) step MC      A block  MC x kc, packed    -> L2
 *         pack A block in MR-tall slivers [k][MR]
 *         for jr in NC step NR        B sliver kc x NR            -> L1
 *           for ir in MC step MR      micro-kernel: MR x NR of C in registers
 *
 * The kernels (gemm_kernel_impl.h instantiated by gemm_avx512.c, gemm_avx2.c
 * and gemm_generic.c) own the packing, the micro- and macro-kernels; this
 * file picks one at run time, plans the blocks and spreads them over the pool.
 *
 * Threads: C is cut into a grid of blocks (chosen per call from the shape,
 * see choose_grid), one pool task each; a task runs the loops above on its
 * block with its own thread-local packing buffers.  An operand that several
 * blocks would each pack (B when M is split, A when N is split) is instead
 * packed once, whole, by a first pool run, when it is small enough.
 * K is never split and the K blocks are a function of K and the kernel only,
 * so every element of C goes through the same operations in the same order
 * whatever the thread count: results are identical bit for bit.
 *
 * Memory: while a block computes, the macro-kernel prefetches the next block
 * this task will pack, and each micro-kernel prefetches the next tile of C.
 * Packing buffers are thread-local, grown on demand and kept (freed at
 * thread exit); nothing is allocated per call once they are large enough.
 * Without memory for them a block is computed unpacked (slowly) instead.
 *
 * The epilogue (row scale, row shift, activation) is applied by the
 * micro-kernel when it writes back the last K block of a tile, while the
 * tile is still in registers.
 *
 * Convolutions at inference (gemm.h) use the same loops with A packed once
 * by the caller (a layer's weights: read from memory, never packed again),
 * B optionally the implicit im2col matrix of an image (its panels packed
 * straight from the image, never written out), and batches of independent
 * products (Winograd's 36) spread over the pool in one run.  Each element
 * still goes through the same operations as with dn_gemm_ex. */
#include "gemm.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "gemm_kernel.h"

/* Below this many multiply-adds the pool costs more than it saves. */
#define GEMM_PARALLEL_MIN_MACS 65536.0
/* Larger B panels are not prefetched while the previous one is in use. */
#define GEMM_PREFETCH_B_MAX_BYTES (192 * 1024)
/* Reading a value packed by another thread (from L3) costs about this
 * fraction of packing it again (into L2). */
#define GEMM_SHARED_READ 0.5
/* Operands packed once for all tasks are kept whole up to this size. */
#define GEMM_SHARED_MAX_FLOATS ((size_t)4 << 20)

// ---- kernel choice ----------------------------------------------------------

static const gemm_kernel *chosen_kernel;
static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;

static int cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int cpu_has_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* The best kernel this CPU runs, capped by PYDARKNET_GEMM=generic|avx2|avx512
 * (asking for one the CPU lacks gives the best one below it). */
static void choose_kernel(void)
{
    const char *wanted = getenv("PYDARKNET_GEMM");
    int cap = 2; /* 0 generic, 1 avx2, 2 avx512 */
    if (wanted && strcmp(wanted, "generic") == 0) cap = 0;
    if (wanted && strcmp(wanted, "avx2") == 0) cap = 1;
    chosen_kernel = &dn_gemm_kernel_generic;
#if defined(__x86_64__) || defined(__i386__)
    if (cap >= 1 && cpu_has_avx2()) chosen_kernel = &dn_gemm_kernel_avx2;
    if (cap >= 2 && cpu_has_avx512()) chosen_kernel = &dn_gemm_kernel_avx512;
#else
    (void)cap;
#endif
}

static const gemm_kernel *gemm_kernel_get(void)
{
    pthread_once(&kernel_once, choose_kernel);
    return chosen_kernel;
}

const char *dn_gemm_kernel_name(void) { return gemm_kernel_get()->name; }

// ---- packing buffers --------------------------------------------------------

/* Two growing buffers per thread: one for the blocks a task packs for
 * itself, one for operands a calling thread packs once for all tasks.  Both
 * are freed at thread exit by the keys' destructors. */
typedef struct {
    float *data;
    size_t floats;
} thread_buffer;

enum { PRIVATE_BUFFER, SHARED_BUFFER, CALLER_BUFFER, BUFFER_KINDS };

static pthread_key_t buffer_keys[BUFFER_KINDS];
static int buffer_keys_ok;
static pthread_once_t buffer_keys_once = PTHREAD_ONCE_INIT;
static _Thread_local thread_buffer thread_buffers[BUFFER_KINDS];

/* Key destructor, run by the exiting thread: forget the buffer, free it. */
static void free_thread_buffer(void *data)
{
    for (int kind = 0; kind < BUFFER_KINDS; kind++)
        if (thread_buffers[kind].data == data) thread_buffers[kind] = (thread_buffer){NULL, 0};
    free(data);
}

static void make_buffer_keys(void)
{
    buffer_keys_ok = 1;
    for (int kind = 0; kind < BUFFER_KINDS; kind++)
        if (pthread_key_create(&buffer_keys[kind], free_thread_buffer) != 0) buffer_keys_ok = 0;
}

/* This thread's buffer `kind` of at least `floats` floats (64-byte aligned), or NULL. */
static float *packing_buffer(int kind, size_t floats)
{
    thread_buffer *buffer = &thread_buffers[kind];
    if (floats <= buffer->floats) return buffer->data;
    pthread_once(&buffer_keys_once, make_buffer_keys);
    if (buffer_keys_ok) pthread_setspecific(buffer_keys[kind], NULL);
    free(buffer->data);
    buffer->data = NULL;
    buffer->floats = 0;
    size_t grown = floats + floats / 4;
    void *p = NULL;
    if (posix_memalign(&p, 64, grown * sizeof(float)) != 0) {
        grown = floats;
        if (posix_memalign(&p, 64, grown * sizeof(float)) != 0) return NULL;
    }
    buffer->data = p;
    buffer->floats = grown;
    if (buffer_keys_ok) pthread_setspecific(buffer_keys[kind], p);
    return p;
}

float *dn_thread_scratch(size_t floats) { return packing_buffer(CALLER_BUFFER, floats); }

// ---- plan -------------------------------------------------------------------

typedef struct {
    const gemm_kernel *kernel;
    int trans_a, trans_b;
    int M, N, K;
    float alpha, beta;
    const float *A, *B;      /* A is NULL when a_ready holds it packed */
    float *C;
    int lda, ldb, ldc;
    const dn_gemm_im2col *columns; /* B is this image's implicit im2col matrix (or NULL) */
    const float *row_scale, *row_shift; /* NULL = none */
    int activation;
    int kc;                  /* K block: fixes the summation order */
    int k_blocks;
    int mc, nc;              /* cache blocks (multiples of MR / NR) */
    int m_slivers, n_slivers;
    int m_parts, n_parts;    /* task grid over C, in slivers */
    /* operands packed once, whole, for all tasks (when the grid would
     * otherwise pack them once per block, or by the caller ahead of time):
     * K block b of A starts at a_ready + b * a_block_floats, its sliver s at
     * + s * (MR * k + pad) */
    int share_a, share_b;
    int a_prepacked;         /* a_ready came packed from the caller */
    const float *a_ready, *b_ready;
    size_t a_block_floats, b_block_floats;
    int a_pack_parts, b_pack_parts; /* pre-packing tasks per K block */
} gemm_plan;

static int round_up(int x, int to) { return (x + to - 1) / to * to; }
static int ceil_div(int x, int by) { return (x + by - 1) / by; }
static int min_int(int a, int b) { return a < b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

static int activation_is_fast(int activation)
{
    return activation == DN_ACT_LINEAR || activation == DN_ACT_LEAKY || activation == DN_ACT_RELU;
}

/* Balanced K blocks of at most the kernel's KC: depends on K only. */
static int k_block(const gemm_kernel *kernel, int K)
{
    int blocks = ceil_div(K, kernel->kc);
    return ceil_div(K, blocks);
}

static size_t sliver_floats(int rows, int k) { return (size_t)rows * k + GEMM_SLIVER_PAD; }

/* Floats of A (or B) packed whole, all K blocks. */
static size_t packed_a_floats(const gemm_plan *p)
{
    return (size_t)p->k_blocks * p->m_slivers * sliver_floats(p->kernel->mr, p->kc);
}

static size_t packed_b_floats(const gemm_plan *p)
{
    return (size_t)p->k_blocks * p->n_slivers * sliver_floats(p->kernel->nr, p->kc);
}

/* The task grid (m_parts x n_parts blocks of C) that minimises an estimate of
 * the time: rounds of tasks over the threads, a quarter of a task of tail,
 * and the packing: an operand used by several blocks is either packed by
 * each block into L2 (A once per column block, B once per row block) or,
 * when small enough to keep whole, packed once for all and then read by
 * each block from L3 (cheaper than packing, not free). */
static void choose_grid(gemm_plan *p, int threads)
{
    p->m_parts = p->n_parts = 1;
    p->share_a = p->a_prepacked;
    p->share_b = 0;
    if (threads <= 1) return;
    const int mr = p->kernel->mr, nr = p->kernel->nr;
    const int max_parts = 4 * threads;
    const int a_sharable = packed_a_floats(p) <= GEMM_SHARED_MAX_FLOATS;
    const int b_sharable = packed_b_floats(p) <= GEMM_SHARED_MAX_FLOATS;
    double best = HUGE_VAL;
    for (int mp = 1; mp <= min_int(p->m_slivers, max_parts); mp++) {
        for (int np = 1; np <= min_int(p->n_slivers, max_parts / mp); np++) {
            int tasks = mp * np;
            double task_macs = (double)ceil_div(p->m_slivers, mp) * mr * ceil_div(p->n_slivers, np) * nr;
            double rounds = ceil_div(tasks, threads);
            int share_a = p->a_prepacked || (np > 1 && a_sharable), share_b = mp > 1 && b_sharable;
            double a_packs = p->a_prepacked ? GEMM_SHARED_READ * np
                             : share_a      ? 1.0 + GEMM_SHARED_READ * np
                                            : np;
            double packs = a_packs * p->M +
                           (share_b ? 1.0 + GEMM_SHARED_READ * mp : mp) * p->N;
            double time = (rounds + 0.25) * task_macs + p->kernel->pack_cost * packs / threads;
            if (time < best) {
                best = time;
                p->m_parts = mp;
                p->n_parts = np;
                p->share_a = share_a;
                p->share_b = share_b;
            }
        }
    }
}

static void plan_blocks(gemm_plan *p, int threads)
{
    const gemm_kernel *kernel = p->kernel;
    p->kc = k_block(kernel, p->K);
    p->k_blocks = ceil_div(p->K, p->kc);
    /* a shorter K block leaves room in L2 for a taller A block */
    int stretch = min_int(max_int(1, kernel->kc / p->kc), 4);
    p->mc = min_int(kernel->mc * stretch, round_up(p->M, kernel->mr));
    p->nc = min_int(kernel->nc, round_up(p->N, kernel->nr));
    p->m_slivers = ceil_div(p->M, kernel->mr);
    p->n_slivers = ceil_div(p->N, kernel->nr);
    p->a_block_floats = (size_t)p->m_slivers * sliver_floats(kernel->mr, p->kc);
    choose_grid(p, threads);
    /* pre-packing: about 4 tasks per thread in all */
    int per_block = max_int(1, ceil_div(4 * threads, p->k_blocks));
    p->a_pack_parts = min_int(per_block, p->m_slivers);
    p->b_pack_parts = min_int(per_block, p->n_slivers);
}

// ---- slow paths -------------------------------------------------------------

static float epilogue_scalar(const gemm_plan *p, int row, float x)
{
    if (p->row_scale) x *= p->row_scale[row];
    if (p->row_shift) x += p->row_shift[row];
    return p->activation == DN_ACT_LINEAR ? x : dn_activate(x, (dn_activation)p->activation);
}

void dn_gemm_activate_tile(float *c, int ldc, int rows, int cols, int activation)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++)
            c[(size_t)r * ldc + j] = dn_activate(c[(size_t)r * ldc + j], (dn_activation)activation);
}

/* C = beta * C (and the epilogue): K == 0 or alpha == 0. */
static void scale_c(const gemm_plan *p)
{
    for (int i = 0; i < p->M; i++) {
        float *c = p->C + (size_t)i * p->ldc;
        for (int j = 0; j < p->N; j++)
            c[j] = epilogue_scalar(p, i, p->beta == 0.f ? 0.f : p->beta * c[j]);
    }
}

/* op(A)[i][k], from A or from the caller's packed copy of it. */
static float a_value(const gemm_plan *p, int i, int k)
{
    if (!p->a_prepacked)
        return p->trans_a ? p->A[(size_t)k * p->lda + i] : p->A[(size_t)i * p->lda + k];
    const int mr = p->kernel->mr, block = k / p->kc, in_block = k % p->kc;
    const int k_len = min_int(p->kc, p->K - block * p->kc);
    return p->a_ready[block * p->a_block_floats + (size_t)(i / mr) * sliver_floats(mr, k_len) +
                      (size_t)in_block * mr + i % mr];
}

/* op(B)[k][j], from B or from the image of the implicit im2col matrix. */
static float b_value(const gemm_plan *p, int k, int j)
{
    const dn_gemm_im2col *g = p->columns;
    if (!g) return p->trans_b ? p->B[(size_t)j * p->ldb + k] : p->B[(size_t)k * p->ldb + j];
    const int ks = g->ksize, c = k / (ks * ks), ky = (k / ks) % ks, kx = k % ks;
    const int iy = j / g->out_w * g->stride + ky - g->pad;
    const int ix = j % g->out_w * g->stride + kx - g->pad;
    if (iy < 0 || iy >= g->height || ix < 0 || ix >= g->width) return 0.f;
    return g->im[((size_t)c * g->height + iy) * g->width + ix];
}

/* Rows [i0, i1) x columns [j0, j1) of C without packing: only when no
 * packing buffer could be allocated. */
static void unpacked_block(const gemm_plan *p, int i0, int i1, int j0, int j1)
{
    for (int i = i0; i < i1; i++) {
        for (int j = j0; j < j1; j++) {
            float sum = 0.f;
            for (int k = 0; k < p->K; k++) {
                sum += a_value(p, i, k) * b_value(p, k, j);
            }
            float *c = p->C + (size_t)i * p->ldc + j;
            float x = p->alpha * sum;
            if (p->beta != 0.f) x += p->beta * *c;
            *c = epilogue_scalar(p, i, x);
        }
    }
}

// ---- blocked path -----------------------------------------------------------

/* Rows [first_row, first_row + rows) x columns [first_col, first_col + cols)
 * of op(X), X row-major with stride ld: the region of X they come from. */
static gemm_prefetch source_region(const float *X, int ld, int trans, int first_row, int rows,
                                   int first_col, int cols)
{
    gemm_prefetch region = {NULL, 0, 0, ld};
    if (rows <= 0 || cols <= 0) return region;
    if (trans) {
        region.first = X + (size_t)first_col * ld + first_row;
        region.rows = cols;
        region.row_floats = rows;
    } else {
        region.first = X + (size_t)first_row * ld + first_col;
        region.rows = rows;
        region.row_floats = cols;
    }
    return region;
}

/* What blocked_block packs itself after the A block at (ic, pc) of the panel
 * at jc: the next A block, else the next B panel if it is small enough to sit
 * in L2 beside the current one (shared operands are packed already). */
static gemm_prefetch next_to_pack(const gemm_plan *p, int i1, int j1, int ic, int jc, int pc,
                                  int mc, int nc)
{
    gemm_prefetch none = {NULL, 0, 0, 0};
    if (ic + mc < i1 && !p->share_a)
        return source_region(p->A, p->lda, p->trans_a, ic + mc, min_int(mc, i1 - ic - mc), pc,
                             min_int(p->kc, p->K - pc));
    if (ic + mc < i1 || p->share_b || p->columns) return none;
    int next_pc = pc + p->kc < p->K ? pc + p->kc : 0;
    int next_jc = next_pc ? jc : jc + nc;
    if (next_jc >= j1) return none;
    int k = min_int(p->kc, p->K - next_pc), n = min_int(nc, j1 - next_jc);
    if ((double)k * n * sizeof(float) > GEMM_PREFETCH_B_MAX_BYTES) return none;
    return source_region(p->B, p->ldb, p->trans_b, next_pc, k, next_jc, n);
}

/* Columns [first, first + count), K range [k0, k0 + kc) of op(B), packed:
 * from B or straight from the image of the implicit im2col matrix. */
static void pack_b_block(const gemm_plan *p, int first, int count, int k0, int kc, float *out)
{
    if (p->columns)
        p->kernel->pack_b_im2col(p->columns, first, count, k0, kc, out);
    else
        p->kernel->pack_b(p->trans_b, p->B, p->ldb, first, count, k0, kc, out);
}

/* Rows [i0, i1) x columns [j0, j1) of C: the Goto loops of the top comment,
 * packing into this thread's buffer what is not shared. */
static void blocked_block(const gemm_plan *p, int i0, int i1, int j0, int j1)
{
    const gemm_kernel *kernel = p->kernel;
    const int kc = p->kc, mr = kernel->mr, nr = kernel->nr;
    const int mc = min_int(p->mc, round_up(i1 - i0, mr));
    const int nc = min_int(p->nc, round_up(j1 - j0, nr));
    const size_t a_floats = p->a_ready ? 0 : (size_t)(mc / mr) * sliver_floats(mr, kc);
    const size_t b_floats = p->b_ready ? 0 : (size_t)(nc / nr) * sliver_floats(nr, kc);
    float *buffer = a_floats + b_floats ? packing_buffer(PRIVATE_BUFFER, a_floats + b_floats) : NULL;
    if (a_floats + b_floats && !buffer) {
        unpacked_block(p, i0, i1, j0, j1);
        return;
    }
    float *a_own = buffer, *b_own = buffer + a_floats;

    gemm_tile_update update = {
        .alpha = p->alpha,
        .beta = p->beta,
        .activation = p->activation,
        .activation_is_slow = !activation_is_fast(p->activation),
    };
    for (int jc = j0; jc < j1; jc += nc) {
        const int n = min_int(nc, j1 - jc);
        for (int pc = 0, block = 0; pc < p->K; pc += kc, block++) {
            const int k = min_int(kc, p->K - pc);
            const float *b_panel = b_own;
            if (p->b_ready)
                b_panel = p->b_ready + block * p->b_block_floats + (jc / nr) * sliver_floats(nr, k);
            else
                pack_b_block(p, jc, n, pc, k, b_own);
            update.first_k_block = pc == 0;
            update.last_k_block = pc + k == p->K;
            for (int ic = i0; ic < i1; ic += mc) {
                const int m = min_int(mc, i1 - ic);
                const float *a_block = a_own;
                if (p->a_ready)
                    a_block = p->a_ready + block * p->a_block_floats + (ic / mr) * sliver_floats(mr, k);
                else
                    kernel->pack_a(p->trans_a, p->A, p->lda, ic, m, pc, k, a_own);
                update.row_scale = p->row_scale ? p->row_scale + ic : NULL;
                update.row_shift = p->row_shift ? p->row_shift + ic : NULL;
                gemm_prefetch next = next_to_pack(p, i1, j1, ic, jc, pc, mc, nc);
                kernel->macro(k, m, n, a_block, b_panel, p->C + (size_t)ic * p->ldc + jc, p->ldc,
                              &update, &next);
            }
        }
    }
}

/* One block of the task grid. */
static void gemm_task(void *ctx, int task, int thread)
{
    (void)thread;
    const gemm_plan *p = ctx;
    const int mr = p->kernel->mr, nr = p->kernel->nr;
    int s0, s1, t0, t1;
    dn_split_range(p->m_slivers, p->m_parts, task / p->n_parts, &s0, &s1);
    dn_split_range(p->n_slivers, p->n_parts, task % p->n_parts, &t0, &t1);
    const int i0 = s0 * mr, i1 = min_int(p->M, s1 * mr);
    const int j0 = t0 * nr, j1 = min_int(p->N, t1 * nr);
    if (i0 < i1 && j0 < j1) blocked_block(p, i0, i1, j0, j1);
}

// ---- one row of A (M == 1) ---------------------------------------------------

/* Task boundaries fall on multiples of this (a multiple of every kernel's
 * vector width). */
#define GEMV_COLUMN_GRAIN 64

typedef struct {
    const gemm_plan *plan;
    const float *a; /* the row of op(A), contiguous */
    int grains;     /* ceil(N / GEMV_COLUMN_GRAIN) */
    int parts;
} gemv_job;

/* Columns [j0, j1) of the single row of C. */
static void gemv_columns(const gemm_plan *p, const float *a, int j0, int j1)
{
    float *sums = packing_buffer(PRIVATE_BUFFER, (size_t)(j1 - j0));
    if (!sums) {
        unpacked_block(p, 0, 1, j0, j1);
        return;
    }
    p->kernel->gemv(p->trans_b, a, p->B, p->ldb, p->K, j0, j1 - j0, sums);
    float *c = p->C;
    for (int j = j0; j < j1; j++) {
        float x = p->alpha * sums[j - j0];
        if (p->beta != 0.f) x += p->beta * c[j];
        c[j] = epilogue_scalar(p, 0, x);
    }
}

static void gemv_task(void *ctx, int task, int thread)
{
    (void)thread;
    const gemv_job *job = ctx;
    int g0, g1;
    dn_split_range(job->grains, job->parts, task, &g0, &g1);
    int j0 = g0 * GEMV_COLUMN_GRAIN, j1 = min_int(job->plan->N, g1 * GEMV_COLUMN_GRAIN);
    if (j0 < j1) gemv_columns(job->plan, job->a, j0, j1);
}

/* C (1 x N) = alpha * a * op(B) + beta * C: a matrix-vector product, no
 * packing (each value of B is used once), one column range per thread (B
 * read row by row in long runs). */
static void gemv(const gemm_plan *p, dn_pool *pool, int threads)
{
    const float *a = p->A;
    if (p->trans_a && p->lda != 1) { /* A is K x 1: gather its column */
        float *column = packing_buffer(SHARED_BUFFER, (size_t)p->K);
        if (!column) {
            unpacked_block(p, 0, 1, 0, p->N);
            return;
        }
        for (int k = 0; k < p->K; k++) column[k] = p->A[(size_t)k * p->lda];
        a = column;
    }
    gemv_job job = {p, a, ceil_div(p->N, GEMV_COLUMN_GRAIN), 1};
    job.parts = min_int(job.grains, threads);
    dn_pool_run(job.parts > 1 ? pool : NULL, job.parts, gemv_task, &job);
}

// ---- shared pre-packing -----------------------------------------------------

typedef struct {
    const gemm_plan *plan;
    float *a_out, *b_out; /* where the shared A and B go (the plan's a_ready, b_ready) */
    int a_parts, b_parts; /* pre-packing tasks per K block */
} prepack_job;

/* One pre-packing task: a range of slivers of one K block of B (the first
 * b_parts tasks of each K block) or of A. */
static void prepack_task(void *ctx, int task, int thread)
{
    (void)thread;
    const prepack_job *job = ctx;
    const gemm_plan *p = job->plan;
    const gemm_kernel *kernel = p->kernel;
    const int block = task / (job->a_parts + job->b_parts);
    const int part = task % (job->a_parts + job->b_parts);
    const int pc = block * p->kc, k = min_int(p->kc, p->K - pc);
    int s0, s1;
    if (part < job->b_parts) {
        dn_split_range(p->n_slivers, job->b_parts, part, &s0, &s1);
        int j0 = s0 * kernel->nr, j1 = min_int(p->N, s1 * kernel->nr);
        float *out = job->b_out + block * p->b_block_floats + s0 * sliver_floats(kernel->nr, k);
        if (j0 < j1) pack_b_block(p, j0, j1 - j0, pc, k, out);
    } else {
        dn_split_range(p->m_slivers, job->a_parts, part - job->b_parts, &s0, &s1);
        int i0 = s0 * kernel->mr, i1 = min_int(p->M, s1 * kernel->mr);
        float *out = job->a_out + block * p->a_block_floats + s0 * sliver_floats(kernel->mr, k);
        if (i0 < i1) kernel->pack_a(p->trans_a, p->A, p->lda, i0, i1 - i0, pc, k, out);
    }
}

/* Packs the shared operands whole (in the calling thread's shared buffer),
 * over the pool; without the memory for it, shares nothing.  An A the
 * caller packed is left as it is. */
static void prepack_shared(gemm_plan *p, dn_pool *pool)
{
    const int pack_a = p->share_a && !p->a_prepacked;
    if (!pack_a && !p->share_b) return;
    size_t a_floats = pack_a ? p->a_block_floats : 0;
    p->b_block_floats = p->share_b ? (size_t)p->n_slivers * sliver_floats(p->kernel->nr, p->kc) : 0;
    float *shared = packing_buffer(SHARED_BUFFER, (a_floats + p->b_block_floats) * p->k_blocks);
    if (!shared) {
        p->share_a = p->a_prepacked;
        p->share_b = 0;
        return;
    }
    prepack_job job = {p, shared + p->b_block_floats * p->k_blocks, shared,
                       pack_a ? p->a_pack_parts : 0, p->share_b ? p->b_pack_parts : 0};
    dn_pool_run(pool, (job.a_parts + job.b_parts) * p->k_blocks, prepack_task, &job);
    if (pack_a) p->a_ready = job.a_out;
    if (p->share_b) p->b_ready = job.b_out;
}

// ---- entry points -----------------------------------------------------------

/* The plan of C = alpha * op(A) * op(B) + beta * C (and the epilogue), before blocking. */
static gemm_plan make_plan(int trans_a, int trans_b, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C,
                           int ldc, const dn_gemm_epilogue *epilogue)
{
    gemm_plan plan = {
        .kernel = gemm_kernel_get(),
        .trans_a = trans_a,
        .trans_b = trans_b,
        .M = M,
        .N = N,
        .K = K,
        .alpha = alpha,
        .beta = beta,
        .A = A,
        .B = B,
        .C = C,
        .lda = lda,
        .ldb = ldb,
        .ldc = ldc,
        .activation = DN_ACT_LINEAR,
    };
    if (epilogue) {
        plan.row_scale = epilogue->row_scale;
        plan.row_shift = epilogue->row_shift;
        if (epilogue->activation >= 0 && epilogue->activation < DN_ACT_COUNT)
            plan.activation = epilogue->activation;
    }
    return plan;
}

/* Threads worth using for an M x N x K product. */
static int useful_threads(dn_pool *pool, int M, int N, int K)
{
    return (double)M * N * K < GEMM_PARALLEL_MIN_MACS ? 1 : dn_pool_threads(pool);
}

/* A packed by the caller: the layout dn_gemm_pack_a writes. */
static void use_packed_a(gemm_plan *p, const float *packed_a)
{
    p->A = NULL;
    p->a_prepacked = 1;
    p->a_ready = packed_a;
}

/* Blocks, shared operands, then the task grid over the pool. */
static void run_blocked(gemm_plan *p, dn_pool *pool, int threads)
{
    plan_blocks(p, threads);
    prepack_shared(p, pool);
    int tasks = p->m_parts * p->n_parts;
    if (tasks == 1)
        gemm_task(p, 0, 0);
    else
        dn_pool_run(pool, tasks, gemm_task, p);
}

void dn_gemm_ex(dn_pool *pool, int trans_a, int trans_b, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
                const dn_gemm_epilogue *epilogue)
{
    if (M <= 0 || N <= 0 || !C) return;
    gemm_plan plan = make_plan(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                               epilogue);
    if (K <= 0 || alpha == 0.f || !A || !B) {
        scale_c(&plan);
        return;
    }
    int threads = useful_threads(pool, M, N, K);
    if (M == 1) {
        gemv(&plan, pool, threads);
        return;
    }
    run_blocked(&plan, pool, threads);
}

// ---- A packed ahead of time -------------------------------------------------

size_t dn_gemm_packed_a_floats(int M, int K)
{
    if (M <= 0 || K <= 0) return 0;
    const gemm_kernel *kernel = gemm_kernel_get();
    int kc = k_block(kernel, K);
    return (size_t)ceil_div(K, kc) * ceil_div(M, kernel->mr) * sliver_floats(kernel->mr, kc);
}

dn_gemm_packed_a_layout dn_gemm_packed_a_layout_of(int M, int K)
{
    const gemm_kernel *kernel = gemm_kernel_get();
    dn_gemm_packed_a_layout layout = {kernel->mr, k_block(kernel, K), GEMM_SLIVER_PAD, 0};
    layout.block_floats = (size_t)ceil_div(M, kernel->mr) * sliver_floats(kernel->mr, layout.kc);
    return layout;
}

/* Rows [first, first + count) of A (M x K; `rows` holds row `first`, row
 * stride lda) into their slivers; first is a multiple of MR. */
static void pack_a_rows(int M, int K, const float *rows, int lda, int first, int count,
                        float *packed)
{
    const gemm_kernel *kernel = gemm_kernel_get();
    const int kc = k_block(kernel, K), mr = kernel->mr;
    if (count <= 0 || K <= 0 || first % mr) return;
    const size_t block_floats = (size_t)ceil_div(M, mr) * sliver_floats(mr, kc);
    for (int pc = 0, block = 0; pc < K; pc += kc, block++) {
        int k = min_int(kc, K - pc);
        kernel->pack_a(0, rows, lda, 0, min_int(count, M - first), pc, k,
                       packed + block * block_floats + (size_t)(first / mr) * sliver_floats(mr, k));
    }
}

typedef struct {
    int M, K, lda, grain_rows, parts;
    const float *A;
    float *packed;
} pack_a_job;

static void pack_a_task(void *ctx, int task, int thread)
{
    (void)thread;
    const pack_a_job *job = ctx;
    int s0, s1;
    dn_split_range(ceil_div(job->M, job->grain_rows), job->parts, task, &s0, &s1);
    int first = s0 * job->grain_rows, last = min_int(job->M, s1 * job->grain_rows);
    if (first < last)
        pack_a_rows(job->M, job->K, job->A + (size_t)first * job->lda, job->lda, first,
                    last - first, job->packed);
}

void dn_gemm_pack_a(dn_pool *pool, int M, int K, const float *A, int lda, float *packed)
{
    if (M <= 0 || K <= 0) return;
    pack_a_job job = {M, K, lda, gemm_kernel_get()->mr, 0, A, packed};
    job.parts = min_int(ceil_div(M, job.grain_rows), 4 * dn_pool_threads(pool));
    dn_pool_run(pool, job.parts, pack_a_task, &job);
}

void dn_gemm_packed(dn_pool *pool, int M, int N, int K, const float *packed_a, const float *B,
                    int ldb, float *C, int ldc, const dn_gemm_epilogue *epilogue)
{
    if (M <= 0 || N <= 0 || !C) return;
    gemm_plan plan = make_plan(0, 0, M, N, K, 1.f, NULL, K, B, ldb, 0.f, C, ldc, epilogue);
    if (K <= 0 || !packed_a || !B) {
        scale_c(&plan);
        return;
    }
    use_packed_a(&plan, packed_a);
    run_blocked(&plan, pool, useful_threads(pool, M, N, K));
}

void dn_gemm_conv(dn_pool *pool, int M, const float *A, const float *packed_a,
                  const dn_gemm_im2col *columns, float *C, const dn_gemm_epilogue *epilogue)
{
    const int N = columns->out_h * columns->out_w;
    const int K = columns->channels * columns->ksize * columns->ksize;
    if (M <= 0 || N <= 0 || !C) return;
    gemm_plan plan = make_plan(0, 0, M, N, K, 1.f, A, K, NULL, N, 0.f, C, N, epilogue);
    if (K <= 0 || (!A && !packed_a) || !columns->im) {
        scale_c(&plan);
        return;
    }
    plan.columns = columns;
    if (packed_a) use_packed_a(&plan, packed_a);
    run_blocked(&plan, pool, useful_threads(pool, M, N, K));
}

// ---- many products, A packed ----------------------------------------------------

typedef struct {
    gemm_plan plan; /* product 0's; product i is the same at other addresses */
    const float *packed_a, *B;
    float *C;
    size_t a_stride, b_stride, c_stride;
    int parts;      /* tasks per product */
} batch_job;

static void batch_task(void *ctx, int task, int thread)
{
    const batch_job *job = ctx;
    const size_t product = (size_t)(task / job->parts);
    gemm_plan p = job->plan;
    p.a_ready = job->packed_a + product * job->a_stride;
    p.B = job->B + product * job->b_stride;
    p.C = job->C + product * job->c_stride;
    gemm_task(&p, task % job->parts, thread);
}

void dn_gemm_packed_batch(dn_pool *pool, int count, int M, int N, int K, const float *packed_a,
                          size_t a_stride, const float *B, int ldb, size_t b_stride, float *C,
                          int ldc, size_t c_stride)
{
    if (count <= 0 || M <= 0 || N <= 0 || !C) return;
    if (K <= 0 || !packed_a || !B) { /* empty sums: C = 0 */
        for (int i = 0; i < count; i++)
            dn_gemm_packed(NULL, M, N, 0, NULL, NULL, ldb, C + (size_t)i * c_stride, ldc, NULL);
        return;
    }
    batch_job job = {make_plan(0, 0, M, N, K, 1.f, NULL, K, B, ldb, 0.f, C, ldc, NULL), packed_a, B,
                     C, a_stride, b_stride, c_stride, 1};
    use_packed_a(&job.plan, packed_a);
    /* enough products keep every thread busy: one task each; otherwise each
     * product is cut for the threads a product gets */
    int threads = (double)M * N * K * count < GEMM_PARALLEL_MIN_MACS ? 1 : dn_pool_threads(pool);
    int per_product = count >= 4 * threads ? 1 : ceil_div(4 * threads, count);
    plan_blocks(&job.plan, per_product);
    job.plan.share_b = 0; /* each block packs its own B: a shared one would be per product */
    job.plan.b_ready = NULL;
    job.parts = job.plan.m_parts * job.plan.n_parts;
    if (threads == 1) {
        for (int task = 0; task < count * job.parts; task++) batch_task(&job, task, 0);
        return;
    }
    dn_pool_run(pool, count * job.parts, batch_task, &job);
}

void dn_gemm(dn_pool *pool, int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    dn_gemm_ex(pool, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}
