/* darknet's detection-data augmentation (its load_data_detection), per image.
 *
 * The sequence and the random draws follow darknet: aspect ratio jittered
 * by +-jitter of each side, scale uniform in [.25, 2], random placement on
 * a 0.5-grey canvas (bilinear sampling, outside pixels 0), HSV distortion
 * (hue shift in +-hue, saturation and exposure scaled by a factor in
 * [1, s] or its inverse), then a coin-flip horizontal mirror.  Boxes are
 * mapped the same way, clipped to the image, and dropped when narrower
 * than .001.  Randomness comes from a per-sample seed instead of rand(), so
 * loader threads give the same data whatever their scheduling. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image.h"
#include "util.h"

typedef struct {
    float *data; /* CHW */
    int w, h, c;
} float_image;

/* darknet's rand_uniform: the bounds may come in either order */
static float uniform(dn_rng *rng, float lo, float hi)
{
    if (hi < lo) {
        float swap = lo;
        lo = hi;
        hi = swap;
    }
    return dn_rng_uniform(rng) * (hi - lo) + lo;
}

/* darknet's rand_scale: a factor in [1, s] or its inverse, with equal odds */
static float random_scale(dn_rng *rng, float s)
{
    float scale = uniform(rng, 1, s);
    if (dn_rng_int(rng, 2)) return scale;
    return 1.f / scale;
}

/* ---- pixels ----------------------------------------------------------------- */

static float frame_pixel(const dn_frame *f, int x, int y, int k)
{
    if (x < 0 || x >= f->width || y < 0 || y >= f->height) return 0; /* darknet: 0 outside */
    return f->data[(size_t)y * f->row_stride + (size_t)x * 3 + (2 - k)] / 255.f;
}

static float bilinear(const dn_frame *f, float x, float y, int k)
{
    int ix = (int)floorf(x), iy = (int)floorf(y);
    float dx = x - ix, dy = y - iy;
    return (1 - dy) * (1 - dx) * frame_pixel(f, ix, iy, k) +
           dy * (1 - dx) * frame_pixel(f, ix, iy + 1, k) +
           (1 - dy) * dx * frame_pixel(f, ix + 1, iy, k) + dy * dx * frame_pixel(f, ix + 1, iy + 1, k);
}

/* darknet's place_image: the frame scaled to w x h at (dx, dy) of the canvas */
static void place(const dn_frame *f, int w, int h, int dx, int dy, float_image *canvas)
{
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < h; y++) {
            int cy = y + dy;
            if (cy < 0 || cy >= canvas->h) continue;
            float ry = ((float)y / h) * f->height;
            float *row = canvas->data + ((size_t)k * canvas->h + cy) * canvas->w;
            for (int x = 0; x < w; x++) {
                int cx = x + dx;
                if (cx < 0 || cx >= canvas->w) continue;
                float rx = ((float)x / w) * f->width;
                row[cx] = bilinear(f, rx, ry, k);
            }
        }
}

/* ---- colour --------------------------------------------------------------- */

static float max3(float a, float b, float c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }
static float min3(float a, float b, float c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }

/* darknet's distort_image: RGB -> HSV, scale S and V, shift H (wrapping),
 * back to RGB, clamp to [0, 1]. */
static void distort(float_image *im, float hue, float sat, float val)
{
    size_t n = (size_t)im->w * im->h;
    float *r_ch = im->data, *g_ch = im->data + n, *b_ch = im->data + 2 * n;
    for (size_t i = 0; i < n; i++) {
        float r = r_ch[i], g = g_ch[i], b = b_ch[i];
        float mx = max3(r, g, b), mn = min3(r, g, b), delta = mx - mn;
        float h = 0, s = 0, v = mx;
        if (mx != 0) {
            s = delta / mx;
            if (delta != 0) { /* darknet divides by zero here; the hue is unused when s == 0 */
                if (r == mx)
                    h = (g - b) / delta;
                else if (g == mx)
                    h = 2 + (b - r) / delta;
                else
                    h = 4 + (r - g) / delta;
                if (h < 0) h += 6;
                h = h / 6.f;
            }
        }
        s *= sat;
        v *= val;
        h += hue;
        if (h > 1) h -= 1;
        if (h < 0) h += 1;
        if (s == 0) {
            r = g = b = v;
        } else {
            float h6 = 6 * h;
            int index = (int)floorf(h6);
            float f = h6 - index;
            float p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
            switch (index) {
            case 0: r = v; g = t; b = p; break;
            case 1: r = q; g = v; b = p; break;
            case 2: r = p; g = v; b = t; break;
            case 3: r = p; g = q; b = v; break;
            case 4: r = t; g = p; b = v; break;
            default: r = v; g = p; b = q; break;
            }
        }
        r_ch[i] = r < 0 ? 0 : (r > 1 ? 1 : r);
        g_ch[i] = g < 0 ? 0 : (g > 1 ? 1 : g);
        b_ch[i] = b < 0 ? 0 : (b > 1 ? 1 : b);
    }
}

static void flip_horizontal(float_image *im)
{
    for (int k = 0; k < im->c; k++)
        for (int y = 0; y < im->h; y++) {
            float *row = im->data + ((size_t)k * im->h + y) * im->w;
            for (int x = 0; x < im->w / 2; x++) {
                float swap = row[x];
                row[x] = row[im->w - 1 - x];
                row[im->w - 1 - x] = swap;
            }
        }
}

/* ---- boxes ------------------------------------------------------------------ */

static float clamp01(float x) { return x < 0 ? 0 : (x > 1 ? 1 : x); }

/* darknet's fill_truth_detection with its correct_boxes: shuffle, map by
 * (x*sx - dx, y*sy - dy), mirror, clip; drop boxes under .001 wide (packed,
 * not left as gaps: a gap would end darknet's truth list early). */
static void fill_truth(const float *labels, int n_labels, int shuffle, dn_rng *rng, float dx,
                       float dy, float sx, float sy, int flip, int max_boxes, float *truth)
{
    memset(truth, 0, (size_t)max_boxes * 5 * sizeof *truth);
    int *order = malloc((size_t)(n_labels ? n_labels : 1) * sizeof *order);
    if (!order) return;
    for (int i = 0; i < n_labels; i++) order[i] = i;
    if (shuffle)
        for (int i = 0; i < n_labels; i++) {
            int j = dn_rng_int(rng, n_labels);
            int swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
    int written = 0;
    for (int k = 0; k < n_labels && written < max_boxes; k++) {
        const float *row = labels + (size_t)order[k] * 5;
        float x = row[1], y = row[2], w = row[3], h = row[4];
        if (x == 0 && y == 0) continue; /* darknet drops boxes at exactly (0, 0) */
        float left = (x - w / 2) * sx - dx, right = (x + w / 2) * sx - dx;
        float top = (y - h / 2) * sy - dy, bottom = (y + h / 2) * sy - dy;
        if (flip) {
            float swap = left;
            left = 1.f - right;
            right = 1.f - swap;
        }
        left = clamp01(left);
        right = clamp01(right);
        top = clamp01(top);
        bottom = clamp01(bottom);
        float bw = clamp01(right - left), bh = clamp01(bottom - top);
        if (bw < .001f || bh < .001f) continue;
        float *t = truth + (size_t)written * 5;
        t[0] = (left + right) / 2;
        t[1] = (top + bottom) / 2;
        t[2] = bw;
        t[3] = bh;
        t[4] = row[0];
        written++;
    }
    free(order);
}

/* ---- the sample ---------------------------------------------------------------- */

/* Beyond these the arithmetic above breaks down: jitter >= 1 can make the
 * new aspect ratio's height 0 or negative, a hue shift over 1 leaves the
 * wrapped hue outside [0, 1] (the float-to-int of its sector overflows for
 * huge ones), and a colour factor near 0 or huge gives an infinite scale
 * (then NaN pixels). */
#define MIN_COLOUR_FACTOR 1e-6f
#define MAX_COLOUR_FACTOR 1e6f

const char *dn_augment_expected(const char *name, float value)
{
    if (strcmp(name, "jitter") == 0)
        return value >= 0 && value < 1
                   ? NULL
                   : "a number in [0, 1) (how far each side may stretch, as a fraction)";
    if (strcmp(name, "hue") == 0)
        return value >= 0 && value <= 1
                   ? NULL
                   : "a number in [0, 1] (the largest hue shift, as a fraction of the colour circle)";
    return value >= MIN_COLOUR_FACTOR && value <= MAX_COLOUR_FACTOR
               ? NULL
               : "a factor in [1e-06, 1e+06] (darknet scales by a random factor in [1, s] or its "
                 "inverse; its cfgs use .75 to 1.5)";
}

static dn_status check_augment_params(const dn_augment_params *p)
{
    const struct {
        const char *name;
        float value;
    } settings[] = {{"jitter", p->jitter}, {"hue", p->hue}, {"saturation", p->saturation},
                    {"exposure", p->exposure}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        const char *expected = dn_augment_expected(settings[i].name, settings[i].value);
        if (expected)
            return DN_FAIL(DN_ERR_ARG, "augmentation %s=%g, expected %s", settings[i].name,
                           settings[i].value, expected);
    }
    return DN_OK;
}

DN_API dn_status dn_detection_sample(const dn_frame *frame, const float *labels, int n_labels,
                                     int out_w, int out_h, const dn_augment_params *p,
                                     uint64_t seed, float *image_out, float *truth_out)
{
    if (!frame || !frame->data || !p || !image_out || !truth_out || (n_labels && !labels))
        return DN_FAIL(DN_ERR_ARG, "frame, params, outputs (and labels) must not be NULL");
    if (frame->width < 1 || frame->height < 1 || frame->row_stride < 3 * (int64_t)frame->width)
        return DN_FAIL(DN_ERR_IMAGE, "bad frame (%dx%d, row stride %d)", frame->width,
                       frame->height, frame->row_stride);
    if (out_w < 1 || out_h < 1 || p->max_boxes < 0 || n_labels < 0)
        return DN_FAIL(DN_ERR_ARG, "bad sizes (%dx%d, max_boxes %d, %d labels)", out_w, out_h,
                       p->max_boxes, n_labels);
    /* a network input fits an int (so do twice its sides, which the
     * placement below converts to int) */
    if ((int64_t)out_w * out_h > INT_MAX / 3)
        return DN_FAIL(DN_ERR_ARG, "output %dx%dx3 is too large (%.0f values; at most %d)", out_w,
                       out_h, 3.0 * out_w * out_h, INT_MAX);
    if (!p->augment) {
        DN_TRY(dn_frame_to_input_pool(NULL, frame, out_w, out_h, DN_RESIZE_PLAIN, image_out));
        fill_truth(labels, n_labels, 0, NULL, 0, 0, 1, 1, 0, p->max_boxes, truth_out);
        return DN_OK;
    }
    DN_TRY(check_augment_params(p));
    dn_rng rng;
    dn_rng_seed(&rng, seed);
    float ow = frame->width, oh = frame->height;
    float dw = p->jitter * ow, dh = p->jitter * oh;
    float new_ar = (ow + uniform(&rng, -dw, dw)) / (oh + uniform(&rng, -dh, dh));
    float scale = uniform(&rng, .25f, 2);
    float nw, nh;
    if (new_ar < 1) {
        nh = scale * out_h;
        nw = nh * new_ar;
    } else {
        nw = scale * out_w;
        nh = nw / new_ar;
    }
    float dx = uniform(&rng, 0, out_w - nw);
    float dy = uniform(&rng, 0, out_h - nh);

    float_image canvas = {image_out, out_w, out_h, 3};
    size_t n = (size_t)out_w * out_h * 3;
    for (size_t i = 0; i < n; i++) image_out[i] = .5f;
    place(frame, (int)nw, (int)nh, (int)dx, (int)dy, &canvas); /* darknet passes ints here */

    float dhue = uniform(&rng, -p->hue, p->hue);
    float dsat = random_scale(&rng, p->saturation);
    float dexp = random_scale(&rng, p->exposure);
    distort(&canvas, dhue, dsat, dexp);
    int flip = p->flip ? dn_rng_int(&rng, 2) : 0;
    if (flip) flip_horizontal(&canvas);
    fill_truth(labels, n_labels, 1, &rng, -dx / out_w, -dy / out_h, nw / out_w, nh / out_h, flip,
               p->max_boxes, truth_out);
    return DN_OK;
}
