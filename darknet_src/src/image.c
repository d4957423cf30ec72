/* Image operations, reproducing darknet's arithmetic exactly.
 *
 * darknet's resize_image is bilinear with align-corners sampling
 * (scale = (in - 1)/(out - 1)) done in two passes: horizontal into a
 * out_w x in_h image, then vertical, each output computed as
 * (1 - d)*a then + d*b in float.  It is not cv2.resize.
 * letterbox_image fits the image inside the network size keeping its aspect
 * ratio (integer new size), resizes it that way, and centres it on a canvas
 * filled with 0.5. */
#include "image.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "util.h"

/* A source image: either an 8-bit BGR frame or CHW floats. */
typedef struct {
    const dn_frame *frame;
    const float *chw;
    int w, h, c;
} source;

static inline float source_pixel(const source *s, int x, int y, int k)
{
    if (s->frame) /* channel k of the RGB image is byte 2-k of the BGR pixel */
        return s->frame->data[(size_t)y * s->frame->row_stride + (size_t)x * 3 + (2 - k)] / 255.f;
    return s->chw[((size_t)k * s->h + y) * s->w + x];
}

/* The source index of an output sample at sx (= c * scale, in float as
 * darknet computes it): its integer part, kept inside [0, n - 1].  For an
 * output over 2^24 wide, c * scale rounds up to n - 1 before the last
 * column; darknet would then read one past the row (out of bounds). */
static inline int source_index(float sx, int n)
{
    if (!(sx < (float)(n - 1))) return n - 1; /* also keeps (int) from overflowing */
    return sx > 0 ? (int)sx : 0;
}

typedef struct {
    const source *src;
    float *part;        /* new_w x src.h x c */
    float *dst;         /* canvas: canvas_w x canvas_h x c */
    int new_w, new_h, canvas_w, canvas_h, dx, dy;
    float w_scale, h_scale;
} resize_job;

/* horizontal pass: one source row (all channels) per task */
static void resize_rows(void *p, int row, int thread)
{
    (void)thread;
    const resize_job *j = p;
    const source *s = j->src;
    for (int k = 0; k < s->c; k++) {
        float *out = j->part + ((size_t)k * s->h + row) * j->new_w;
        for (int c = 0; c < j->new_w; c++) {
            float val;
            if (c == j->new_w - 1 || s->w == 1) {
                val = source_pixel(s, s->w - 1, row, k);
            } else {
                float sx = c * j->w_scale;
                int ix = source_index(sx, s->w);
                float dx = sx - ix;
                int next = ix + 1 < s->w ? ix + 1 : ix;
                val = (1 - dx) * source_pixel(s, ix, row, k) + dx * source_pixel(s, next, row, k);
            }
            out[c] = val;
        }
    }
}

/* vertical pass: one output row (all channels) per task, into the canvas */
static void resize_columns(void *p, int r, int thread)
{
    (void)thread;
    const resize_job *j = p;
    const source *s = j->src;
    float sy = r * j->h_scale;
    int iy = source_index(sy, s->h);
    float dy = sy - iy;
    int last = (r == j->new_h - 1 || iy + 1 >= s->h); /* as for columns: no row past the last */
    for (int k = 0; k < s->c; k++) {
        const float *row0 = j->part + ((size_t)k * s->h + iy) * j->new_w;
        const float *row1 = last ? row0 : row0 + j->new_w;
        float *out = j->dst + ((size_t)k * j->canvas_h + j->dy + r) * j->canvas_w + j->dx;
        for (int c = 0; c < j->new_w; c++) {
            float val = (1 - dy) * row0[c];
            if (!last) val += dy * row1[c];
            out[c] = val;
        }
    }
}

/* Resize `s` to new_w x new_h, written at (dx, dy) of a canvas. */
static dn_status resize_into(dn_pool *pool, const source *s, int new_w, int new_h, float *canvas,
                             int canvas_w, int canvas_h, int dx, int dy)
{
    float *part = dn_alloc_floats((size_t)new_w * s->h * s->c, "resize buffer");
    if (!part) return DN_ERR_OOM;
    /* a 1-pixel output would divide by zero in darknet; sample from 0 */
    float w_scale = new_w > 1 ? (float)(s->w - 1) / (new_w - 1) : 0.f;
    float h_scale = new_h > 1 ? (float)(s->h - 1) / (new_h - 1) : 0.f;
    resize_job j = {s, part, canvas, new_w, new_h, canvas_w, canvas_h, dx, dy, w_scale, h_scale};
    int big = (size_t)new_w * s->h > 16384;
    if (big) {
        dn_pool_run(pool, s->h, resize_rows, &j);
        dn_pool_run(pool, new_h, resize_columns, &j);
    } else {
        for (int r = 0; r < s->h; r++) resize_rows(&j, r, 0);
        for (int r = 0; r < new_h; r++) resize_columns(&j, r, 0);
    }
    dn_free(part);
    return DN_OK;
}

void dn_letterbox_size(int img_w, int img_h, int net_w, int net_h, int *new_w, int *new_h)
{
    if ((float)net_w / img_w < (float)net_h / img_h) {
        *new_w = net_w;
        *new_h = (img_h * net_w) / img_w;
    } else {
        *new_h = net_h;
        *new_w = (img_w * net_h) / img_h;
    }
}

static dn_status transform(dn_pool *pool, const source *s, int out_w, int out_h,
                           dn_resize_mode mode, float *out)
{
    if (out_w < 1 || out_h < 1)
        return DN_FAIL(DN_ERR_ARG, "output size must be positive, got %dx%d", out_w, out_h);
    if (mode == DN_RESIZE_PLAIN) return resize_into(pool, s, out_w, out_h, out, out_w, out_h, 0, 0);
    if (mode != DN_RESIZE_LETTERBOX) return DN_FAIL(DN_ERR_ARG, "unknown resize mode %d", (int)mode);
    int new_w, new_h;
    dn_letterbox_size(s->w, s->h, out_w, out_h, &new_w, &new_h);
    if (new_w < 1 || new_h < 1)
        return DN_FAIL(DN_ERR_IMAGE, "a %dx%d image is too thin to letterbox into %dx%d", s->w,
                       s->h, out_w, out_h);
    size_t n = (size_t)out_w * out_h * s->c;
    for (size_t i = 0; i < n; i++) out[i] = .5f;
    return resize_into(pool, s, new_w, new_h, out, out_w, out_h, (out_w - new_w) / 2,
                       (out_h - new_h) / 2);
}

static dn_status check_frame(const dn_frame *frame)
{
    if (!frame || !frame->data) return DN_FAIL(DN_ERR_ARG, "frame and its data must not be NULL");
    if (frame->width < 1 || frame->height < 1)
        return DN_FAIL(DN_ERR_IMAGE, "empty frame (%dx%d)", frame->width, frame->height);
    if (frame->row_stride < 3 * (int64_t)frame->width)
        return DN_FAIL(DN_ERR_IMAGE, "frame row stride %d is smaller than 3 * width (%lld)",
                       frame->row_stride, 3 * (long long)frame->width);
    return DN_OK;
}

dn_status dn_frame_to_input_pool(dn_pool *pool, const dn_frame *frame, int out_w, int out_h,
                                 dn_resize_mode mode, float *out)
{
    DN_TRY(check_frame(frame));
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    source s = {frame, NULL, frame->width, frame->height, 3};
    return transform(pool, &s, out_w, out_h, mode, out);
}

DN_API dn_status dn_frame_to_input(const dn_frame *frame, int out_w, int out_h,
                                   dn_resize_mode mode, float *out)
{
    return dn_frame_to_input_pool(NULL, frame, out_w, out_h, mode, out);
}

static dn_status check_chw(const float *in, int w, int h, int c, const float *out)
{
    if (!in || !out) return DN_FAIL(DN_ERR_ARG, "in and out must not be NULL");
    if (w < 1 || h < 1 || c < 1)
        return DN_FAIL(DN_ERR_IMAGE, "empty image (%dx%dx%d)", w, h, c);
    return DN_OK;
}

DN_API dn_status dn_image_resize(const float *in, int w, int h, int c, int out_w, int out_h,
                                 float *out)
{
    DN_TRY(check_chw(in, w, h, c, out));
    source s = {NULL, in, w, h, c};
    return transform(NULL, &s, out_w, out_h, DN_RESIZE_PLAIN, out);
}

DN_API dn_status dn_image_letterbox(const float *in, int w, int h, int c, int out_w, int out_h,
                                    float *out)
{
    DN_TRY(check_chw(in, w, h, c, out));
    source s = {NULL, in, w, h, c};
    return transform(NULL, &s, out_w, out_h, DN_RESIZE_LETTERBOX, out);
}
