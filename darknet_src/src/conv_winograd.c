/* Winograd F(4x4, 3x3) convolution (conv_winograd.h).
 *
 * Interpolation points 0, 1, -1, 1/2, -2 and infinity (Barabasz, Anderson,
 * Soodhalter & Gregg, "Error analysis and improving the accuracy of Winograd
 * convolution for deep neural networks", ACM TOMS 2020): in float32, summing
 * 16..1024 channels, their worst error was 2.5x smaller than that of the
 * usual 0, 1, -1, 2, -2 (5e-6 against 1.3e-5 of the output's scale at 1024
 * channels; a direct sum leaves ~4e-7):
 *
 *   B^T = [ 1 -3/2  -2   3/2  1   0 ]   G = [   1      0     0   ]   A^T = [ 1 1  1  1    1 0 ]
 *         [ 0  -1   1/2  5/2  1   0 ]       [  1/3   1/3   1/3  ]         [ 0 1 -1 1/2 -2 0 ]
 *         [ 0   1  -5/2  1/2  1   0 ]       [ -1/3   1/3  -1/3  ]         [ 0 1  1 1/4  4 0 ]
 *         [ 0  -2   -1   2    1   0 ]       [-16/15 -8/15 -4/15 ]         [ 0 1 -1 1/8 -8 1 ]
 *         [ 0  1/2  -1  -1/2  1   0 ]       [  1/15 -2/15  4/15 ]
 *         [ 0   1  -3/2  -2  3/2  1 ]       [   0      0     1   ]
 *
 * One image goes through three passes over the pool:
 *   1. V[p][c][t] = (B^T d B)[p]: the input patch d of every channel c and
 *      tile t; one task per channel.
 *   2. M[p] = U[p] V[p] for the 36 points p: dn_gemm_packed_batch with the
 *      weights' U = G g G^T packed once (dn_winograd_transform_weights).
 *   3. out = act((A^T m A) * scale + shift) of every filter's tiles, written
 *      into the output image; one task per filter.
 * Every value is computed by one task whatever the thread count, so results
 * are the same bits for any pool.
 *
 * The transforms work on 8 horizontally neighbouring tiles at once, one per
 * vector lane.  For that, each input row is first split by column mod 4
 * ("phases"): column j of the 6x6 patches of 8 neighbouring tiles is then
 * one contiguous vector (phase j mod 4, from tile + j / 4).  The outputs are
 * put back in image order the inverse way.  Vectors are GCC / clang vector
 * extensions; the (de)interleaving has an AVX2 version chosen at run time
 * (with the GEMM kernel: PYDARKNET_GEMM=generic gives the portable one).
 * Both versions do the same float operations (no fused multiply-adds), so
 * only the GEMM kernel changes results between machines. */
#include "conv_winograd.h"

#include <string.h>

#include "activations.h"
#include "util.h"

#define TILE 4   /* outputs per tile side */
#define PATCH 6  /* inputs per tile side: TILE + 3 - 1 */
#define POINTS (PATCH * PATCH)
#define LANES 8  /* tiles per vector */

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

/* Helpers taking or returning vectors are always inlined: no call crosses an
 * ABI boundary, so GCC's note that 32-byte vectors pass differently without
 * AVX does not apply. */
#define INLINE static inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if defined(__x86_64__) || defined(__i386__)
#define WINOGRAD_AVX2 1
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#include <immintrin.h>
#else
#define WINOGRAD_AVX2 0
#endif

static int ceil_div(int x, int by) { return (x + by - 1) / by; }
static int round_up(int x, int to) { return ceil_div(x, to) * to; }

// ---- geometry ---------------------------------------------------------------

typedef struct {
    int channels, height, width, pad, filters;
    int out_h, out_w;
    int tiles_x, tiles_y, tiles;
    /* row stride of V[p][c]: the tiles, plus room for the lanes of the last
     * tile row's last vector that fall past the last tile.  M[p][f] has
     * rows of `tiles` floats: reads past a row's end see the next row (or
     * LANES floats of zeros after the last), and go nowhere. */
    size_t v_ld;
    /* a channel's rows split into 4 phases of plane_width tiles each */
    int plane_width;
    int row_floats; /* one output row of a tile row, before clipping */
} wino_shape;

static wino_shape make_shape(int channels, int height, int width, int pad, int filters)
{
    wino_shape s = {0};
    s.channels = channels;
    s.height = height;
    s.width = width;
    s.pad = pad;
    s.filters = filters;
    s.out_h = height + 2 * pad - 2;
    s.out_w = width + 2 * pad - 2;
    s.tiles_x = ceil_div(s.out_w, TILE);
    s.tiles_y = ceil_div(s.out_h, TILE);
    s.tiles = s.tiles_x * s.tiles_y;
    s.v_ld = (size_t)round_up(s.tiles, LANES) + LANES;
    /* the vectors of a tile row read tiles [0, round_up(tiles_x, 8)] */
    s.plane_width = round_up(s.tiles_x, LANES) + 1;
    s.row_floats = TILE * round_up(s.tiles_x, LANES);
    return s;
}

static size_t v_floats(const wino_shape *s) { return (size_t)POINTS * s->channels * s->v_ld; }
static size_t m_floats(const wino_shape *s) { return (size_t)POINTS * s->filters * s->tiles + LANES; }

/* The phase-split rows of one channel, and one zero-padded input row to
 * split them from. */
static size_t plane_floats(const wino_shape *s)
{
    return (size_t)(TILE * s->tiles_y + 2 + 1) * TILE * s->plane_width;
}

size_t dn_winograd_workspace_floats(int channels, int filters, int out_h, int out_w)
{
    wino_shape s = make_shape(channels, out_h, out_w, 1, filters); /* same tiles as the real pad */
    return v_floats(&s) + m_floats(&s);
}

size_t dn_winograd_weights_floats(int filters, int channels)
{
    return POINTS * dn_gemm_packed_a_floats(filters, channels);
}

// ---- vectors ----------------------------------------------------------------

INLINE v8 splat(float f) { return (v8){f, f, f, f, f, f, f, f}; }

INLINE v8 load8(const float *p)
{
    v8 x;
    memcpy(&x, p, sizeof x);
    return x;
}

INLINE void store8(float *p, const v8 *x) { memcpy(p, x, sizeof *x); }

/* darknet's leaky (x > 0 ? x : .1f * x) and relu (x * (x > 0)), as the GEMM's epilogue */
INLINE void leaky8(v8 *x)
{
    v8i positive = *x > splat(0.f);
    *x = (v8)(((v8i)*x & positive) | ((v8i)(*x * splat(.1f)) & ~positive));
}

INLINE void relu8(v8 *x)
{
    v8i positive = *x > splat(0.f);
    *x = *x * (v8)((v8i)splat(1.f) & positive);
}

// ---- the 1-D transforms -------------------------------------------------------

/* v = B^T d */
INLINE void input_1d(const v8 d[PATCH], v8 v[PATCH])
{
    const v8 half = splat(.5f), two = splat(2.f), three_halves = splat(1.5f);
    const v8 five_halves = splat(2.5f);
    v[0] = (d[0] + d[4]) + three_halves * (d[3] - d[1]) - two * d[2];
    v[1] = (d[4] - d[1]) + half * d[2] + five_halves * d[3];
    v[2] = (d[4] + d[1]) - five_halves * d[2] + half * d[3];
    v[3] = (d[4] - d[2]) + two * (d[3] - d[1]);
    v[4] = (d[4] - d[2]) + half * (d[1] - d[3]);
    v[5] = (d[1] + d[5]) + three_halves * (d[4] - d[2]) - two * d[3];
}

/* y = A^T m */
INLINE void output_1d(const v8 m[PATCH], v8 y[TILE])
{
    const v8 sum12 = m[1] + m[2], diff12 = m[1] - m[2];
    y[0] = (m[0] + sum12) + (m[3] + m[4]);
    y[1] = diff12 + splat(.5f) * m[3] - splat(2.f) * m[4];
    y[2] = sum12 + splat(.25f) * m[3] + splat(4.f) * m[4];
    y[3] = (diff12 + splat(.125f) * m[3] - splat(8.f) * m[4]) + m[5];
}

/* out = G in, in double (the weights are transformed once) */
static inline void weight_1d(const double in[3], double out[PATCH])
{
    const double third = 1. / 3, fifteenth = 1. / 15;
    out[0] = in[0];
    out[1] = (in[0] + in[1] + in[2]) * third;
    out[2] = (in[1] - in[0] - in[2]) * third;
    out[3] = -(16 * in[0] + 8 * in[1] + 4 * in[2]) * fifteenth;
    out[4] = (in[0] - 2 * in[1] + 4 * in[2]) * fifteenth;
    out[5] = in[2];
}

/* u = G g G^T of one 3x3 filter, p = 6 * row + column */
static void weight_transform(const float g[9], double u[POINTS])
{
    double gg[3][PATCH]; /* (G g)^T: gg[j][a] = (G g)[a][j] */
    for (int j = 0; j < 3; j++) {
        const double column[3] = {g[j], g[3 + j], g[6 + j]};
        weight_1d(column, gg[j]);
    }
    for (int a = 0; a < PATCH; a++) {
        const double row[3] = {gg[0][a], gg[1][a], gg[2][a]};
        weight_1d(row, u + a * PATCH);
    }
}

// ---- weights ------------------------------------------------------------------

typedef struct {
    const float *weights;
    int filters, channels;
    dn_gemm_packed_a_layout layout; /* of each point's filters x channels matrix */
    float *u;
    size_t u_stride;                /* floats per point */
} weights_job;

/* Packed values per point gathered before they are copied out together. */
#define WEIGHT_CHUNK 256

/* Sliver s of the packed U of every point (filters [s * mr, s * mr + mr)),
 * in the layout's order: WEIGHT_CHUNK values of each point at a time into
 * `chunk`, then out to the 36 points' matrices. */
static void weights_task(void *ctx, int s, int thread)
{
    (void)thread;
    const weights_job *job = ctx;
    const dn_gemm_packed_a_layout *L = &job->layout;
    const int f0 = s * L->mr, rows = dn_min_int(L->mr, job->filters - f0);
    const int chunk_channels = WEIGHT_CHUNK / L->mr;
    float chunk[POINTS][WEIGHT_CHUNK];
    for (int c0 = 0, b = 0; c0 < job->channels; c0 += L->kc, b++) {
        const int k_len = dn_min_int(L->kc, job->channels - c0);
        float *u = job->u + b * L->block_floats + (size_t)s * ((size_t)L->mr * k_len + L->sliver_pad);
        for (int c1 = c0; c1 < c0 + k_len; c1 += chunk_channels) {
            const int n = dn_min_int(chunk_channels, c0 + k_len - c1) * L->mr;
            for (int at = 0; at < n; at++) { /* channel c1 + at / mr, row at % mr */
                const int c = c1 + at / L->mr, r = at % L->mr;
                double point[POINTS];
                if (r < rows)
                    weight_transform(job->weights + ((size_t)(f0 + r) * job->channels + c) * 9, point);
                else /* rows past the last filter */
                    for (int p = 0; p < POINTS; p++) point[p] = 0;
                for (int p = 0; p < POINTS; p++) chunk[p][at] = (float)point[p];
            }
            for (int p = 0; p < POINTS; p++)
                memcpy(u + p * job->u_stride, chunk[p], (size_t)n * sizeof(float));
            u += n;
        }
    }
}

void dn_winograd_transform_weights(dn_pool *pool, const float *weights, int filters, int channels,
                                   float *u)
{
    weights_job job = {weights, filters, channels, dn_gemm_packed_a_layout_of(filters, channels), u,
                       dn_gemm_packed_a_floats(filters, channels)};
    dn_pool_run(pool, ceil_div(filters, job.layout.mr), weights_task, &job);
}

// ---- input transform ------------------------------------------------------------

typedef void (*deinterleave_fn)(const float *line, int plane_width, float *dst);
typedef void (*interleave_fn)(const v8 y[TILE][TILE], float *rows, int row_floats);

typedef struct {
    wino_shape s;
    const float *input;
    float *output;
    float *v, *m;          /* V and M of the whole image */
    const float *scale, *shift;
    int activation;
    int failed;
} wino_job;

/* line[i] = row[i - pad] (0 outside the row), i < n. */
static void pad_row(const float *row, int width, int pad, int n, float *line)
{
    const int lead = dn_min_int(pad, n), copied = dn_max_int(0, dn_min_int(width, n - lead));
    memset(line, 0, (size_t)lead * sizeof(float));
    memcpy(line + lead, row, (size_t)copied * sizeof(float));
    memset(line + lead + copied, 0, (size_t)(n - lead - copied) * sizeof(float));
}

/* dst[q * plane_width + t] = line[4 t + q]: a padded row split into phases. */
static void deinterleave_generic(const float *line, int plane_width, float *dst)
{
    for (int t = 0; t < plane_width; t++)
        for (int q = 0; q < TILE; q++) dst[q * plane_width + t] = line[TILE * t + q];
}

#if WINOGRAD_AVX2
/* The same, 8 tiles (32 floats) at a time: a 4 x 8 transpose within
 * 128-bit lanes (tiles 0-3 low, 4-7 high). */
TARGET_AVX2 static void deinterleave_avx2(const float *line, int plane_width, float *dst)
{
    int t = 0;
    for (; t + LANES <= plane_width; t += LANES) {
        const float *x = line + TILE * t;
        __m256 a0 = _mm256_loadu_ps(x), a1 = _mm256_loadu_ps(x + 8);
        __m256 a2 = _mm256_loadu_ps(x + 16), a3 = _mm256_loadu_ps(x + 24);
        __m256 t0 = _mm256_permute2f128_ps(a0, a2, 0x20), t1 = _mm256_permute2f128_ps(a0, a2, 0x31);
        __m256 t2 = _mm256_permute2f128_ps(a1, a3, 0x20), t3 = _mm256_permute2f128_ps(a1, a3, 0x31);
        __m256 u0 = _mm256_unpacklo_ps(t0, t1), u1 = _mm256_unpackhi_ps(t0, t1);
        __m256 u2 = _mm256_unpacklo_ps(t2, t3), u3 = _mm256_unpackhi_ps(t2, t3);
        _mm256_storeu_ps(dst + t, _mm256_shuffle_ps(u0, u2, 0x44));
        _mm256_storeu_ps(dst + plane_width + t, _mm256_shuffle_ps(u0, u2, 0xEE));
        _mm256_storeu_ps(dst + 2 * plane_width + t, _mm256_shuffle_ps(u1, u3, 0x44));
        _mm256_storeu_ps(dst + 3 * plane_width + t, _mm256_shuffle_ps(u1, u3, 0xEE));
    }
    for (; t < plane_width; t++)
        for (int q = 0; q < TILE; q++) dst[q * plane_width + t] = line[TILE * t + q];
}
#endif

/* V[p][c][tile .. tile + 8) for tiles (ty, tx0 .. tx0 + 8) of one channel's
 * phase-split plane: t = B^T d (columns), then t B (rows). */
INLINE void input_group(const float *plane, int plane_width, int ty, int tx0, float *v,
                        size_t point_stride)
{
    v8 t[PATCH][PATCH];
    for (int j = 0; j < PATCH; j++) {
        v8 d[PATCH], out[PATCH];
        const float *column = plane + (size_t)(TILE * ty * TILE + j % TILE) * plane_width + tx0 + j / TILE;
        for (int i = 0; i < PATCH; i++) d[i] = load8(column + (size_t)i * TILE * plane_width);
        input_1d(d, out);
        for (int k = 0; k < PATCH; k++) t[k][j] = out[k];
    }
    for (int k = 0; k < PATCH; k++) {
        v8 out[PATCH];
        input_1d(t[k], out);
        for (int l = 0; l < PATCH; l++) store8(v + (size_t)(k * PATCH + l) * point_stride, &out[l]);
    }
}

/* Pass 1, channel c: its rows split into phases (the plane), then every
 * tile's V (tile t = ty * tiles_x + tx).  A tile row's last vector may
 * write lanes past the row's last tile: into the next tile row (rewritten
 * next) or into the slack of v_ld. */
INLINE void input_channel(wino_job *job, int c, deinterleave_fn deinterleave)
{
    const wino_shape *s = &job->s;
    float *plane = dn_thread_scratch(plane_floats(s));
    if (!plane) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    const size_t row_floats = (size_t)TILE * s->plane_width;
    const int plane_rows = TILE * s->tiles_y + 2;
    float *line = plane + plane_rows * row_floats;
    const float *image = job->input + (size_t)c * s->height * s->width;
    for (int r = 0; r < plane_rows; r++) {
        const int iy = r - s->pad;
        if (iy < 0 || iy >= s->height) {
            memset(plane + r * row_floats, 0, row_floats * sizeof(float));
            continue;
        }
        pad_row(image + (size_t)iy * s->width, s->width, s->pad, (int)row_floats, line);
        deinterleave(line, s->plane_width, plane + r * row_floats);
    }
    float *v = job->v + (size_t)c * s->v_ld;
    const size_t point_stride = (size_t)s->channels * s->v_ld;
    for (int ty = 0; ty < s->tiles_y; ty++)
        for (int tx0 = 0; tx0 < s->tiles_x; tx0 += LANES)
            input_group(plane, s->plane_width, ty, tx0, v + (size_t)ty * s->tiles_x + tx0,
                        point_stride);
}

static void input_task_generic(void *ctx, int c, int thread)
{
    (void)thread;
    input_channel(ctx, c, deinterleave_generic);
}

#if WINOGRAD_AVX2
TARGET_AVX2 static void input_task_avx2(void *ctx, int c, int thread)
{
    (void)thread;
    input_channel(ctx, c, deinterleave_avx2);
}
#endif

// ---- output transform -------------------------------------------------------------

/* rows[i * row_floats + 4 * lane + j] = y[i][j][lane]: 8 tiles back in image order. */
static void interleave_generic(const v8 y[TILE][TILE], float *rows, int row_floats)
{
    for (int i = 0; i < TILE; i++)
        for (int lane = 0; lane < LANES; lane++)
            for (int j = 0; j < TILE; j++) rows[(size_t)i * row_floats + TILE * lane + j] = y[i][j][lane];
}

#if WINOGRAD_AVX2
/* The inverse of deinterleave_avx2's transpose, for each of the 4 rows. */
TARGET_AVX2 static void interleave_avx2(const v8 y[TILE][TILE], float *rows, int row_floats)
{
    for (int i = 0; i < TILE; i++) {
        __m256 y0 = (__m256)y[i][0], y1 = (__m256)y[i][1], y2 = (__m256)y[i][2], y3 = (__m256)y[i][3];
        __m256 u0 = _mm256_unpacklo_ps(y0, y1), u1 = _mm256_unpackhi_ps(y0, y1);
        __m256 u2 = _mm256_unpacklo_ps(y2, y3), u3 = _mm256_unpackhi_ps(y2, y3);
        __m256 t0 = _mm256_shuffle_ps(u0, u2, 0x44), t1 = _mm256_shuffle_ps(u0, u2, 0xEE);
        __m256 t2 = _mm256_shuffle_ps(u1, u3, 0x44), t3 = _mm256_shuffle_ps(u1, u3, 0xEE);
        float *row = rows + (size_t)i * row_floats;
        _mm256_storeu_ps(row, _mm256_permute2f128_ps(t0, t1, 0x20));
        _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(t2, t3, 0x20));
        _mm256_storeu_ps(row + 16, _mm256_permute2f128_ps(t0, t1, 0x31));
        _mm256_storeu_ps(row + 24, _mm256_permute2f128_ps(t2, t3, 0x31));
    }
}
#endif

/* y = A^T m A of tiles tx0 .. tx0 + 8 (m at the first of them) */
INLINE void output_group(const float *m, size_t point_stride, v8 y[TILE][TILE])
{
    v8 t[TILE][PATCH];
    for (int l = 0; l < PATCH; l++) {
        v8 column[PATCH], out[TILE];
        for (int k = 0; k < PATCH; k++) column[k] = load8(m + (size_t)(k * PATCH + l) * point_stride);
        output_1d(column, out);
        for (int i = 0; i < TILE; i++) t[i][l] = out[i];
    }
    for (int i = 0; i < TILE; i++) output_1d(t[i], y[i]);
}

/* The GEMM epilogue's order: scale, then shift, then a vector activation
 * (the others are applied afterwards by dn_activate). */
INLINE void epilogue_group(v8 y[TILE][TILE], const wino_job *job, int f)
{
    const int scaled = job->scale != NULL, shifted = job->shift != NULL;
    const v8 scale = splat(scaled ? job->scale[f] : 1.f), shift = splat(shifted ? job->shift[f] : 0.f);
    for (int i = 0; i < TILE; i++)
        for (int j = 0; j < TILE; j++) {
            if (scaled) y[i][j] = y[i][j] * scale;
            if (shifted) y[i][j] = y[i][j] + shift;
            if (job->activation == DN_ACT_LEAKY) leaky8(&y[i][j]);
            else if (job->activation == DN_ACT_RELU) relu8(&y[i][j]);
        }
}

static int activation_is_vector(int activation)
{
    return activation == DN_ACT_LINEAR || activation == DN_ACT_LEAKY || activation == DN_ACT_RELU;
}

/* The valid part of one tile row's 4 output rows into the output plane. */
static void store_rows(const wino_job *job, const float *rows, int ty, float *plane)
{
    const wino_shape *s = &job->s;
    const int n_rows = dn_min_int(TILE, s->out_h - TILE * ty);
    for (int i = 0; i < n_rows; i++) {
        float *dst = plane + (size_t)(TILE * ty + i) * s->out_w;
        memcpy(dst, rows + (size_t)i * s->row_floats, (size_t)s->out_w * sizeof(float));
        if (!activation_is_vector(job->activation))
            for (int x = 0; x < s->out_w; x++) dst[x] = dn_activate(dst[x], (dn_activation)job->activation);
    }
}

/* Pass 3, filter f: each tile row through the output transform into a
 * buffer of 4 output rows, then into the image. */
INLINE void output_filter(wino_job *job, int f, interleave_fn interleave)
{
    const wino_shape *s = &job->s;
    float *rows = dn_thread_scratch((size_t)TILE * s->row_floats);
    if (!rows) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    const float *m = job->m + (size_t)f * s->tiles;
    const size_t point_stride = (size_t)s->filters * s->tiles;
    float *plane = job->output + (size_t)f * s->out_h * s->out_w;
    for (int ty = 0; ty < s->tiles_y; ty++) {
        for (int tx0 = 0; tx0 < s->tiles_x; tx0 += LANES) {
            v8 y[TILE][TILE];
            output_group(m + (size_t)ty * s->tiles_x + tx0, point_stride, y);
            epilogue_group(y, job, f);
            interleave(y, rows + TILE * tx0, s->row_floats);
        }
        store_rows(job, rows, ty, plane);
    }
}

static void output_task_generic(void *ctx, int f, int thread)
{
    (void)thread;
    output_filter(ctx, f, interleave_generic);
}

#if WINOGRAD_AVX2
TARGET_AVX2 static void output_task_avx2(void *ctx, int f, int thread)
{
    (void)thread;
    output_filter(ctx, f, interleave_avx2);
}
#endif

// ---- forward ------------------------------------------------------------------------

static int use_avx2(void)
{
    return WINOGRAD_AVX2 && strcmp(dn_gemm_kernel_name(), "generic") != 0;
}

dn_status dn_winograd_conv(dn_pool *pool, const float *input, int channels, int height, int width,
                           int pad, int filters, const float *u, float *output,
                           const dn_gemm_epilogue *epilogue, float *workspace)
{
    wino_job job = {make_shape(channels, height, width, pad, filters), input, output, workspace,
                    NULL, NULL, NULL, DN_ACT_LINEAR, 0};
    const wino_shape *s = &job.s;
    job.m = workspace + v_floats(s);
    if (epilogue) {
        job.scale = epilogue->row_scale;
        job.shift = epilogue->row_shift;
        if (epilogue->activation >= 0 && epilogue->activation < DN_ACT_COUNT)
            job.activation = epilogue->activation;
    }
    dn_task_fn input_task = input_task_generic, output_task = output_task_generic;
#if WINOGRAD_AVX2
    if (use_avx2()) {
        input_task = input_task_avx2;
        output_task = output_task_avx2;
    }
#endif
    dn_pool_run(pool, channels, input_task, &job);
    if (job.failed) return DN_ERR_OOM;
    dn_gemm_packed_batch(pool, POINTS, filters, s->tiles, channels, u,
                         dn_gemm_packed_a_floats(filters, channels), job.v, (int)s->v_ld,
                         (size_t)channels * s->v_ld, job.m, s->tiles, (size_t)filters * s->tiles);
    memset(job.m + m_floats(s) - LANES, 0, LANES * sizeof(float)); /* read past the last row */
    dn_pool_run(pool, filters, output_task, &job);
    return job.failed ? DN_ERR_OOM : DN_OK;
}
