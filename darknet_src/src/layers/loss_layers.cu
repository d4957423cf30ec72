// The CUDA twins of the output layers: region and yolo (activations and
// loss on the GPU; darknet's GPU path computes these losses on the host, with
// the whole output down and the delta back up every pass), softmax and cost
// (their losses on the host).
#include <stdlib.h>

#include "../cuda_common.cuh"

extern "C" {
#include "detection_layers.h"
}
#include "detection_loss_gpu.cuh"
#include "detection_loss_kernels.cuh"

__global__ void logistic_planes_kernel(float *x, int planes_per_anchor, int first_plane,
                                       int n_planes, int spatial, int anchors, int batch,
                                       size_t n)
{
    // x: batch x anchors x planes_per_anchor planes of `spatial`; the logistic
    // on planes [first_plane, first_plane + n_planes) of every anchor
    GRID_STRIDE(i, n)
    {
        int s = i % spatial;
        int p = (i / spatial) % n_planes;
        size_t anchor = i / ((size_t)spatial * n_planes);  // over batch * anchors
        size_t index = (anchor * planes_per_anchor + first_plane + p) * spatial + s;
        x[index] = 1.f / (1.f + expf(-x[index]));
    }
}

__global__ void logistic_gradient_planes_kernel(const float *y, float *delta, int planes_per_anchor,
                                                int first_plane, int n_planes, int spatial, size_t n)
{
    GRID_STRIDE(i, n)
    {
        int s = i % spatial;
        int p = (i / spatial) % n_planes;
        size_t anchor = i / ((size_t)spatial * n_planes);
        size_t index = (anchor * planes_per_anchor + first_plane + p) * spatial + s;
        delta[index] *= (1 - y[index]) * y[index];
    }
}

static void logistic_planes(dn_gpu *gpu, float *x, int per_anchor, int first, int count,
                            int spatial, int anchors, int batch)
{
    size_t n = (size_t)batch * anchors * count * spatial;
    if (!n) return;
    logistic_planes_kernel<<<dn_blocks(n), 256, 0, gpu->stream>>>(x, per_anchor, first, count, spatial,
                                                                  anchors, batch, n);
    GPU_LAUNCHED(gpu);
}

/* The host's copy of the output, the host-side loss, the delta back up. */
static void host_loss(dn_layer *l, const dn_ctx *ctx, void (*loss)(dn_layer *, const dn_ctx *))
{
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->out_size;
    GPU_CHECK(gpu, cudaMemcpyAsync(l->output, l->gpu.output, n * sizeof(float), cudaMemcpyDeviceToHost,
                                   gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
    loss(l, ctx);
    GPU_CHECK(gpu, cudaMemcpyAsync(l->gpu.delta, l->delta, n * sizeof(float), cudaMemcpyHostToDevice,
                                   gpu->stream));
}

// ---- the region and yolo losses (detection_loss_kernels.cuh) ----------------------------

static int loss_anchor_pairs(const dn_layer *l)
{
    return l->type == DN_LAYER_REGION ? l->u.region.n_anchors : l->u.yolo.total;
}

static int loss_mask_ints(const dn_layer *l) { return l->type == DN_LAYER_YOLO ? l->u.yolo.n_anchors : 0; }

size_t dn_detection_loss_gpu_floats(const dn_layer *l, int truth_stride)
{
    if (l->type != DN_LAYER_REGION && l->type != DN_LAYER_YOLO) return 0;
    return dn_loss_scratch_layout(loss_anchor_pairs(l), loss_mask_ints(l), l->batch, truth_stride).floats;
}

static dn_loss_scratch loss_scratch(const dn_layer *l, const dn_ctx *ctx)
{
    return dn_loss_scratch_layout(loss_anchor_pairs(l), loss_mask_ints(l), l->batch, ctx->truth_stride);
}

// The anchors (and yolo's mask) and this pass's truths into the layer's
// scratch.  The truths may be page-locked (the trainer's batches), so the
// copy is still reading them after the call: run_loss waits for the stream
// before it returns.
static void upload_loss_inputs(dn_layer *l, const dn_ctx *ctx, const dn_loss_scratch &s, const float *anchors,
                               const int *mask)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int pairs = loss_anchor_pairs(l), mask_ints = loss_mask_ints(l);
    float *scratch = l->gpu.loss;
    GPU_CHECK(gpu, cudaMemcpyAsync(scratch + s.anchors, anchors, 2 * (size_t)pairs * sizeof(float),
                                   cudaMemcpyHostToDevice, gpu->stream));
    if (mask_ints)  // ints in the float buffer: same size and alignment
        GPU_CHECK(gpu, cudaMemcpyAsync(scratch + s.mask, mask, (size_t)mask_ints * sizeof(int),
                                       cudaMemcpyHostToDevice, gpu->stream));
    GPU_CHECK(gpu, cudaMemcpyAsync(scratch + s.truths, ctx->truth, (size_t)l->batch * ctx->truth_stride * sizeof(float),
                                   cudaMemcpyHostToDevice, gpu->stream));
}

// The loss on the device (the delta was zeroed by the training forward): the
// inputs up, the anchor-cells, the truths, the squared deltas per block; the
// partials and per-image sums down in one copy, added up on the host into
// l->cost and l->stats.
template <typename Args>
static void run_loss(dn_layer *l, const dn_ctx *ctx, const Args &args, const dn_loss_scratch &s,
                     const float *anchors, const int *mask)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    float *host = (float *)malloc(s.result_floats * sizeof(float));  // before anything is queued
    if (!host) {
        dn_gpu_record(gpu, DN_FAIL(DN_ERR_OOM, "out of memory for the loss of layer %d", l->index));
        return;
    }
    upload_loss_inputs(l, ctx, s, anchors, mask);
    float *scratch = l->gpu.loss, *results = scratch + s.results;
    loss_cells_kernel<<<DN_LOSS_BLOCKS, DN_LOSS_THREADS, 0, gpu->stream>>>(
        args, scratch + s.truths, ctx->truth_stride, l->batch, results);
    GPU_LAUNCHED(gpu);
    loss_truths_kernel<<<dn_blocks(l->batch), 256, 0, gpu->stream>>>(
        args, scratch + s.truths, ctx->truth_stride, l->batch, results + 2 * DN_LOSS_BLOCKS);
    GPU_LAUNCHED(gpu);
    squares_partials_kernel<<<DN_LOSS_BLOCKS, DN_LOSS_THREADS, 0, gpu->stream>>>(
        l->gpu.delta, (size_t)l->batch * l->out_size, results + DN_LOSS_BLOCKS);
    GPU_LAUNCHED(gpu);
    GPU_CHECK(gpu, cudaMemcpyAsync(host, results, s.result_floats * sizeof(float), cudaMemcpyDeviceToHost,
                                   gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
    if (gpu->error == DN_OK) {
        float sums[DN_LOSS_SUMS], objectness;
        dn_loss_results(host, l->batch, &l->cost, &objectness, sums);
        dn_detection_stats_from_sums(&l->stats, sums, objectness, l->out_w * l->out_h * args.n_anchors * l->batch);
    }
    free(host);
}

// darknet's forward_region_layer / forward_yolo_layer on the device
static void region_loss_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_loss_scratch s = loss_scratch(l, ctx);
    run_loss(l, ctx, dn_region_loss_args_of(l, ctx, l->gpu.output, l->gpu.delta, l->gpu.loss + s.anchors), s,
             l->u.region.anchors, NULL);
}

static void yolo_loss_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_loss_scratch s = loss_scratch(l, ctx);
    const int *mask = (const int *)(l->gpu.loss + s.mask);
    run_loss(l, ctx, dn_yolo_loss_args_of(l, ctx, l->gpu.output, l->gpu.delta, l->gpu.loss + s.anchors, mask), s,
             l->u.yolo.anchors, l->u.yolo.mask);
}

// ---- [region] ------------------------------------------------------------------------

void dn_region_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int spatial = l->out_w * l->out_h, coords = l->u.region.coords, classes = l->u.region.classes;
    int per_anchor = coords + 1 + classes, anchors = l->u.region.n_anchors;
    dn_copy_gpu(gpu, l->gpu.output, ctx->gpu->input, (size_t)l->batch * l->out_size);
    logistic_planes(gpu, l->gpu.output, per_anchor, 0, 2, spatial, anchors, l->batch);
    if (!l->u.region.background)
        logistic_planes(gpu, l->gpu.output, per_anchor, coords, 1, spatial, anchors, l->batch);
    if (l->u.region.softmax) {
        int first = coords + !l->u.region.background;
        dn_softmax_blocks_gpu(gpu, ctx->gpu->input + (size_t)first * spatial, classes + l->u.region.background,
                              l->batch * anchors, l->out_size / anchors, spatial, 1, spatial, 1,
                              l->gpu.output + (size_t)first * spatial);
    } else {
        logistic_planes(gpu, l->gpu.output, per_anchor, coords + 1, classes, spatial, anchors, l->batch);
    }
    if (ctx->train && ctx->truth) region_loss_gpu(l, ctx);
}

void dn_region_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int spatial = l->out_w * l->out_h, coords = l->u.region.coords;
    int per_anchor = coords + 1 + l->u.region.classes, anchors = l->u.region.n_anchors;
    size_t n_xy = (size_t)l->batch * anchors * 2 * spatial;
    logistic_gradient_planes_kernel<<<dn_blocks(n_xy), 256, 0, gpu->stream>>>(
        l->gpu.output, l->gpu.delta, per_anchor, 0, 2, spatial, n_xy);
    GPU_LAUNCHED(gpu);
    if (!l->u.region.background) {
        size_t n_obj = (size_t)l->batch * anchors * spatial;
        logistic_gradient_planes_kernel<<<dn_blocks(n_obj), 256, 0, gpu->stream>>>(
            l->gpu.output, l->gpu.delta, per_anchor, coords, 1, spatial, n_obj);
        GPU_LAUNCHED(gpu);
    }
    if (ctx->gpu->input_delta)
        dn_axpy_gpu(gpu, ctx->gpu->input_delta, 1.f, l->gpu.delta, (size_t)l->batch * l->out_size);
}

// ---- [yolo] ---------------------------------------------------------------------------

void dn_yolo_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int spatial = l->out_w * l->out_h, classes = l->u.yolo.classes;
    int per_anchor = 5 + classes, anchors = l->u.yolo.n_anchors;
    dn_copy_gpu(gpu, l->gpu.output, ctx->gpu->input, (size_t)l->batch * l->out_size);
    logistic_planes(gpu, l->gpu.output, per_anchor, 0, 2, spatial, anchors, l->batch);
    logistic_planes(gpu, l->gpu.output, per_anchor, 4, 1 + classes, spatial, anchors, l->batch);
    if (ctx->train && ctx->truth) yolo_loss_gpu(l, ctx);
}

void dn_yolo_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->gpu->input_delta)
        dn_axpy_gpu(ctx->gpu->gpu, ctx->gpu->input_delta, 1.f, l->gpu.delta, (size_t)l->batch * l->out_size);
}

// ---- [softmax] -------------------------------------------------------------------------

void dn_softmax_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    int groups = l->u.softmax.groups, inputs = l->in_size;
    dn_softmax_blocks_gpu(gpu, ctx->gpu->input, inputs / groups, l->batch, inputs, groups, inputs / groups,
                          1, l->u.softmax.temperature, l->gpu.output);
    if (ctx->train && ctx->truth && !l->u.softmax.noloss) host_loss(l, ctx, dn_softmax_loss);  // cross-entropy
}

void dn_softmax_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->gpu->input_delta)
        dn_axpy_gpu(ctx->gpu->gpu, ctx->gpu->input_delta, 1.f, l->gpu.delta, (size_t)l->batch * l->in_size);
}

// ---- [cost] (sse) ------------------------------------------------------------------------

void dn_cost_forward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (!ctx->train || !ctx->truth) return;
    dn_gpu *gpu = ctx->gpu->gpu;
    size_t n = (size_t)l->batch * l->in_size;
    float *input = (float *)malloc(n * sizeof(float));
    if (!input) {
        dn_gpu_record(gpu, DN_FAIL(DN_ERR_OOM, "out of memory in the cost layer"));
        return;
    }
    GPU_CHECK(gpu, cudaMemcpyAsync(input, ctx->gpu->input, n * sizeof(float), cudaMemcpyDeviceToHost, gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
    dn_sse_loss(l, ctx, input);
    free(input);
    GPU_CHECK(gpu, cudaMemcpyAsync(l->gpu.delta, l->delta, n * sizeof(float), cudaMemcpyHostToDevice, gpu->stream));
    GPU_CHECK(gpu, cudaStreamSynchronize(gpu->stream));
}

void dn_cost_backward_gpu(dn_layer *l, const dn_ctx *ctx)
{
    if (ctx->gpu->input_delta)
        dn_axpy_gpu(ctx->gpu->gpu, ctx->gpu->input_delta, l->u.cost.scale, l->gpu.delta,
                    (size_t)l->batch * l->in_size);
}
