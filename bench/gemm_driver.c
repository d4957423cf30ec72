/* Times dn_gemm alone (no numpy needed) on the conv shapes of bench/gemm.py
 * or on shapes given on the command line.  Build from the repository root:
 *
 *   S=darknet_src/src
 *   gcc -std=gnu11 -O3 -pthread -fno-math-errno -ffp-contract=off -Idarknet_src/include -I$S \
 *       $S/gemm*.c $S/pool.c $S/error.c $S/util.c $S/activations.c \
 *       bench/gemm_driver.c -lm -o gemm_driver
 *   ./gemm_driver THREADS [M N K TRANS_A TRANS_B]...
 *
 * PYDARKNET_GEMM=generic|avx2|avx512 picks the kernel.  Prints the best of
 * repeated calls (at least half a second per shape) in GFLOP/s. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gemm.h"
#include "pool.h"

static const int default_shapes[][5] = {
    {16, 173056, 27, 0, 0},  {32, 43264, 144, 0, 0},  {64, 10816, 288, 0, 0},
    {128, 2704, 576, 0, 0},  {256, 676, 1152, 0, 0},  {512, 169, 2304, 0, 0},
    {1024, 169, 4608, 0, 0}, {1024, 169, 9216, 0, 0}, {125, 169, 1024, 0, 0},
    {255, 169, 512, 0, 0},   {128, 169, 256, 0, 0},   {256, 676, 3456, 0, 0},
    {64, 676, 512, 0, 0},    {64, 288, 10816, 0, 1},  {256, 1152, 676, 0, 1},
    {1024, 4608, 169, 0, 1}, {288, 10816, 64, 1, 0},  {1152, 676, 256, 1, 0},
    {4608, 169, 1024, 1, 0}, {64, 1024, 4096, 0, 1},  {512, 676, 1152, 1, 1},
};

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *random_floats(size_t n)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n && x; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    return x;
}

static void time_shape(dn_pool *pool, int M, int N, int K, int ta, int tb)
{
    float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N);
    float *C = random_floats((size_t)M * N);
    if (!A || !B || !C) {
        printf("out of memory for %d x %d x %d\n", M, N, K);
        goto done;
    }
    int lda = ta ? M : K, ldb = tb ? K : N;
    dn_gemm(pool, ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, N); /* warm-up */
    double best = 1e30, total = 0;
    for (int reps = 0; reps < 3 || total < 0.5; reps++) {
        double t0 = seconds();
        dn_gemm(pool, ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, N);
        double dt = seconds() - t0;
        total += dt;
        if (dt < best) best = dt;
    }
    printf("%5d %6d %6d  %d %d  %7.1f GFLOP/s\n", M, N, K, ta, tb, 2.0 * M * N * K / best / 1e9);
    fflush(stdout);
done:
    free(A);
    free(B);
    free(C);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    dn_pool *pool = NULL;
    if (threads > 1 && dn_pool_create(threads, &pool) != DN_OK) {
        printf("could not create a pool of %d threads\n", threads);
        return 1;
    }
    printf("kernel %s, %d thread(s)\n    M      N      K ta tb\n", dn_gemm_kernel_name(), threads);
    if (argc >= 7) {
        for (int a = 2; a + 4 < argc; a += 5)
            time_shape(pool, atoi(argv[a]), atoi(argv[a + 1]), atoi(argv[a + 2]),
                       atoi(argv[a + 3]), atoi(argv[a + 4]));
    } else {
        for (size_t s = 0; s < sizeof default_shapes / sizeof default_shapes[0]; s++)
            time_shape(pool, default_shapes[s][0], default_shapes[s][1], default_shapes[s][2],
                       default_shapes[s][3], default_shapes[s][4]);
    }
    dn_pool_free(pool);
    return 0;
}
