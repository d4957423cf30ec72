// [convolutional] on the GPU (convolutional_layer.c's twin): im2col + cuBLAS,
// or cuDNN in a PYDARKNET_CUDNN=1 build (conv_cudnn.cu).
//
// The im2col path works on chunks of images: the columns of as many images
// as the device scratch holds (cuda.cu sizes it), then one strided-batched
// GEMM per chunk and group.  One GEMM per image, as darknet does, leaves most
// of a large GPU idle on the small late layers (13 x 13 outputs: a handful of
// GEMM tiles per image).
#include "../cuda_common.cuh"
#include "batchnorm_gpu.cuh"
#include "conv_cudnn.cuh"
#include "convolutional_gpu.cuh"

// The GEMM view of one image and group: weights [filters x kernel_len] times
// columns [kernel_len x spatial] gives the output [filters x spatial].
typedef struct {
    int groups;
    int filters;          // per group
    int kernel_len;       // size * size * in_c / groups
    int spatial;          // out_h * out_w
    size_t in_group;      // input floats of one image and group
    size_t columns;       // kernel_len * spatial
    int input_is_columns; // 1x1, stride 1, no padding: the input is its own columns
} conv_gemm;

static conv_gemm gemm_of(const dn_layer *l)
{
    conv_gemm c;
    c.groups = l->u.conv.groups;
    c.filters = l->u.conv.filters / c.groups;
    c.kernel_len = l->u.conv.size * l->u.conv.size * l->in_c / c.groups;
    c.spatial = l->out_w * l->out_h;
    c.in_group = (size_t)(l->in_c / c.groups) * l->in_h * l->in_w;
    c.columns = (size_t)c.kernel_len * c.spatial;
    c.input_is_columns = l->u.conv.size == 1 && l->u.conv.stride == 1 && l->u.conv.pad == 0;
    return c;
}

size_t dn_conv_gpu_columns_per_image(const dn_layer *l)
{
    conv_gemm c = gemm_of(l);
    return c.input_is_columns ? 0 : c.columns;
}

// images per chunk: all of them when the input is its own columns, else as
// many as the scratch holds (at least one: it always holds one image's)
static int chunk_images(const dn_layer *l, const dn_ctx *ctx, const conv_gemm *c)
{
    if (c->input_is_columns) return l->batch;
    size_t fit = ctx->gpu->workspace_floats / c->columns;
    if (fit < 1) fit = 1;
    return fit < (size_t)l->batch ? (int)fit : l->batch;
}

// The columns of images [first, first + count) for group g: the input itself
// (1x1), or im2col of the images into the scratch (darknet's layout, one
// image after another).  *stride: floats from one image's columns to the next.
static const float *columns_of(const dn_layer *l, const dn_ctx *ctx, const conv_gemm *c, int first,
                               int count, int g, long long *stride)
{
    const float *input = ctx->gpu->input + ((size_t)first * c->groups + g) * c->in_group;
    if (c->input_is_columns) {
        *stride = (long long)c->groups * c->in_group;
        return input;
    }
    dn_im2col_images_gpu(ctx->gpu->gpu, input, (size_t)c->groups * c->in_group, count, l->in_c / c->groups, l->in_h,
                         l->in_w, l->u.conv.size, l->u.conv.stride, l->u.conv.pad, ctx->gpu->workspace, c->columns,
                         (size_t)c->spatial);
    *stride = (long long)c->columns;
    return ctx->gpu->workspace;
}

// ---- weight gradients, split along the output pixels ------------------------------------
// A weight gradient is a GEMM with a small result (filters x kernel_len) and a
// long inner dimension (the output pixels): yolov2's first layer at 416 is
// 32 x 27 over 173,056 pixels, one GEMM tile, so one SM works through the
// whole GEMM while the rest of the GPU waits.  Where the result has few tiles,
// the pixels are cut into `segments` ranges: one strided-batched GEMM gives a
// partial gradient per range, then one ordered sum adds them to the gradients
// (split-K, chosen here rather than left to cuBLAS's heuristics).
#ifndef DN_GRAD_TILE
#define DN_GRAD_TILE 128            // side of an SGEMM output tile
#endif
#ifndef DN_GRAD_TARGET_TILES
#define DN_GRAD_TARGET_TILES 256    // tiles that fill a large GPU (132 SMs on an H100) twice over
#endif
#ifndef DN_GRAD_MIN_SEGMENT
#define DN_GRAD_MIN_SEGMENT 256     // pixels per range, at least
#endif
#define DN_GRAD_MAX_PARTIALS ((size_t)16 << 20)  // floats of partial gradients, at most (64 MiB)

int dn_conv_gpu_grad_segments(const dn_layer *l)
{
    conv_gemm c = gemm_of(l);
    size_t tiles = (size_t)((c.filters + DN_GRAD_TILE - 1) / DN_GRAD_TILE) *
                   ((c.kernel_len + DN_GRAD_TILE - 1) / DN_GRAD_TILE);
    size_t grad = (size_t)c.filters * c.kernel_len;
    size_t segments = DN_GRAD_TARGET_TILES / tiles;
    if (segments > (size_t)c.spatial / DN_GRAD_MIN_SEGMENT) segments = (size_t)c.spatial / DN_GRAD_MIN_SEGMENT;
    if (segments * grad > DN_GRAD_MAX_PARTIALS) segments = DN_GRAD_MAX_PARTIALS / grad;
    return segments >= 4 ? (int)segments : 1;  // fewer: not worth the extra sum
}

// ---- weight gradients over several images' pixels at once ----------------------------------
// Where a weight gradient is not split (its result has tiles enough) and a
// chunk holds several images, n images' columns are laid side by side in the
// scratch (kernel_len x n * spatial: im2col, or the input itself copied for
// 1x1) and their deltas gathered the same way (filters x n * spatial) into the
// partials' scratch, and one GEMM over n * spatial pixels replaces n GEMMs:
// yolov2's 13 x 13 layers would otherwise run 16 GEMMs of 1024 x 9216 over
// 169 pixels each, every one reading and writing the whole gradient.

// images per such GEMM in a chunk of `count`: as many as both scratches hold
// (0: one GEMM per image)
static int wide_images(const dn_layer *l, const dn_ctx *ctx, const conv_gemm *c, int count)
{
    if (count < 2 || !ctx->gpu->grad_partials || dn_conv_gpu_grad_segments(l) > 1) return 0;
    size_t images = (size_t)count;
    size_t by_deltas = ctx->gpu->grad_partials_floats / ((size_t)c->filters * c->spatial);
    size_t by_columns = ctx->gpu->workspace_floats / c->columns;
    if (by_deltas < images) images = by_deltas;
    if (by_columns < images) images = by_columns;
    return images >= 2 ? (int)images : 0;
}

size_t dn_conv_gpu_grad_partials_floats(const dn_layer *l)
{
    int segments = dn_conv_gpu_grad_segments(l);
    conv_gemm c = gemm_of(l);
    if (segments > 1) return (size_t)segments * c.filters * c.kernel_len;
    // the gathered deltas of the wide GEMMs: the batch's, or what fits in the cap
    size_t per_image = (size_t)c.filters * c.spatial, images = DN_GRAD_MAX_PARTIALS / per_image;
    if (images > (size_t)l->batch) images = (size_t)l->batch;
    return images >= 2 ? images * per_image : 0;
}

// grads += delta [filters x spatial] times columns^T [spatial x kernel_len], one image and group
static void add_weight_grads(const dn_layer *l, const dn_ctx *ctx, const conv_gemm *c, const float *delta,
                             const float *columns, float *grads)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int segments = dn_conv_gpu_grad_segments(l);
    size_t grad = (size_t)c->filters * c->kernel_len;
    float *partials = ctx->gpu->grad_partials;
    if (segments == 1 || !partials || ctx->gpu->grad_partials_floats < segments * grad) {
        dn_gemm_gpu(gpu, 0, 1, c->filters, c->kernel_len, c->spatial, 1.f, delta, c->spatial, columns, c->spatial,
                    1.f, grads, c->kernel_len);
        return;
    }
    int length = c->spatial / segments, rest = c->spatial - segments * length;
    // range k: pixels [k * length, (k + 1) * length), the same columns of delta and of the columns
    dn_gemm_strided_gpu(gpu, 0, 1, c->filters, c->kernel_len, length, 1.f, delta, c->spatial, length, columns,
                        c->spatial, length, 0.f, partials, c->kernel_len, (long long)grad, segments);
    if (rest)  // the last pixels, fewer than `segments`, straight into the gradients
        dn_gemm_gpu(gpu, 0, 1, c->filters, c->kernel_len, rest, 1.f, delta + (size_t)segments * length, c->spatial,
                    columns + (size_t)segments * length, c->spatial, 1.f, grads, c->kernel_len);
    dn_add_rows_gpu(gpu, grads, partials, segments, grad);
}

// grads += the weight gradient of images [first, first + count), group g, in
// GEMMs over `per_gemm` images' pixels at a time
static void add_wide_weight_grads(const dn_layer *l, const dn_ctx *ctx, const conv_gemm *c, int first, int count,
                                  int g, int per_gemm, const float *delta, long long delta_stride, float *grads)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t image = (size_t)c->groups * c->in_group;  // floats from one image's input to the next
    float *columns = ctx->gpu->workspace, *gathered = ctx->gpu->grad_partials;
    for (int i = 0; i < count; i += per_gemm) {
        int n = count - i < per_gemm ? count - i : per_gemm;
        size_t pixels = (size_t)n * c->spatial;  // the side-by-side matrices' row length
        const float *input = ctx->gpu->input + ((size_t)(first + i) * c->groups + g) * c->in_group;
        if (c->input_is_columns)  // 1x1: each image's input is its columns (kernel_len rows of spatial)
            dn_copy_blocks_gpu(gpu, n, c->kernel_len, c->spatial, input, image, (size_t)c->spatial, columns,
                               (size_t)c->spatial, pixels);
        else
            dn_im2col_images_gpu(gpu, input, image, n, l->in_c / c->groups, l->in_h, l->in_w, l->u.conv.size,
                                 l->u.conv.stride, l->u.conv.pad, columns, (size_t)c->spatial, pixels);
        // the deltas (filters x spatial each, delta_stride apart) -> filters x n * spatial
        dn_copy_blocks_gpu(gpu, n, c->filters, c->spatial, delta + i * delta_stride, (size_t)delta_stride,
                           (size_t)c->spatial, gathered, (size_t)c->spatial, pixels);
        dn_gemm_gpu(gpu, 0, 1, c->filters, c->kernel_len, (int)pixels, 1.f, gathered, (int)pixels, columns,
                    (int)pixels, 1.f, grads, c->kernel_len);
    }
}

static void im2col_forward(dn_layer *l, const dn_ctx *ctx)
{
    conv_gemm c = gemm_of(l);
    int chunk = chunk_images(l, ctx, &c);
    long long out_stride = (long long)c.groups * c.filters * c.spatial;  // one image's output
    for (int first = 0; first < l->batch; first += chunk) {
        int count = l->batch - first < chunk ? l->batch - first : chunk;
        for (int g = 0; g < c.groups; g++) {
            long long columns_stride;
            const float *columns = columns_of(l, ctx, &c, first, count, g, &columns_stride);
            const float *weights = l->gpu.weights + (size_t)g * l->n_weights / c.groups;
            float *out = l->gpu.output + ((size_t)first * c.groups + g) * c.filters * c.spatial;
            dn_gemm_strided_gpu(ctx->gpu->gpu, 0, 0, c.filters, c.spatial, c.kernel_len, 1.f, weights,
                                c.kernel_len, 0, columns, c.spatial, columns_stride, 0.f, out, c.spatial,
                                out_stride, count);
        }
    }
}

void dn_conv_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int spatial = l->out_w * l->out_h;
    if (!dn_conv_cudnn_forward(l, ctx)) im2col_forward(l, ctx);
    if (l->batch_normalize)
        dn_batchnorm_forward_gpu(l, ctx, spatial);
    else
        dn_add_bias_gpu(gpu, l->gpu.output, l->gpu.biases, l->batch, l->u.conv.filters, spatial);
    dn_activate_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation);
}

// Weight gradients: over the chunk's pixels at once (the wide GEMMs above), or
// per image (they all add into the same gradients), one accumulating GEMM or
// the split GEMMs above.  Input delta: one strided-batched GEMM per chunk, straight
// into the input's delta for 1x1, else into the scratch and col2im from it.
static void im2col_backward(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    conv_gemm c = gemm_of(l);
    int chunk = chunk_images(l, ctx, &c);
    long long delta_stride = (long long)c.groups * c.filters * c.spatial;
    for (int first = 0; first < l->batch; first += chunk) {
        int count = l->batch - first < chunk ? l->batch - first : chunk;
        int wide = wide_images(l, ctx, &c, count);
        for (int g = 0; g < c.groups; g++) {
            const float *delta = l->gpu.delta + ((size_t)first * c.groups + g) * c.filters * c.spatial;
            float *grads = l->gpu.weight_grads + (size_t)g * l->n_weights / c.groups;
            if (wide) {
                add_wide_weight_grads(l, ctx, &c, first, count, g, wide, delta, delta_stride, grads);
            } else {
                long long columns_stride;
                const float *columns = columns_of(l, ctx, &c, first, count, g, &columns_stride);
                for (int i = 0; i < count; i++)
                    add_weight_grads(l, ctx, &c, delta + i * delta_stride, columns + i * columns_stride, grads);
            }
            if (!ctx->gpu->input_delta) continue;
            const float *weights = l->gpu.weights + (size_t)g * l->n_weights / c.groups;
            float *input_delta = ctx->gpu->input_delta + ((size_t)first * c.groups + g) * c.in_group;
            long long input_stride = (long long)c.groups * c.in_group;
            if (c.input_is_columns) {
                dn_gemm_strided_gpu(gpu, 1, 0, c.kernel_len, c.spatial, c.filters, 1.f, weights, c.kernel_len, 0,
                                    delta, c.spatial, delta_stride, 1.f, input_delta, c.spatial, input_stride, count);
                continue;
            }
            // the scratch's columns were read by the gradient GEMMs above (same stream): now overwritten
            dn_gemm_strided_gpu(gpu, 1, 0, c.kernel_len, c.spatial, c.filters, 1.f, weights, c.kernel_len, 0, delta,
                                c.spatial, delta_stride, 0.f, ctx->gpu->workspace, c.spatial, (long long)c.columns,
                                count);
            dn_col2im_images_gpu(gpu, ctx->gpu->workspace, c.columns, count, l->in_c / c.groups, l->in_h, l->in_w,
                                 l->u.conv.size, l->u.conv.stride, l->u.conv.pad, input_delta, (size_t)input_stride);
        }
    }
}

void dn_conv_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int spatial = l->out_w * l->out_h;
    dn_gradient_gpu(gpu, l->gpu.output, (size_t)l->batch * l->out_size, l->activation, l->gpu.delta);
    if (l->batch_normalize)
        dn_batchnorm_backward_gpu(l, ctx, spatial);
    else
        dn_backward_bias_gpu(gpu, l->gpu.bias_grads, l->gpu.delta, l->batch, l->u.conv.filters, spatial);
    if (!dn_conv_cudnn_backward(l, ctx)) im2col_backward(l, ctx);
}
