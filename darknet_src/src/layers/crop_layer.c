/* [crop]: crop_width x crop_height window of the input, mapped to [-1, 1]
 * (x*2 - 1) unless noadjust=1.  Inference takes the centre; training a
 * random offset and (flip=1) a random horizontal flip.  Like darknet's CPU
 * layer it passes no gradient back (its backward is empty): it is meant to
 * sit on the network input. */
#include "../error.h"
#include "../layer.h"

static dn_status crop_parse(dn_layer *l, const dn_build *b)
{
    int crop_h, crop_w;
    DN_TRY(dn_cfg_int(b->cfg, b->section, "crop_height", 1, &crop_h));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "crop_width", 1, &crop_w));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "flip", 0, &l->u.crop.flip));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "angle", 0, &l->u.crop.angle));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "saturation", 1, &l->u.crop.saturation));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "exposure", 1, &l->u.crop.exposure));
    DN_TRY(dn_cfg_int(b->cfg, b->section, "noadjust", 0, &l->u.crop.noadjust));
    DN_TRY(dn_cfg_float(b->cfg, b->section, "shift", 0, &l->u.crop.shift));
    if (crop_w < 1 || crop_h < 1 || crop_w > b->w || crop_h > b->h)
        return dn_cfg_error(b->cfg, b->section, DN_ERR_CFG,
                            "crop %dx%d does not fit in the %dx%d input", crop_w, crop_h, b->w,
                            b->h);
    l->in_w = b->w;
    l->in_h = b->h;
    l->in_c = b->c;
    return dn_layer_set_output_shape(l, b, crop_w, crop_h, b->c);
}

static dn_status crop_alloc(dn_layer *l, int train) { return dn_layer_alloc_output(l, train); }

static dn_status crop_resize(dn_layer *l, int in_w, int in_h)
{
    if (l->out_w > in_w || l->out_h > in_h)
        return DN_FAIL(DN_ERR_ARG, "%dx%d crop does not fit its %dx%d input", l->out_w, l->out_h,
                       in_w, in_h);
    l->in_w = in_w;
    l->in_h = in_h;
    return dn_layer_set_output_shape(l, NULL, l->out_w, l->out_h, l->out_c);
}

static void crop_forward(dn_layer *l, const dn_ctx *ctx)
{
    float scale = 2, trans = -1;
    if (l->u.crop.noadjust) {
        scale = 1;
        trans = 0;
    }
    size_t count = 0;
    for (int b = 0; b < l->batch; b++) {
        int flip = 0;
        int dh = (l->in_h - l->out_h) / 2, dw = (l->in_w - l->out_w) / 2;
        if (ctx->train) {
            flip = l->u.crop.flip && dn_rng_int(ctx->rng, 2);
            dh = dn_rng_int(ctx->rng, l->in_h - l->out_h + 1);
            dw = dn_rng_int(ctx->rng, l->in_w - l->out_w + 1);
        }
        for (int c = 0; c < l->in_c; c++)
            for (int i = 0; i < l->out_h; i++)
                for (int j = 0; j < l->out_w; j++) {
                    int col = flip ? l->in_w - dw - j - 1 : j + dw;
                    int row = i + dh;
                    size_t index = (size_t)col + (size_t)l->in_w * (row + (size_t)l->in_h * (c + (size_t)l->in_c * b));
                    l->output[count++] = ctx->input[index] * scale + trans;
                }
    }
}

static void crop_backward(dn_layer *l, const dn_ctx *ctx)
{
    (void)l;
    (void)ctx;
}

static void crop_free(dn_layer *l) { dn_layer_free_output(l); }

const dn_layer_ops dn_crop_ops = {
    .type = DN_LAYER_CROP,
    .name = "crop",
    .parse = crop_parse,
    .alloc = crop_alloc,
    .forward = crop_forward,
    .backward = crop_backward,
    .resize = crop_resize,
    .free = crop_free,
};
