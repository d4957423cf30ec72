// [convolutional] through cuDNN, as darknet's CUDNN=1 build: the convolution
// itself (forward, backward data, backward filter) in cuDNN; bias, batch norm
// and the activation stay ours (convolutional_layer.cu).  Compiled in with
// PYDARKNET_CUDNN=1 (make CUDNN=1); otherwise every entry answers "not
// handled" and convolutional_layer.cu runs im2col + cuBLAS.
//
// Numbers: FP32 FMA math only (no TF32 tensor cores), so results agree with
// the CPU path to float rounding, as the im2col path does.
#include "../cuda_common.cuh"
#include "conv_cudnn.cuh"

#ifndef DN_CUDNN

int dn_conv_cudnn_forward(dn_layer *l, const dn_ctx *ctx) { return 0; }
int dn_conv_cudnn_backward(dn_layer *l, const dn_ctx *ctx) { return 0; }
void dn_conv_cudnn_free(dn_layer *l) {}
void dn_cudnn_release(dn_gpu *gpu) {}
DN_API_CPP int dn_built_with_cudnn(void) { return 0; }

#else

#include <stdlib.h>
#include <string.h>

#include <cudnn.h>

DN_API_CPP int dn_built_with_cudnn(void) { return 1; }

// The most scratch one convolution may ask for; faster algorithms that want
// more are passed over.
static const size_t workspace_limit = (size_t)1 << 30;

static dn_status cudnn_fail(cudnnStatus_t s, const char *call, const char *file, int line)
{
    const char *base = strrchr(file, '/');
    return dn_set_error_at(file, line, DN_ERR_CUDA, "cuDNN error in %s (%s:%d): %s", call,
                           base ? base + 1 : file, line, cudnnGetErrorString(s));
}

#define DNN_TRY(call)                                                                  \
    do {                                                                               \
        cudnnStatus_t dn_s_ = (call);                                                  \
        if (dn_s_ != CUDNN_STATUS_SUCCESS) return cudnn_fail(dn_s_, #call, __FILE__, __LINE__); \
    } while (0)

// The algorithms chosen for one input shape of a layer.
typedef struct {
    int batch, in_h, in_w;        // the shape (0: an empty slot)
    cudnnConvolutionFwdAlgo_t forward_algo;
    size_t forward_bytes;
    int has_filter_algo;          // chosen on the first backward for this shape
    cudnnConvolutionBwdFilterAlgo_t filter_algo;
    size_t filter_bytes;
    int has_data_algo;            // ... that has an input delta (not the network's first layer)
    cudnnConvolutionBwdDataAlgo_t data_algo;
    size_t data_bytes;
} conv_algos;

// Shapes remembered per layer: multi-scale training visits 10 input sizes
// (320 to 608), and a measured choice costs a run of every algorithm.
#ifndef DN_CUDNN_SHAPES
#define DN_CUDNN_SHAPES 16
#endif

// What cuDNN needs for one convolution layer.
typedef struct {
    int batch, in_h, in_w;        // the shape the descriptors describe (0: none yet)
    cudnnTensorDescriptor_t input, output;
    cudnnFilterDescriptor_t weights;
    cudnnConvolutionDescriptor_t conv;
    conv_algos shapes[DN_CUDNN_SHAPES];
    int next_slot;                // where a new shape goes once every slot is taken (oldest first)
    conv_algos *algos;            // the current shape's
} conv_dnn;

static int uses_tensor_cores(cudnnMathType_t math)
{
    return math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

static dn_status handle_of(dn_gpu *gpu, cudnnHandle_t *out)
{
    if (!gpu->dnn) {
        cudnnHandle_t handle;
        DNN_TRY(cudnnCreate(&handle));
        cudnnStatus_t s = cudnnSetStream(handle, gpu->stream);
        if (s != CUDNN_STATUS_SUCCESS) {
            cudnnDestroy(handle);
            return cudnn_fail(s, "cudnnSetStream", __FILE__, __LINE__);
        }
        gpu->dnn = handle;
        // PYDARKNET_CUDNN_FIND=0: cuDNN's heuristics only, no measuring
        const char *find = getenv("PYDARKNET_CUDNN_FIND");
        gpu->dnn_measure = !(find && strcmp(find, "0") == 0);
    }
    *out = (cudnnHandle_t)gpu->dnn;
    return DN_OK;
}

static dn_status workspace_of(dn_gpu *gpu, size_t bytes, void **out)
{
    if (bytes > gpu->dnn_workspace_bytes) {
        CUDA_TRY(cudaStreamSynchronize(gpu->stream));
        if (gpu->dnn_workspace) cudaFree(gpu->dnn_workspace);
        gpu->dnn_workspace = NULL;
        gpu->dnn_workspace_bytes = 0;
        cudaError_t e = cudaMalloc(&gpu->dnn_workspace, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            gpu->dnn_workspace = NULL;
            return DN_FAIL(DN_ERR_OOM, "GPU %d: out of memory for %zu MiB of cuDNN workspace (%s)",
                           gpu->device, bytes >> 20, cudaGetErrorString(e));
        }
        gpu->dnn_workspace_bytes = bytes;
    }
    *out = gpu->dnn_workspace;
    return DN_OK;
}

static dn_status create_descriptors(conv_dnn *d)
{
    DNN_TRY(cudnnCreateTensorDescriptor(&d->input));
    DNN_TRY(cudnnCreateTensorDescriptor(&d->output));
    DNN_TRY(cudnnCreateFilterDescriptor(&d->weights));
    DNN_TRY(cudnnCreateConvolutionDescriptor(&d->conv));
    return DN_OK;
}

static void destroy_descriptors(conv_dnn *d)
{
    if (d->input) cudnnDestroyTensorDescriptor(d->input);
    if (d->output) cudnnDestroyTensorDescriptor(d->output);
    if (d->weights) cudnnDestroyFilterDescriptor(d->weights);
    if (d->conv) cudnnDestroyConvolutionDescriptor(d->conv);
}

static dn_status describe(const dn_layer *l, conv_dnn *d)
{
    int groups = l->u.conv.groups;
    int size = l->u.conv.size, stride = l->u.conv.stride, pad = l->u.conv.pad;
    DNN_TRY(cudnnSetTensor4dDescriptor(d->input, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, l->batch,
                                       l->in_c, l->in_h, l->in_w));
    DNN_TRY(cudnnSetTensor4dDescriptor(d->output, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, l->batch,
                                       l->u.conv.filters, l->out_h, l->out_w));
    DNN_TRY(cudnnSetFilter4dDescriptor(d->weights, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                       l->u.conv.filters, l->in_c / groups, size, size));
    // darknet's convolution is a cross-correlation (no kernel flip)
    DNN_TRY(cudnnSetConvolution2dDescriptor(d->conv, pad, pad, stride, stride, 1, 1,
                                            CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN_TRY(cudnnSetConvolutionGroupCount(d->conv, groups));
    DNN_TRY(cudnnSetConvolutionMathType(d->conv, CUDNN_FMA_MATH));
    // the output shape cuDNN computes must be the one the layer allocated
    int n, c, h, w;
    DNN_TRY(cudnnGetConvolution2dForwardOutputDim(d->conv, d->input, d->weights, &n, &c, &h, &w));
    if (n != l->batch || c != l->u.conv.filters || h != l->out_h || w != l->out_w)
        return DN_FAIL(DN_ERR_INTERNAL, "cuDNN computes a %dx%dx%dx%d output, the layer has %dx%dx%dx%d",
                       n, c, h, w, l->batch, l->u.conv.filters, l->out_h, l->out_w);
    return DN_OK;
}

// The first entry (they come fastest first) that succeeded in FP32 FMA math,
// else in default math without tensor cores (the descriptor's FMA math is
// what runs either way), within the workspace limit and accepted by
// `workspace_size` (the scratch the algorithm needs under this layer's
// descriptors, which can exceed what the measurement reported); 0 when none.
template <typename Perf, typename Algo, typename WorkspaceSize>
static int pick(const Perf *perf, int returned, WorkspaceSize workspace_size, Algo *algo, size_t *bytes)
{
    for (int fma_only = 1; fma_only >= 0; fma_only--)
        for (int i = 0; i < returned; i++) {
            size_t needed = 0;
            if (perf[i].status != CUDNN_STATUS_SUCCESS || uses_tensor_cores(perf[i].mathType) ||
                (fma_only && perf[i].mathType != CUDNN_FMA_MATH) ||
                workspace_size(perf[i].algo, &needed) != CUDNN_STATUS_SUCCESS)
                continue;
            if (needed < perf[i].memory) needed = perf[i].memory;
            if (needed > workspace_limit) continue;
            *algo = perf[i].algo;
            *bytes = needed;
            return 1;
        }
    return 0;
}

// One algorithm for one of the three convolutions: measured (cudnnFind*,
// which runs every algorithm on buffers of its own, as PyTorch's
// cudnn.benchmark does), else from cuDNN's heuristics (darknet's way) where
// measuring is off or fails (it needs memory of its own for the trials).
#define CHOOSE_ALGO(perf_type, count, find_call, heuristics_call, workspace_size, algo_out, bytes_out, what)  \
    do {                                                                                                 \
        perf_type perf[count];                                                                           \
        int returned = 0;                                                                                \
        if (measure) {                                                                                   \
            if ((find_call) == CUDNN_STATUS_SUCCESS && pick(perf, returned, workspace_size, algo_out, bytes_out)) \
                return DN_OK;                                                                            \
            cudaGetLastError(); /* in case the failed trials left an error in our runtime's state */     \
        }                                                                                                \
        returned = 0;                                                                                    \
        DNN_TRY(heuristics_call);                                                                        \
        if (pick(perf, returned, workspace_size, algo_out, bytes_out)) return DN_OK;                     \
        return DN_FAIL(DN_ERR_UNSUPPORTED, "cuDNN has no FP32 %s algorithm for this convolution within %zu MiB " \
                       "of workspace", what, workspace_limit >> 20);                                     \
    } while (0)

static dn_status choose_forward(cudnnHandle_t handle, const conv_dnn *d, int measure, conv_algos *a)
{
    CHOOSE_ALGO(cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                cudnnFindConvolutionForwardAlgorithm(handle, d->input, d->weights, d->conv, d->output,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf),
                cudnnGetConvolutionForwardAlgorithm_v7(handle, d->input, d->weights, d->conv, d->output,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf),
                [&](cudnnConvolutionFwdAlgo_t algo, size_t *size) {
                    return cudnnGetConvolutionForwardWorkspaceSize(handle, d->input, d->weights, d->conv,
                                                                   d->output, algo, size);
                },
                &a->forward_algo, &a->forward_bytes, "forward");
}

static dn_status choose_backward_data(cudnnHandle_t handle, const conv_dnn *d, int measure, conv_algos *a)
{
    CHOOSE_ALGO(cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                cudnnFindConvolutionBackwardDataAlgorithm(handle, d->weights, d->output, d->conv, d->input,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf),
                cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, d->weights, d->output, d->conv, d->input,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned,
                                                            perf),
                [&](cudnnConvolutionBwdDataAlgo_t algo, size_t *size) {
                    return cudnnGetConvolutionBackwardDataWorkspaceSize(handle, d->weights, d->output, d->conv,
                                                                        d->input, algo, size);
                },
                &a->data_algo, &a->data_bytes, "backward-data");
}

static dn_status choose_backward_filter(cudnnHandle_t handle, const conv_dnn *d, int measure, conv_algos *a)
{
    CHOOSE_ALGO(cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                cudnnFindConvolutionBackwardFilterAlgorithm(handle, d->input, d->output, d->conv, d->weights,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned,
                                                            perf),
                cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, d->input, d->output, d->conv, d->weights,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned,
                                                              perf),
                [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t *size) {
                    return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, d->input, d->output, d->conv,
                                                                          d->weights, algo, size);
                },
                &a->filter_algo, &a->filter_bytes, "backward-filter");
}

// The slot of the layer's current shape: found, or a fresh one (the oldest
// shape's once all are taken) with its forward algorithm chosen.
static dn_status algos_for_shape(const dn_layer *l, cudnnHandle_t handle, int measure, conv_dnn *d)
{
    for (int i = 0; i < DN_CUDNN_SHAPES; i++) {
        conv_algos *a = &d->shapes[i];
        if (a->batch == l->batch && a->in_h == l->in_h && a->in_w == l->in_w) {
            d->algos = a;
            return DN_OK;
        }
    }
    conv_algos *a = &d->shapes[d->next_slot];
    memset(a, 0, sizeof *a);
    DN_TRY(choose_forward(handle, d, measure, a));
    a->batch = l->batch;
    a->in_h = l->in_h;
    a->in_w = l->in_w;
    d->next_slot = (d->next_slot + 1) % DN_CUDNN_SHAPES;
    d->algos = a;
    return DN_OK;
}

// The layer's descriptors for its current shape (described again when the
// batch or the input size changed) and that shape's algorithms, the backward
// ones on request (backward 1: the weight gradient's, 2: also the input delta's).
static dn_status prepare(dn_layer *l, cudnnHandle_t handle, int measure, int backward, conv_dnn **out)
{
    conv_dnn *d = (conv_dnn *)l->gpu.dnn;
    if (!d) {
        d = (conv_dnn *)calloc(1, sizeof *d);
        if (!d) return DN_FAIL(DN_ERR_OOM, "out of memory");
        l->gpu.dnn = d;
        DN_TRY(create_descriptors(d));
    }
    if (d->batch != l->batch || d->in_h != l->in_h || d->in_w != l->in_w) {
        d->batch = 0;
        d->algos = NULL;
        DN_TRY(describe(l, d));
        DN_TRY(algos_for_shape(l, handle, measure, d));
        d->batch = l->batch;
        d->in_h = l->in_h;
        d->in_w = l->in_w;
    }
    conv_algos *a = d->algos;
    if (backward >= 1 && !a->has_filter_algo) {
        DN_TRY(choose_backward_filter(handle, d, measure, a));
        a->has_filter_algo = 1;
    }
    if (backward >= 2 && !a->has_data_algo) {
        DN_TRY(choose_backward_data(handle, d, measure, a));
        a->has_data_algo = 1;
    }
    *out = d;
    return DN_OK;
}

static dn_status begin(dn_layer *l, dn_gpu *gpu, int backward, cudnnHandle_t *handle, conv_dnn **d)
{
    DN_TRY(handle_of(gpu, handle));
    return prepare(l, *handle, gpu->dnn_measure, backward, d);
}

static dn_status forward(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    cudnnHandle_t handle;
    conv_dnn *d;
    void *workspace;
    DN_TRY(begin(l, gpu, 0, &handle, &d));
    const conv_algos *a = d->algos;
    DN_TRY(workspace_of(gpu, a->forward_bytes, &workspace));
    const float one = 1.f, zero = 0.f;
    DNN_TRY(cudnnConvolutionForward(handle, &one, d->input, ctx->gpu->input, d->weights, l->gpu.weights,
                                    d->conv, a->forward_algo, workspace, a->forward_bytes, &zero,
                                    d->output, l->gpu.output));
    return DN_OK;
}

// Gradients accumulate (beta = 1) into the weight gradients and into the
// input's delta, as the im2col path and darknet's cuDNN path do.
static dn_status backward(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu *gpu = ctx->gpu->gpu;
    cudnnHandle_t handle;
    conv_dnn *d;
    void *workspace;
    DN_TRY(begin(l, gpu, ctx->gpu->input_delta ? 2 : 1, &handle, &d));
    const conv_algos *a = d->algos;
    size_t bytes = a->filter_bytes;
    if (ctx->gpu->input_delta && a->data_bytes > bytes) bytes = a->data_bytes;
    DN_TRY(workspace_of(gpu, bytes, &workspace));
    const float one = 1.f;
    DNN_TRY(cudnnConvolutionBackwardFilter(handle, &one, d->input, ctx->gpu->input, d->output,
                                           l->gpu.delta, d->conv, a->filter_algo, workspace,
                                           a->filter_bytes, &one, d->weights, l->gpu.weight_grads));
    if (ctx->gpu->input_delta)
        DNN_TRY(cudnnConvolutionBackwardData(handle, &one, d->weights, l->gpu.weights, d->output,
                                             l->gpu.delta, d->conv, a->data_algo, workspace,
                                             a->data_bytes, &one, d->input, ctx->gpu->input_delta));
    return DN_OK;
}

int dn_conv_cudnn_forward(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu_record(ctx->gpu->gpu, forward(l, ctx));
    return 1;
}

int dn_conv_cudnn_backward(dn_layer *l, const dn_ctx *ctx)
{
    dn_gpu_record(ctx->gpu->gpu, backward(l, ctx));
    return 1;
}

void dn_conv_cudnn_free(dn_layer *l)
{
    conv_dnn *d = (conv_dnn *)l->gpu.dnn;
    if (!d) return;
    destroy_descriptors(d);
    free(d);
    l->gpu.dnn = NULL;
}

void dn_cudnn_release(dn_gpu *gpu)
{
    if (gpu->dnn_workspace) cudaFree(gpu->dnn_workspace);
    gpu->dnn_workspace = NULL;
    gpu->dnn_workspace_bytes = 0;
    if (gpu->dnn) cudnnDestroy((cudnnHandle_t)gpu->dnn);
    gpu->dnn = NULL;
}

#endif
