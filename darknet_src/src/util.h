/* Small helpers: checked allocation, strings, a seeded random generator. */
#ifndef DN_UTIL_H
#define DN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "darknet.h"

/* Zeroed, 64-byte aligned floats; NULL (with the error set) on failure.
 * Free with dn_free. */
float *dn_alloc_floats(size_t n, const char *what);
void *dn_alloc_zeroed(size_t n_items, size_t item_size, const char *what);
void dn_free(void *p);

char *dn_strdup(const char *s);

/* Read a whole file; *size gets its length. */
dn_status dn_read_file(const char *path, char **data, size_t *size);


/* ---- random numbers (xoshiro128+ style, seeded, per owner) ------------- */
typedef struct {
    uint64_t s[2];
    int has_spare;   /* a second normal from the last Box-Muller pair */
    float spare;
} dn_rng;

void dn_rng_seed(dn_rng *rng, uint64_t seed);
uint64_t dn_rng_next(dn_rng *rng);
/* uniform in [0, 1) */
float dn_rng_uniform(dn_rng *rng);
/* uniform in [lo, hi) */
float dn_rng_range(dn_rng *rng, float lo, float hi);
/* standard normal */
float dn_rng_normal(dn_rng *rng);
/* integer in [0, n) */
int dn_rng_int(dn_rng *rng, int n);

static inline int dn_min_int(int a, int b) { return a < b ? a : b; }

/* The image counter `seen` plus `images` (>= 0), stopping at INT64_MAX
 * instead of overflowing: darknet's size_t counter never gets there, but a
 * .weights header or set_seen may start it anywhere up to INT64_MAX. */
static inline int64_t dn_seen_add(int64_t seen, int64_t images)
{
    int64_t sum;
    return __builtin_add_overflow(seen, images, &sum) ? INT64_MAX : sum;
}

/* a * b for image counts (both >= 0), stopping at INT64_MAX */
static inline int64_t dn_count_mul(int64_t a, int64_t b)
{
    int64_t product;
    return __builtin_mul_overflow(a, b, &product) ? INT64_MAX : product;
}
static inline int dn_max_int(int a, int b) { return a > b ? a : b; }

#endif
