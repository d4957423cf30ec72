/* What tests/c/test_gemm.c and test_conv_fast.c share: a small xorshift
 * random generator (start value TEST_RNG_START, defined before including
 * this), and the driver that re-runs the program once per GEMM kernel
 * (PYDARKNET_GEMM=generic|avx2|avx512, "--child") and sums the failures. */
#ifndef KERNEL_TESTS_H
#define KERNEL_TESTS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// ---- random numbers ---------------------------------------------------------

static uint64_t rng_state = TEST_RNG_START;

static uint64_t rnd_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static int rnd_int(int n) { return (int)(rnd_next() % (uint64_t)n); }

static float rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((rnd_next() >> 40) * (1.0 / 16777216.0));
}

/* Whether this CPU can run GEMM kernel `kernel` (generic, avx2, avx512). */
static int cpu_supports(const char *kernel)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(kernel, "avx2") == 0) return avx2;
    if (strcmp(kernel, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return strcmp(kernel, "generic") == 0;
}

// ---- driver: one child per kernel -------------------------------------------

static int run_kernel(const char *self, const char *kernel)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        setenv("PYDARKNET_GEMM", kernel, 1);
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 1;
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* main() of a kernel test: `seed_env` (e.g. GEMM_TEST_SEED) varies the random
 * cases; with "--child" runs `run_child` under the kernel the parent chose,
 * else runs itself once per kernel and prints "<what> tests passed/FAILED". */
static int run_kernel_tests(int argc, char **argv, const char *seed_env, const char *what,
                            int (*run_child)(void))
{
    const char *seed = getenv(seed_env);
    if (seed) rng_state ^= strtoull(seed, NULL, 0) * 0x9E3779B97F4A7C15ull;
    if (argc > 1 && strcmp(argv[1], "--child") == 0) return run_child();
    static const char *const kernels[] = {"generic", "avx2", "avx512"};
    int failed = 0;
    for (int i = 0; i < 3; i++) failed += run_kernel(argv[0], kernels[i]);
    printf("%s tests %s\n", what, failed ? "FAILED" : "passed");
    return failed ? 1 : 0;
}

#endif
