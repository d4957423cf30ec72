#include "im2col.h"

#include <string.h>

typedef struct {
    const float *im;
    float *col;
    float *im_out;
    const float *col_in;
    int channels, height, width, ksize, stride, pad, out_h, out_w;
} im2col_job;

/* One column row: channel c, kernel offset (ky, kx). */
static void im2col_row(const im2col_job *j, int row)
{
    int kx = row % j->ksize, ky = (row / j->ksize) % j->ksize, c = row / j->ksize / j->ksize;
    const float *plane = j->im + (size_t)c * j->height * j->width;
    float *out = j->col + (size_t)row * j->out_h * j->out_w;
    for (int oy = 0; oy < j->out_h; oy++) {
        int iy = oy * j->stride + ky - j->pad;
        float *o = out + (size_t)oy * j->out_w;
        if (iy < 0 || iy >= j->height) {
            memset(o, 0, (size_t)j->out_w * sizeof *o);
            continue;
        }
        const float *src = plane + (size_t)iy * j->width;
        if (j->stride == 1) {
            /* a contiguous run, zero at the borders */
            int x0 = kx - j->pad;
            for (int ox = 0; ox < j->out_w; ox++) {
                int ix = x0 + ox;
                o[ox] = (ix >= 0 && ix < j->width) ? src[ix] : 0.f;
            }
        } else {
            for (int ox = 0; ox < j->out_w; ox++) {
                int ix = ox * j->stride + kx - j->pad;
                o[ox] = (ix >= 0 && ix < j->width) ? src[ix] : 0.f;
            }
        }
    }
}

static void im2col_task(void *p, int task, int thread)
{
    (void)thread;
    const im2col_job *j = p;
    int rows = j->channels * j->ksize * j->ksize;
    int per = (rows + 63) / 64;
    int r0 = task * per, r1 = r0 + per < rows ? r0 + per : rows;
    for (int r = r0; r < r1; r++) im2col_row(j, r);
}

void dn_im2col(dn_pool *pool, const float *im, int channels, int height, int width, int ksize,
               int stride, int pad, float *col)
{
    im2col_job j = {im, col, NULL, NULL, channels, height, width, ksize, stride, pad,
                    (height + 2 * pad - ksize) / stride + 1, (width + 2 * pad - ksize) / stride + 1};
    int rows = channels * ksize * ksize;
    int per = (rows + 63) / 64;
    int tasks = (rows + per - 1) / per;
    if ((size_t)rows * j.out_h * j.out_w < 65536) {
        for (int r = 0; r < rows; r++) im2col_row(&j, r);
        return;
    }
    dn_pool_run(pool, tasks, im2col_task, &j);
}

/* col2im: every column row adds into one channel plane; channels are split
 * across tasks so no two tasks write the same plane. */
static void col2im_channel(const im2col_job *j, int c)
{
    float *plane = j->im_out + (size_t)c * j->height * j->width;
    for (int ky = 0; ky < j->ksize; ky++)
        for (int kx = 0; kx < j->ksize; kx++) {
            int row = (c * j->ksize + ky) * j->ksize + kx;
            const float *in = j->col_in + (size_t)row * j->out_h * j->out_w;
            for (int oy = 0; oy < j->out_h; oy++) {
                int iy = oy * j->stride + ky - j->pad;
                if (iy < 0 || iy >= j->height) continue;
                float *dst = plane + (size_t)iy * j->width;
                const float *src = in + (size_t)oy * j->out_w;
                for (int ox = 0; ox < j->out_w; ox++) {
                    int ix = ox * j->stride + kx - j->pad;
                    if (ix >= 0 && ix < j->width) dst[ix] += src[ox];
                }
            }
        }
}

static void col2im_task(void *p, int task, int thread)
{
    (void)thread;
    col2im_channel(p, task);
}

void dn_col2im(dn_pool *pool, const float *col, int channels, int height, int width, int ksize,
               int stride, int pad, float *im)
{
    im2col_job j = {NULL, NULL, im, col, channels, height, width, ksize, stride, pad,
                    (height + 2 * pad - ksize) / stride + 1, (width + 2 * pad - ksize) / stride + 1};
    dn_pool_run(pool, channels, col2im_task, &j);
}
