// The [region] and [yolo] losses on the GPU: the same code as the host's
// (layers/detection_loss.h), one thread per anchor-cell, then one thread per
// image for its truths (in order, as darknet), then the sum of the squared
// deltas.  Sums come back as per-block partials (a fixed grid of
// DN_LOSS_BLOCKS blocks, so the same partition every run) and per-image
// statistics, which the host adds up in a fixed order.  Built only on
// cuda_device.cuh, so tests/cuda_emu runs these kernels on the CPU.
#ifndef DN_DETECTION_LOSS_KERNELS_CUH
#define DN_DETECTION_LOSS_KERNELS_CUH

#include "../cuda_device.cuh"

extern "C" {
#include "detection_loss.h"
}

#define DN_LOSS_BLOCKS 128
#define DN_LOSS_THREADS 256

// the loss's scratch (one device buffer of floats per [region]/[yolo] layer):
//   anchors (2 x anchors) | mask (yolo: n_anchors ints) | truths (batch x truth_stride)
//   | objectness partials (DN_LOSS_BLOCKS) | squared-delta partials (DN_LOSS_BLOCKS)
//   | per-image sums (batch x DN_LOSS_SUMS)
// The last three are contiguous: one download brings all of them back.
typedef struct {
    size_t anchors, mask, truths, results, floats;  // offsets, and the whole size
    size_t result_floats;                            // what the download brings back
} dn_loss_scratch;

static inline dn_loss_scratch dn_loss_scratch_layout(int anchor_pairs, int mask_ints, int batch, int truth_stride)
{
    dn_loss_scratch s;
    s.anchors = 0;
    s.mask = s.anchors + 2 * (size_t)anchor_pairs;
    s.truths = s.mask + (size_t)mask_ints;
    s.results = s.truths + (size_t)batch * truth_stride;
    s.result_floats = 2 * (size_t)DN_LOSS_BLOCKS + (size_t)batch * DN_LOSS_SUMS;
    s.floats = s.results + s.result_floats;
    return s;
}

// the two losses' stages by argument type, for the kernels below
static __device__ __forceinline__ float cell_loss(const dn_region_loss_args *a, const float *truths, int b,
                                                  int anchor, int cell)
{
    return dn_region_cell_loss(a, truths, b, anchor, cell);
}
static __device__ __forceinline__ float cell_loss(const dn_yolo_loss_args *a, const float *truths, int b,
                                                  int anchor, int cell)
{
    return dn_yolo_cell_loss(a, truths, b, anchor, cell);
}
static __device__ __forceinline__ void truths_loss(const dn_region_loss_args *a, const float *truths, int b,
                                                   float *sums)
{
    dn_region_truths_loss(a, truths, b, sums);
}
static __device__ __forceinline__ void truths_loss(const dn_yolo_loss_args *a, const float *truths, int b,
                                                   float *sums)
{
    dn_yolo_truths_loss(a, truths, b, sums);
}

// one anchor-cell per thread (batch x anchors x cells); each block's sum of
// objectness into objectness_partials[block]
template <typename Args>
__global__ void loss_cells_kernel(Args a, const float *truths, int truth_stride, int batch,
                                  float *objectness_partials)
{
    int spatial = a.w * a.h;
    size_t n = (size_t)batch * a.n_anchors * spatial;
    float objectness = 0;
    GRID_STRIDE(k, n)
    {
        int cell = (int)(k % spatial);
        int anchor = (int)(k / spatial % a.n_anchors);
        int b = (int)(k / ((size_t)spatial * a.n_anchors));
        objectness += cell_loss(&a, truths + (size_t)b * truth_stride, b, anchor, cell);
    }
    float block = dn_block_sum(objectness);
    if (threadIdx.x == 0) objectness_partials[blockIdx.x] = block;
}

// one image per thread, its truths in order
template <typename Args>
__global__ void loss_truths_kernel(Args a, const float *truths, int truth_stride, int batch, float *image_sums)
{
    GRID_STRIDE(b, (size_t)batch)
    {
        float *sums = image_sums + b * DN_LOSS_SUMS;
        for (int k = 0; k < DN_LOSS_SUMS; k++) sums[k] = 0;
        truths_loss(&a, truths + b * truth_stride, (int)b, sums);
    }
}

// darknet's cost: the squared magnitude of the whole delta, per block
__global__ void squares_partials_kernel(const float *x, size_t n, float *partials)
{
    float sum = 0;
    GRID_STRIDE(i, n) sum += x[i] * x[i];
    float block = dn_block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

// The host's part, once the results are downloaded: the cost, and the
// statistics as dn_detection_stats_from_sums takes them (batch sums).
static inline void dn_loss_results(const float *results, int batch, float *cost, float *objectness,
                                   float *batch_sums)
{
    const float *objectness_partials = results, *square_partials = results + DN_LOSS_BLOCKS;
    const float *image_sums = results + 2 * DN_LOSS_BLOCKS;
    *cost = 0;
    *objectness = 0;
    for (int k = 0; k < DN_LOSS_BLOCKS; k++) {
        *objectness += objectness_partials[k];
        *cost += square_partials[k];
    }
    for (int k = 0; k < DN_LOSS_SUMS; k++) batch_sums[k] = 0;
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < DN_LOSS_SUMS; k++) batch_sums[k] += image_sums[(size_t)b * DN_LOSS_SUMS + k];
}

#endif
