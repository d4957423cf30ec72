#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

float *dn_alloc_floats(size_t n, const char *what)
{
    return dn_alloc_zeroed(n, sizeof(float), what);
}

void *dn_alloc_zeroed(size_t n_items, size_t item_size, const char *what)
{
    if (n_items == 0) n_items = 1;
    if (item_size && n_items > SIZE_MAX / item_size) {
        DN_FAIL(DN_ERR_OOM, "allocation too large for %s", what);
        return NULL;
    }
    size_t bytes = n_items * item_size;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0 || !p) {
        DN_FAIL(DN_ERR_OOM, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

void dn_free(void *p) { free(p); }

char *dn_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) {
        DN_FAIL(DN_ERR_OOM, "out of memory copying a string");
        return NULL;
    }
    memcpy(d, s, n);
    return d;
}

dn_status dn_read_file(const char *path, char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return DN_FAIL(DN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return DN_FAIL(DN_ERR_IO, "'%s' is not a regular file", path);
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return DN_FAIL(DN_ERR_IO, "cannot seek in '%s': %s", path, strerror(errno));
    }
    long len = ftell(f);
    if (len < 0) {
        fclose(f);
        return DN_FAIL(DN_ERR_IO, "cannot read '%s' (is it a directory?)", path);
    }
    rewind(f);
    char *buf = malloc((size_t)len + 1);
    if (!buf) {
        fclose(f);
        return DN_FAIL(DN_ERR_OOM, "out of memory reading '%s' (%ld bytes)", path, len);
    }
    size_t got = fread(buf, 1, (size_t)len, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error || got != (size_t)len) {
        free(buf);
        return DN_FAIL(DN_ERR_IO, "error reading '%s'", path);
    }
    buf[len] = '\0';
    *data = buf;
    *size = (size_t)len;
    return DN_OK;
}

/* ---- random numbers ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void dn_rng_seed(dn_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    rng->s[0] = splitmix64(&x);
    rng->s[1] = splitmix64(&x);
    if (!rng->s[0] && !rng->s[1]) rng->s[1] = 1;
    rng->has_spare = 0;
    rng->spare = 0;
}

/* xoroshiro128+ */
uint64_t dn_rng_next(dn_rng *rng)
{
    uint64_t s0 = rng->s[0], s1 = rng->s[1];
    uint64_t result = s0 + s1;
    s1 ^= s0;
    rng->s[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    rng->s[1] = (s1 << 37) | (s1 >> 27);
    return result;
}

float dn_rng_uniform(dn_rng *rng) { return (float)(dn_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

float dn_rng_range(dn_rng *rng, float lo, float hi) { return lo + (hi - lo) * dn_rng_uniform(rng); }

/* Box-Muller: each pair of uniforms gives two normals; the second is kept
 * for the next call. */
float dn_rng_normal(dn_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    /* u1 in (0, 1] so the log is finite */
    double u1 = ((double)(dn_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(dn_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586 * u2;
    rng->spare = (float)(radius * sin(angle));
    rng->has_spare = 1;
    return (float)(radius * cos(angle));
}

int dn_rng_int(dn_rng *rng, int n) { return n <= 0 ? 0 : (int)(dn_rng_next(rng) % (uint64_t)n); }
