/* Tests of dn_gemm / dn_gemm_ex (darknet_src/src/gemm.c) against a naive
 * double-precision reference.
 *
 * Run without arguments, the program re-runs itself once per kernel with
 * PYDARKNET_GEMM=generic|avx2|avx512 ("--child"); a kernel the CPU lacks is
 * reported as skipped (after checking that the library fell back to the best
 * one below it).  Each child runs:
 *   - random problems: sizes 0, 1, odd and large, all four transpositions,
 *     several alpha / beta (beta == 0 with C full of NaN), leading dimensions
 *     wider than the matrices, unaligned pointers, with and without an
 *     epilogue (row scale, row shift, every activation but stair), inline
 *     and on pools of 2 and 3 threads; padding between rows of C untouched;
 *   - bit-identity: larger problems (several K blocks, several tasks) give the
 *     same bits with no pool and with pools of 2, 3 and 4 threads;
 *   - special cases: K == 0, alpha == 0, M or N == 0, dn_gemm == dn_gemm_ex(NULL);
 *   - no memory for packing buffers (posix_memalign made to fail): the slow
 *     unpacked fallback gives right results.
 * GEMM_TEST_QUICK=1 runs fewer random problems (for sanitizer builds).
 * Exit status 0 when everything passed. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "gemm.h"
#include "pool.h"

#define TEST_RNG_START 0x9E3779B97F4A7C15ull
#include "kernel_tests.h"

// ---- random numbers (the generator: kernel_tests.h) ------------------------

/* A dimension: often 0, 1 or tiny, sometimes medium, now and then large. */
static int rnd_dim(int large)
{
    int kind = rnd_int(100);
    if (kind < 8) return rnd_int(2);
    if (kind < 50) return 1 + rnd_int(20);
    if (kind < 88) return 1 + rnd_int(150);
    return 150 + rnd_int(large - 150);
}

// ---- matrices ---------------------------------------------------------------

/* Floats a rows x width matrix with row stride ld really spans: allocating
 * exactly this much lets a sanitizer catch any read past its end. */
static size_t matrix_span(int rows, int width, int ld)
{
    if (rows <= 0 || width <= 0) return 0;
    return (size_t)(rows - 1) * ld + width;
}

/* A rows x width matrix of uniform [-1, 1) values, `offset` floats into its
 * allocation (to test unaligned pointers); *base is what to free. */
static float *random_matrix(int rows, int width, int ld, int offset, float **base)
{
    size_t span = matrix_span(rows, width, ld);
    *base = malloc((span + offset + 1) * sizeof(float));
    float *m = *base + offset;
    for (size_t i = 0; i < span; i++) m[i] = rnd_uniform(-1.f, 1.f);
    return m;
}

static float *random_vector(int n, float lo, float hi)
{
    float *v = malloc(((size_t)n + 1) * sizeof(float));
    for (int i = 0; i < n; i++) v[i] = rnd_uniform(lo, hi);
    return v;
}

// ---- reference and tolerance ------------------------------------------------

typedef struct {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    int use_scale, use_shift, use_epilogue, activation;
    int offset_a, offset_b, offset_c;
} gemm_case;

static double op_a(const gemm_case *t, const float *A, int i, int k)
{
    return t->trans_a ? A[(size_t)k * t->lda + i] : A[(size_t)i * t->lda + k];
}

static double op_b(const gemm_case *t, const float *B, int k, int j)
{
    return t->trans_b ? B[(size_t)j * t->ldb + k] : B[(size_t)k * t->ldb + j];
}

/* Largest slope of an activation (selu: 1.0507 * 1.6732 just below 0). */
#define MAX_ACTIVATION_SLOPE 1.76

/* Checks C against the reference; returns the number of wrong elements. */
static int check_result(const gemm_case *t, const float *A, const float *B, const float *c_old,
                        const float *C, const float *scale, const float *shift, const char *label)
{
    int wrong = 0;
    for (int i = 0; i < (t->N > 0 ? t->M : 0); i++) {
        for (int j = 0; j < t->ldc && (i < t->M - 1 || j < t->N); j++) {
            size_t at = (size_t)i * t->ldc + j;
            double got = C[at];
            if (j >= t->N) { /* padding between rows: must be untouched */
                if (memcmp(&C[at], &c_old[at], sizeof(float)) != 0) {
                    if (wrong++ < 5)
                        printf("  FAIL %s: padding C[%d][%d] changed to %g\n", label, i, j, got);
                }
                continue;
            }
            double sum = 0, a_max = 0, b_max = 0;
            for (int k = 0; k < t->K; k++) {
                double a = op_a(t, A, i, k), b = op_b(t, B, k, j);
                sum += a * b;
                a_max = fmax(a_max, fabs(a));
                b_max = fmax(b_max, fabs(b));
            }
            double old = t->beta == 0.f ? 0 : c_old[at];
            double ref = t->alpha * sum + t->beta * old;
            /* Tolerance.  A float sum of K products rounds once per step, each
             * error at most 2^-24 times the partial sum; with inputs of random
             * sign the partial sums grow like sqrt(k) * max|a||b| and the
             * errors add up like a random walk, to about
             * 2^-24 * K * max|a||b| / sqrt(2) -- below 1e-5 * sqrt(K) *
             * max|a||b| for any K up to ~10^5 (10x margin at K = 4608), and
             * K blocking only makes it smaller.  beta * C and the write-back
             * add a few roundings of their own size (1e-5 relative covers
             * them).  A missing, doubled or misplaced product changes an
             * element by ~|a||b| ~ 0.3, far above this. */
            double tol = 1e-5 * (sqrt((double)t->K) * fabs(t->alpha) * a_max * b_max +
                                 fabs(t->beta * old) + fabs(ref));
            if (scale) {
                ref *= scale[i];
                tol *= fabs(scale[i]);
            }
            if (shift) {
                ref += shift[i];
                tol += 1e-6 * fabs(ref);
            }
            if (t->activation != DN_ACT_LINEAR) {
                ref = dn_activate((float)ref, (dn_activation)t->activation);
                tol = tol * MAX_ACTIVATION_SLOPE + 1e-6 * fabs(ref);
            }
            tol += 1e-30;
            if (!(fabs(got - ref) <= tol)) {
                if (wrong++ < 5)
                    printf("  FAIL %s: C[%d][%d] = %.9g, expected %.9g (tolerance %.3g)\n", label,
                           i, j, got, ref, tol);
            }
        }
    }
    return wrong;
}

static void describe(const gemm_case *t, const char *what, char *out, size_t size)
{
    snprintf(out, size,
             "%s M=%d N=%d K=%d ta=%d tb=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g "
             "scale=%d shift=%d act=%s offsets=%d,%d,%d",
             what, t->M, t->N, t->K, t->trans_a, t->trans_b, t->lda, t->ldb, t->ldc, t->alpha,
             t->beta, t->use_scale, t->use_shift, dn_activation_name(t->activation), t->offset_a,
             t->offset_b, t->offset_c);
}

// ---- running one case -------------------------------------------------------

typedef struct {
    float *A, *B, *C, *c_old, *scale, *shift;
    float *base_a, *base_b, *base_c;
} case_data;

static void make_case_data(const gemm_case *t, case_data *d)
{
    int rows_a = t->trans_a ? t->K : t->M, width_a = t->trans_a ? t->M : t->K;
    int rows_b = t->trans_b ? t->N : t->K, width_b = t->trans_b ? t->K : t->N;
    d->A = random_matrix(rows_a, width_a, t->lda, t->offset_a, &d->base_a);
    d->B = random_matrix(rows_b, width_b, t->ldb, t->offset_b, &d->base_b);
    d->C = random_matrix(t->M, t->N, t->ldc, t->offset_c, &d->base_c);
    size_t span_c = matrix_span(t->M, t->N, t->ldc);
    for (int i = 0; i < (t->N > 0 ? t->M : 0); i++)
        for (int j = 0; j < t->ldc && (i < t->M - 1 || j < t->N); j++) {
            float *c = &d->C[(size_t)i * t->ldc + j];
            if (j >= t->N) *c = 12345.f;      /* padding sentinel */
            else if (t->beta == 0.f) *c = NAN; /* must be ignored */
        }
    d->c_old = malloc((span_c + 1) * sizeof(float));
    memcpy(d->c_old, d->C, span_c * sizeof(float));
    d->scale = t->use_scale ? random_vector(t->M, -2.f, 2.f) : NULL;
    d->shift = t->use_shift ? random_vector(t->M, -1.f, 1.f) : NULL;
}

static void free_case_data(case_data *d)
{
    free(d->base_a);
    free(d->base_b);
    free(d->base_c);
    free(d->c_old);
    free(d->scale);
    free(d->shift);
}

static void call_gemm(const gemm_case *t, const case_data *d, float *C, dn_pool *pool)
{
    if (!t->use_epilogue) {
        dn_gemm(pool, t->trans_a, t->trans_b, t->M, t->N, t->K, t->alpha, d->A, t->lda, d->B,
                t->ldb, t->beta, C, t->ldc);
        return;
    }
    dn_gemm_epilogue ep = {d->scale, d->shift, t->activation};
    dn_gemm_ex(pool, t->trans_a, t->trans_b, t->M, t->N, t->K, t->alpha, d->A, t->lda, d->B,
               t->ldb, t->beta, C, t->ldc, &ep);
}

static int run_case(const gemm_case *t, dn_pool *pool, const char *what)
{
    case_data d;
    make_case_data(t, &d);
    call_gemm(t, &d, d.C, pool);
    char label[512];
    describe(t, what, label, sizeof label);
    int wrong = check_result(t, d.A, d.B, d.c_old, d.C, d.scale, d.shift, label);
    free_case_data(&d);
    return wrong;
}

// ---- random problems --------------------------------------------------------

static const float alphas[] = {1.f, -0.5f, 2.25f, 1.f, 0.75f};
static const float betas[] = {0.f, 1.f, 0.5f, -1.5f, 0.f};

static void random_case(gemm_case *t, int large)
{
    memset(t, 0, sizeof *t);
    t->trans_a = rnd_int(2);
    t->trans_b = rnd_int(2);
    t->M = rnd_dim(large);
    t->N = rnd_dim(large);
    t->K = rnd_int(6) == 0 ? 256 + rnd_int(1100) : rnd_dim(large);
    int width_a = t->trans_a ? t->M : t->K, width_b = t->trans_b ? t->K : t->N;
    t->lda = (width_a > 0 ? width_a : 1) + (rnd_int(3) == 0 ? rnd_int(9) : 0);
    t->ldb = (width_b > 0 ? width_b : 1) + (rnd_int(3) == 0 ? rnd_int(9) : 0);
    t->ldc = (t->N > 0 ? t->N : 1) + (rnd_int(3) == 0 ? 1 + rnd_int(9) : 0);
    t->alpha = alphas[rnd_int(5)];
    t->beta = betas[rnd_int(5)];
    t->use_epilogue = rnd_int(2);
    if (t->use_epilogue) {
        t->use_scale = rnd_int(2);
        t->use_shift = rnd_int(2);
        static const int common[] = {DN_ACT_LINEAR, DN_ACT_LEAKY, DN_ACT_RELU, DN_ACT_LOGISTIC};
        do {
            t->activation = rnd_int(3) ? common[rnd_int(4)] : rnd_int(DN_ACT_COUNT);
        } while (t->activation == DN_ACT_STAIR); /* discontinuous: no tolerance works */
    } else {
        t->activation = DN_ACT_LINEAR;
    }
    t->offset_a = rnd_int(4);
    t->offset_b = rnd_int(4);
    t->offset_c = rnd_int(4);
}

static int test_random(dn_pool *const *pools, int n_pools, int cases)
{
    int failed = 0;
    for (int n = 0; n < cases; n++) {
        gemm_case t;
        random_case(&t, n % 10 == 9 ? 520 : 300);
        int p = rnd_int(n_pools);
        char what[64];
        snprintf(what, sizeof what, "random #%d (%d threads)", n, dn_pool_threads(pools[p]));
        if (run_case(&t, pools[p], what)) failed++;
    }
    printf("  random problems: %d of %d failed\n", failed, cases);
    return failed;
}

// ---- bit-identity across thread counts --------------------------------------

static int test_bit_identity(dn_pool *const *pools, int n_pools)
{
    /* M, N, K, trans_a, trans_b: several tasks and K blocks each */
    static const int shapes[][5] = {
        {16, 3000, 27, 0, 0},  {37, 700, 300, 0, 0},  {200, 169, 600, 0, 0},
        {128, 169, 576, 1, 0}, {96, 300, 700, 0, 1},  {13, 40, 5000, 0, 1},
        {300, 150, 260, 1, 1}, {1, 2000, 300, 0, 1},  {250, 33, 1029, 1, 0},
        {1, 1999, 301, 1, 0},  {1, 3001, 77, 0, 0},
    };
    int failed = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gemm_case t = {
            .trans_a = shapes[s][3], .trans_b = shapes[s][4],
            .M = shapes[s][0], .N = shapes[s][1], .K = shapes[s][2],
            .alpha = 0.75f, .beta = s % 2 ? 0.5f : 0.f,
            .use_epilogue = 1, .use_scale = 1, .use_shift = 1,
            .activation = s % 3 == 0 ? DN_ACT_LEAKY : (s % 3 == 1 ? DN_ACT_LOGISTIC : DN_ACT_LINEAR),
        };
        t.lda = (t.trans_a ? t.M : t.K) + (int)(s % 3);
        t.ldb = (t.trans_b ? t.K : t.N) + (int)(s % 2);
        t.ldc = t.N + (int)(s % 4);
        case_data d;
        make_case_data(&t, &d);
        size_t span = matrix_span(t.M, t.N, t.ldc);
        float *first = malloc(span * sizeof(float));
        float *again = malloc(span * sizeof(float));
        memcpy(first, d.c_old, span * sizeof(float));
        call_gemm(&t, &d, first, NULL);
        char label[512];
        describe(&t, "bit-identity reference", label, sizeof label);
        int bad = check_result(&t, d.A, d.B, d.c_old, first, d.scale, d.shift, label);
        for (int p = 0; p < n_pools; p++) {
            for (int repeat = 0; repeat < 2; repeat++) {
                memcpy(again, d.c_old, span * sizeof(float));
                call_gemm(&t, &d, again, pools[p]);
                if (memcmp(first, again, span * sizeof(float)) != 0) {
                    describe(&t, "bit-identity", label, sizeof label);
                    printf("  FAIL %s: %d threads differ from 1 thread\n", label,
                           dn_pool_threads(pools[p]));
                    bad++;
                }
            }
        }
        if (bad) failed++;
        free(first);
        free(again);
        free_case_data(&d);
    }
    printf("  bit-identity across 1..4 threads: %d shapes failed\n", failed);
    return failed;
}

// ---- special cases ----------------------------------------------------------

static int test_special(dn_pool *pool)
{
    int failed = 0;
    /* K == 0 and alpha == 0: C = beta * C (NaN ignored when beta == 0), then the epilogue */
    for (int variant = 0; variant < 4; variant++) {
        gemm_case t = {
            .M = 7, .N = 19, .K = variant < 2 ? 0 : 33, .lda = 40, .ldb = 40, .ldc = 21,
            .alpha = variant < 2 ? 1.f : 0.f, .beta = variant % 2 ? 0.f : -0.5f,
            .use_epilogue = 1, .use_scale = 1, .use_shift = 1, .activation = DN_ACT_LEAKY,
        };
        if (run_case(&t, pool, variant < 2 ? "K == 0" : "alpha == 0")) failed++;
    }
    /* M == 0 or N == 0: nothing written */
    float sentinel[4] = {1, 2, 3, 4}, a[4] = {1, 1, 1, 1};
    dn_gemm(pool, 0, 0, 0, 2, 2, 1.f, a, 2, a, 2, 0.f, sentinel, 2);
    dn_gemm(pool, 0, 0, 2, 0, 2, 1.f, a, 2, a, 2, 0.f, sentinel, 2);
    if (sentinel[0] != 1 || sentinel[3] != 4) {
        printf("  FAIL: M == 0 or N == 0 wrote to C\n");
        failed++;
    }
    /* dn_gemm is dn_gemm_ex without an epilogue, bit for bit */
    gemm_case t = {.M = 45, .N = 77, .K = 300, .lda = 300, .ldb = 77, .ldc = 77, .alpha = 1.f,
                   .beta = 1.f, .activation = DN_ACT_LINEAR};
    case_data d;
    make_case_data(&t, &d);
    float *plain = malloc(45 * 77 * sizeof(float)), *ex = malloc(45 * 77 * sizeof(float));
    memcpy(plain, d.c_old, 45 * 77 * sizeof(float));
    memcpy(ex, d.c_old, 45 * 77 * sizeof(float));
    dn_gemm(pool, 0, 0, 45, 77, 300, 1.f, d.A, 300, d.B, 77, 1.f, plain, 77);
    dn_gemm_ex(pool, 0, 0, 45, 77, 300, 1.f, d.A, 300, d.B, 77, 1.f, ex, 77, NULL);
    if (memcmp(plain, ex, 45 * 77 * sizeof(float)) != 0) {
        printf("  FAIL: dn_gemm and dn_gemm_ex(NULL) differ\n");
        failed++;
    }
    free(plain);
    free(ex);
    free_case_data(&d);
    printf("  special cases: %d failed\n", failed);
    return failed;
}

// ---- allocation failure -----------------------------------------------------

/* The library allocates its packing buffers with posix_memalign; this
 * definition replaces libc's in the test program so that it can fail. */
static volatile int fail_aligned_allocations;

int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (fail_aligned_allocations) return 12; /* ENOMEM */
    size_t rounded = (size + alignment - 1) / alignment * alignment;
    *out = aligned_alloc(alignment, rounded ? rounded : alignment);
    return *out ? 0 : 12;
}

typedef struct {
    dn_pool *pool;
    int failed;
} failing_job;

/* In a new thread (whose packing buffers are still empty) with every
 * aligned allocation failing: the slow unpacked path must still be right. */
static void *run_without_memory(void *arg)
{
    failing_job *job = arg;
    static const int shapes[][5] = {{37, 45, 300, 0, 0}, {20, 70, 33, 1, 1}, {64, 90, 50, 0, 1}};
    fail_aligned_allocations = 1;
    for (int s = 0; s < 3; s++) {
        gemm_case t = {
            .M = shapes[s][0], .N = shapes[s][1], .K = shapes[s][2],
            .trans_a = shapes[s][3], .trans_b = shapes[s][4],
            .alpha = 1.5f, .beta = s == 1 ? 0.f : 0.5f, .use_epilogue = 1,
            .use_scale = 1, .use_shift = 1, .activation = DN_ACT_LEAKY,
        };
        t.lda = t.trans_a ? t.M : t.K;
        t.ldb = t.trans_b ? t.K : t.N;
        t.ldc = t.N + 1;
        case_data d;
        fail_aligned_allocations = 0; /* the test's own data */
        make_case_data(&t, &d);
        fail_aligned_allocations = 1;
        call_gemm(&t, &d, d.C, s == 2 ? job->pool : NULL);
        fail_aligned_allocations = 0;
        char label[512];
        describe(&t, "no memory for packing", label, sizeof label);
        if (check_result(&t, d.A, d.B, d.c_old, d.C, d.scale, d.shift, label)) job->failed++;
        free_case_data(&d);
    }
    return NULL;
}

static int test_allocation_failure(dn_pool *pool)
{
    failing_job job = {pool, 0};
    pthread_t thread;
    if (pthread_create(&thread, NULL, run_without_memory, &job) != 0) {
        printf("  FAIL: could not start a thread\n");
        return 1;
    }
    pthread_join(thread, NULL);
    printf("  without memory for packing: %d failed\n", job.failed);
    return job.failed;
}

// ---- one kernel (child process) ---------------------------------------------

static int run_child(void)
{
    const char *wanted = getenv("PYDARKNET_GEMM");
    const char *running = dn_gemm_kernel_name();
    if (!wanted) wanted = running;
    if (!cpu_supports(wanted)) {
        const char *expected = strcmp(wanted, "avx512") == 0 && cpu_supports("avx2") ? "avx2"
                                                                                    : "generic";
        if (strcmp(running, expected) != 0) {
            printf("kernel %s: FAIL: CPU lacks it, expected fallback %s, got %s\n", wanted,
                   expected, running);
            return 1;
        }
        printf("kernel %s: skipped (CPU lacks it; fell back to %s as expected)\n", wanted, running);
        return 0;
    }
    if (strcmp(running, wanted) != 0) {
        printf("kernel %s: FAIL: PYDARKNET_GEMM=%s but the library runs %s\n", wanted, wanted,
               running);
        return 1;
    }
    printf("kernel %s:\n", running);
    fflush(stdout);

    dn_pool *pools[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        if (dn_pool_create(i + 2, &pools[i]) != DN_OK) {
            printf("  FAIL: could not create a pool\n");
            return 1;
        }
    dn_pool *random_pools[3] = {NULL, pools[0], pools[1]};
    const char *quick = getenv("GEMM_TEST_QUICK");
    int cases = (quick && *quick == '1') ? 120 : 500;
    int failed = 0;
    failed += test_random(random_pools, 3, cases);
    failed += test_bit_identity(pools, 3);
    failed += test_special(pools[0]);
    failed += test_allocation_failure(pools[0]);
    for (int i = 0; i < 3; i++) dn_pool_free(pools[i]);
    printf("kernel %s: %s\n", running, failed ? "FAILED" : "passed");
    return failed ? 1 : 0;
}

int main(int argc, char **argv) { return run_kernel_tests(argc, argv, "GEMM_TEST_SEED", "gemm", run_child); }
