/* Tests of the convolution fast paths (darknet_src/src/gemm.c entry points
 * with packed A / implicit im2col, darknet_src/src/conv_winograd.c):
 *
 *   - dn_gemm_conv (A packed or not) and dn_gemm_packed give exactly the
 *     bits of dn_im2col + dn_gemm_ex, for M >= 2 (M == 1 only to tolerance:
 *     dn_gemm_ex runs it as a vector product), on random shapes: kernel
 *     sizes 1-5, strides 1-3, paddings 0-3, every activation, with and
 *     without scale / shift;
 *   - dn_gemm_packed_batch gives each product the bits of dn_gemm_packed;
 *   - dn_winograd_conv against a double-precision direct convolution (the
 *     tolerance is explained at WINOGRAD_TOL), and with an epilogue exactly
 *     the epilogue applied to its output;
 *   - all of them the same bits inline and on pools of 2 and 3 threads.
 *
 * Like test_gemm.c, the program re-runs itself once per GEMM kernel
 * (PYDARKNET_GEMM=generic|avx2|avx512; missing ones are skipped), which also
 * switches the Winograd transforms between their portable and AVX2 forms.
 * CONV_TEST_QUICK=1 runs fewer cases (sanitizer builds).  Exit status 0 when
 * everything passed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "conv_winograd.h"
#include "gemm.h"
#include "im2col.h"
#include "pool.h"

#define TEST_RNG_START 0x2545F4914F6CDD1Dull
#include "kernel_tests.h"

// ---- random numbers (the generator: kernel_tests.h) ------------------------

/* Exactly n floats (so that a sanitizer sees any read past the end). */
static float *random_floats(size_t n, float lo, float hi)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = rnd_uniform(lo, hi);
    return p;
}

static int pick(const int *values, int n) { return values[rnd_int(n)]; }

// ---- a convolution case -----------------------------------------------------

typedef struct {
    int channels, height, width, filters, ksize, stride, pad;
    int out_h, out_w;
    int use_scale, use_shift, activation;
} conv_case;

typedef struct {
    float *image, *weights, *scale, *shift;
} conv_data;

static void make_data(const conv_case *t, conv_data *d)
{
    d->image = random_floats((size_t)t->channels * t->height * t->width, -.5f, 1.f);
    d->weights = random_floats((size_t)t->filters * t->channels * t->ksize * t->ksize, -.5f, .5f);
    d->scale = random_floats((size_t)t->filters, .5f, 1.5f);
    d->shift = random_floats((size_t)t->filters, -.5f, .5f);
}

static void free_data(conv_data *d)
{
    free(d->image);
    free(d->weights);
    free(d->scale);
    free(d->shift);
}

static dn_gemm_epilogue epilogue_of(const conv_case *t, const conv_data *d)
{
    dn_gemm_epilogue e = {t->use_scale ? d->scale : NULL, t->use_shift ? d->shift : NULL,
                          t->activation};
    return e;
}

static size_t out_floats(const conv_case *t) { return (size_t)t->filters * t->out_h * t->out_w; }

static void describe(const conv_case *t, char *out, size_t size)
{
    snprintf(out, size, "C=%d %dx%d F=%d k=%d s=%d p=%d scale=%d shift=%d act=%s", t->channels,
             t->height, t->width, t->filters, t->ksize, t->stride, t->pad, t->use_scale,
             t->use_shift, dn_activation_name((dn_activation)t->activation));
}

/* Counts the floats of a and b whose bits differ. */
static size_t bits_differ(const float *a, const float *b, size_t n)
{
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return differ;
}

// ---- packed / implicit im2col GEMM: the plain path's bits --------------------------

/* The plain path: dn_im2col, then dn_gemm_ex. */
static void plain_conv(dn_pool *pool, const conv_case *t, const conv_data *d, float *out)
{
    const int K = t->channels * t->ksize * t->ksize, N = t->out_h * t->out_w;
    float *columns = malloc((size_t)K * N * sizeof(float));
    dn_im2col(pool, d->image, t->channels, t->height, t->width, t->ksize, t->stride, t->pad, columns);
    dn_gemm_epilogue e = epilogue_of(t, d);
    dn_gemm_ex(pool, 0, 0, t->filters, N, K, 1.f, d->weights, K, columns, N, 0.f, out, N, &e);
    free(columns);
}

/* dn_gemm_conv with A packed (packed = 1) or not; 1x1 stride-1 unpadded
 * convolutions also through dn_gemm_packed, which reads the image as B. */
static void fast_conv(dn_pool *pool, const conv_case *t, const conv_data *d, int packed,
                      int image_as_b, float *out)
{
    const int K = t->channels * t->ksize * t->ksize, N = t->out_h * t->out_w;
    float *a = NULL;
    if (packed) {
        a = malloc(dn_gemm_packed_a_floats(t->filters, K) * sizeof(float));
        dn_gemm_pack_a(pool, t->filters, K, d->weights, K, a);
    }
    dn_gemm_epilogue e = epilogue_of(t, d);
    if (image_as_b) {
        dn_gemm_packed(pool, t->filters, N, K, a, d->image, N, out, N, &e);
    } else {
        dn_gemm_im2col columns = {d->image, t->channels, t->height, t->width, t->ksize,
                                  t->stride, t->pad, t->out_h, t->out_w};
        dn_gemm_conv(pool, t->filters, packed ? NULL : d->weights, a, &columns, out, &e);
    }
    free(a);
}

static conv_case random_gemm_case(void)
{
    static const int sizes[] = {1, 1, 2, 3, 3, 5};
    static const int channels[] = {1, 2, 3, 4, 7, 16, 33, 64};
    static const int filters[] = {2, 3, 5, 6, 7, 12, 16, 17, 40, 97};
    conv_case t = {0};
    t.ksize = pick(sizes, 6);
    t.stride = 1 + rnd_int(3);
    t.pad = rnd_int(t.ksize / 2 + 2);
    t.channels = pick(channels, 8);
    t.filters = pick(filters, 10);
    t.height = 1 + rnd_int(40);
    t.width = 1 + rnd_int(40);
    if (t.height + 2 * t.pad < t.ksize) t.height = t.ksize;
    if (t.width + 2 * t.pad < t.ksize) t.width = t.ksize;
    t.out_h = (t.height + 2 * t.pad - t.ksize) / t.stride + 1;
    t.out_w = (t.width + 2 * t.pad - t.ksize) / t.stride + 1;
    t.use_scale = rnd_int(2);
    t.use_shift = rnd_int(2);
    t.activation = rnd_int(DN_ACT_COUNT);
    return t;
}

/* Implicit-im2col and packed-A products against the plain path, bit for bit. */
static int test_gemm_paths(dn_pool *const *pools, int n_pools, int cases)
{
    int failed = 0;
    for (int c = 0; c < cases; c++) {
        conv_case t = random_gemm_case();
        conv_data d;
        make_data(&t, &d);
        size_t n = out_floats(&t);
        float *expected = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        dn_pool *pool = pools[c % n_pools];
        plain_conv(pool, &t, &d, expected);
        const int image_is_b = t.ksize == 1 && t.stride == 1 && t.pad == 0;
        for (int variant = 0; variant < (image_is_b ? 3 : 2); variant++) {
            memset(got, 0xff, n * sizeof(float)); /* NaN: every value must be written */
            fast_conv(pools[(c + variant) % n_pools], &t, &d, variant != 1, variant == 2, got);
            size_t differ = bits_differ(got, expected, n);
            if (differ) {
                char text[256];
                describe(&t, text, sizeof text);
                printf("  FAIL gemm path %d: %zu of %zu values differ from im2col + gemm (%s)\n",
                       variant, differ, n, text);
                failed++;
            }
        }
        free(expected);
        free(got);
        free_data(&d);
    }
    printf("  packed / implicit-im2col GEMM, %d random convolutions: %d failed\n", cases, failed);
    return failed;
}

/* count products at once == one at a time. */
static int test_batch(dn_pool *const *pools, int n_pools)
{
    static const int shapes[][4] = {{36, 40, 17, 33}, {36, 7, 300, 9}, {5, 130, 64, 200},
                                    {1, 12, 3, 1}, {16, 1, 5, 70}};
    int failed = 0;
    for (int s = 0; s < 5; s++) {
        const int count = shapes[s][0], M = shapes[s][1], K = shapes[s][2], N = shapes[s][3];
        const int ldb = N + 3, ldc = N + 5;
        const size_t a_stride = dn_gemm_packed_a_floats(M, K) + 7;
        const size_t b_stride = (size_t)K * ldb + 1, c_stride = (size_t)M * ldc + 2;
        float *a = random_floats((size_t)count * M * K, -1.f, 1.f);
        float *packed = malloc((size_t)count * a_stride * sizeof(float));
        for (int i = 0; i < count; i++)
            dn_gemm_pack_a(pools[0], M, K, a + (size_t)i * M * K, K, packed + i * a_stride);
        float *b = random_floats((size_t)count * b_stride, -1.f, 1.f);
        float *one = malloc((size_t)count * c_stride * sizeof(float));
        float *all = malloc((size_t)count * c_stride * sizeof(float));
        memset(one, 0, (size_t)count * c_stride * sizeof(float));
        memset(all, 0, (size_t)count * c_stride * sizeof(float));
        for (int i = 0; i < count; i++)
            dn_gemm_packed(pools[0], M, N, K, packed + i * a_stride, b + i * b_stride, ldb,
                           one + i * c_stride, ldc, NULL);
        for (int p = 0; p < n_pools; p++) {
            dn_gemm_packed_batch(pools[p], count, M, N, K, packed, a_stride, b, ldb, b_stride, all,
                                 ldc, c_stride);
            size_t differ = bits_differ(one, all, (size_t)count * c_stride);
            if (differ) {
                printf("  FAIL batch %dx(%dx%dx%d) pool %d: %zu values differ\n", count, M, K, N,
                       p, differ);
                failed++;
            }
        }
        free(a);
        free(packed);
        free(b);
        free(one);
        free(all);
    }
    printf("  batched products: %d failed\n", failed);
    return failed;
}

// ---- Winograd ---------------------------------------------------------------

/* Tolerance of Winograd F(4x4, 3x3), relative to the largest |output| of
 * the layer.  The transforms regroup each 3x3 x C sum through matrices
 * with entries up to 8 (A^T) and 5/2 (B^T), so the float32 rounding of the
 * transformed values is that much larger than a direct sum's: measured
 * worst 2-4e-6 of the output scale over these shapes (a direct float sum
 * gives ~2e-7).  A wrong coefficient, a misplaced tile or a bad border
 * gives errors of order 1e-1. */
#define WINOGRAD_TOL 3e-5

/* out[f][y][x] = sum over c, ky, kx of w * image, in double, no epilogue. */
static void direct_conv(const conv_case *t, const conv_data *d, double *out)
{
    for (int f = 0; f < t->filters; f++)
        for (int y = 0; y < t->out_h; y++)
            for (int x = 0; x < t->out_w; x++) {
                double sum = 0;
                for (int c = 0; c < t->channels; c++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y + ky - t->pad, ix = x + kx - t->pad;
                            if (iy < 0 || iy >= t->height || ix < 0 || ix >= t->width) continue;
                            sum += (double)d->weights[((size_t)(f * t->channels + c) * 3 + ky) * 3 + kx] *
                                   d->image[((size_t)c * t->height + iy) * t->width + ix];
                        }
                out[((size_t)f * t->out_h + y) * t->out_w + x] = sum;
            }
}

static conv_case random_winograd_case(int quick)
{
    static const int channels[] = {1, 2, 3, 8, 16, 31, 64, 130, 300};
    static const int filters[] = {1, 2, 5, 8, 16, 17, 40, 96, 257, 520};
    conv_case t = {0};
    t.ksize = 3;
    t.stride = 1;
    t.pad = rnd_int(3);
    t.channels = pick(channels, quick ? 6 : 9);
    t.filters = pick(filters, quick ? 7 : 10);
    t.height = 1 + rnd_int(45);
    t.width = 1 + rnd_int(45);
    if (t.height + 2 * t.pad < 3) t.height = 3;
    if (t.width + 2 * t.pad < 3) t.width = 3;
    t.out_h = t.height + 2 * t.pad - 2;
    t.out_w = t.width + 2 * t.pad - 2;
    t.use_scale = rnd_int(2);
    t.use_shift = rnd_int(2);
    t.activation = rnd_int(DN_ACT_COUNT);
    return t;
}

/* Runs dn_winograd_conv; 0 on success. */
static int winograd(dn_pool *pool, const conv_case *t, const conv_data *d, const float *u,
                    const dn_gemm_epilogue *e, float *out)
{
    size_t ws = dn_winograd_workspace_floats(t->channels, t->filters, t->out_h, t->out_w);
    float *workspace = malloc(ws * sizeof(float));
    dn_status st = dn_winograd_conv(pool, d->image, t->channels, t->height, t->width, t->pad,
                                    t->filters, u, out, e, workspace);
    free(workspace);
    return st != DN_OK;
}

/* Winograd's output against the direct sum; returns 1 when too far. */
static int check_winograd_accuracy(const conv_case *t, const float *got, const double *ref,
                                   double *worst)
{
    size_t n = out_floats(t);
    double scale = 0, err = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]);
        if (!(e <= err)) err = e; /* NaN counts as the worst */
    }
    double relative = err / (scale + 1e-30);
    if (relative > *worst || isnan(relative)) *worst = relative;
    return !(relative <= WINOGRAD_TOL);
}

/* The epilogue exactly as the GEMM's: act(x * scale + shift), from the raw output. */
static void apply_epilogue(const conv_case *t, const conv_data *d, const float *raw, float *out)
{
    const size_t plane = (size_t)t->out_h * t->out_w;
    for (int f = 0; f < t->filters; f++)
        for (size_t i = 0; i < plane; i++) {
            float x = raw[f * plane + i];
            if (t->use_scale) x *= d->scale[f];
            if (t->use_shift) x += d->shift[f];
            out[f * plane + i] = dn_activate(x, (dn_activation)t->activation);
        }
}

static int test_winograd(dn_pool *const *pools, int n_pools, int cases, int quick)
{
    int failed = 0;
    double worst = 0;
    for (int c = 0; c < cases; c++) {
        conv_case t = random_winograd_case(quick);
        conv_data d;
        make_data(&t, &d);
        char text[256];
        describe(&t, text, sizeof text);
        size_t n = out_floats(&t);
        float *u = malloc(dn_winograd_weights_floats(t.filters, t.channels) * sizeof(float));
        float *raw = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        float *expected = malloc(n * sizeof(float)), *again = malloc(n * sizeof(float));
        double *ref = malloc(n * sizeof(double));
        dn_winograd_transform_weights(pools[c % n_pools], d.weights, t.filters, t.channels, u);
        memset(raw, 0xff, n * sizeof(float)); /* NaN: every value must be written */
        int bad = winograd(pools[c % n_pools], &t, &d, u, NULL, raw);
        direct_conv(&t, &d, ref);
        if (bad || check_winograd_accuracy(&t, raw, ref, &worst)) {
            printf("  FAIL winograd: wrong values (%s)\n", text);
            failed++;
        }
        /* the epilogue, and the same bits on every pool */
        dn_gemm_epilogue e = epilogue_of(&t, &d);
        apply_epilogue(&t, &d, raw, expected);
        for (int p = 0; p < n_pools && !bad; p++) {
            memset(again, 0xff, n * sizeof(float));
            if (winograd(pools[p], &t, &d, u, &e, again) || bits_differ(again, expected, n)) {
                printf("  FAIL winograd: epilogue or pool %d changes bits (%s)\n", p, text);
                failed++;
                break;
            }
        }
        free(u);
        free(raw);
        free(got);
        free(expected);
        free(again);
        free(ref);
        free_data(&d);
    }
    printf("  winograd, %d random convolutions: %d failed (worst error %.2g of the output scale)\n",
           cases, failed, worst);
    return failed;
}

// ---- one kernel (child process) ---------------------------------------------

static int run_child(void)
{
    const char *wanted = getenv("PYDARKNET_GEMM");
    const char *running = dn_gemm_kernel_name();
    if (wanted && !cpu_supports(wanted)) {
        printf("kernel %s: skipped (CPU lacks it)\n", wanted);
        return 0;
    }
    if (wanted && strcmp(running, wanted) != 0) {
        printf("kernel %s: FAIL: the library runs %s\n", wanted, running);
        return 1;
    }
    printf("kernel %s:\n", running);
    fflush(stdout);
    dn_pool *pools[3] = {NULL, NULL, NULL}; /* inline, 2 and 3 threads */
    for (int i = 1; i < 3; i++)
        if (dn_pool_create(i + 1, &pools[i]) != DN_OK) {
            printf("  FAIL: could not create a pool\n");
            return 1;
        }
    const char *quick_env = getenv("CONV_TEST_QUICK");
    int quick = quick_env && *quick_env == '1';
    int failed = 0;
    failed += test_gemm_paths(pools, 3, quick ? 60 : 300);
    failed += test_batch(pools, 3);
    failed += test_winograd(pools, 3, quick ? 25 : 120, quick);
    for (int i = 1; i < 3; i++) dn_pool_free(pools[i]);
    printf("kernel %s: %s\n", running, failed ? "FAILED" : "passed");
    return failed ? 1 : 0;
}

int main(int argc, char **argv) { return run_kernel_tests(argc, argv, "CONV_TEST_SEED", "conv", run_child); }
