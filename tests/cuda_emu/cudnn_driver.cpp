// Runs conv_cudnn.cu's algorithm choice on the CPU: the file is compiled with
// DN_CUDNN against tests/cuda_emu/fake_cuda/cudnn.h, whose functions are
// defined here with scripted answers, and every call that matters is logged
// on stdout for tests/test_cuda_emulated.py to read.
//   cudnn_driver STEP...   STEP: fwd:BATCH:H:W | bwd:BATCH:H:W | bwd-first:BATCH:H:W
// (bwd-first: the network's first layer, no input delta).  The layer is a
// 3x3, pad 1, stride 1 convolution of 4 channels into 8.
//
// Scripted answers, so that the log shows which list an algorithm came from:
//   measured (cudnnFind*), fastest first: a tensor-core algorithm, one over
//     the 1 GiB workspace limit, algorithm 9 (backward: 19) in default math,
//     then algorithm H % 5 (backward: H % 4 + 10) in FMA math with H * 100
//     bytes;
//   heuristics (cudnnGet*_v7): one NOT_SUPPORTED, then algorithm 4
//     (backward: 14) in default math with H * 10 bytes.
// The workspace of algorithm A under the layer's descriptors
// (cudnnGet*WorkspaceSize): H * 100 + A bytes.
// DN_FAKE_FIND_FAILS=1: every cudnnFind* fails as out of memory and leaves a
// pending CUDA error; DN_FAKE_NO_FP32=1: no list has a usable entry;
// DN_FAKE_NO_FMA=1: the measured FMA entry is left out (default math only).
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include <cudnn.h>

#include "layers/conv_cudnn.cuh"

// ---- the CUDA runtime and the error helpers -------------------------------------------

static cudaError_t pending = cudaSuccess;  // what cudaGetLastError reports next
static size_t allocated_bytes;

cudaError_t cudaMalloc(void **pointer, size_t bytes)
{
    allocated_bytes = bytes;
    *pointer = malloc(1);
    return cudaSuccess;
}
cudaError_t cudaFree(void *pointer)
{
    free(pointer);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = pending;
    pending = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t) { return "fake CUDA error"; }

static char last_error[512];
dn_status dn_set_error_at(const char *, int, dn_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}
dn_status dn_cuda_fail(cudaError_t, const char *call, const char *, int)
{
    return dn_set_error_at("", 0, DN_ERR_CUDA, "%s failed", call);
}
void dn_gpu_record(dn_gpu *gpu, dn_status status)
{
    if (status != DN_OK && gpu->error == DN_OK) gpu->error = status;
}

// ---- cuDNN, scripted ----------------------------------------------------------------------

struct dn_fake_dnn { int unused; };
struct dn_fake_tensor { int n, c, h, w; };
struct dn_fake_filter { int k, c, h, w; };
struct dn_fake_conv { int pad, stride; };

static bool env_on(const char *name) { return getenv(name) && strcmp(getenv(name), "1") == 0; }

const char *cudnnGetErrorString(cudnnStatus_t) { return "fake cuDNN status"; }
cudnnStatus_t cudnnCreate(cudnnHandle_t *handle)
{
    *handle = new dn_fake_dnn();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle)
{
    delete handle;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_SUCCESS; }
#define FAKE_DESCRIPTOR(type, create, destroy)          \
    cudnnStatus_t create(type *d)                       \
    {                                                   \
        *d = new std::remove_pointer_t<type>();         \
        return CUDNN_STATUS_SUCCESS;                    \
    }                                                   \
    cudnnStatus_t destroy(type d)                       \
    {                                                   \
        delete d;                                       \
        return CUDNN_STATUS_SUCCESS;                    \
    }
FAKE_DESCRIPTOR(cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor)
FAKE_DESCRIPTOR(cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor)
FAKE_DESCRIPTOR(cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor)

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t, cudnnDataType_t, int n,
                                         int c, int h, int w)
{
    *d = {n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t, cudnnTensorFormat_t, int k,
                                         int c, int h, int w)
{
    *d = {k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad, int, int stride, int, int,
                                              int, cudnnConvolutionMode_t, cudnnDataType_t)
{
    *d = {pad, stride};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t, int) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t, cudnnMathType_t math)
{
    return math == CUDNN_FMA_MATH ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c, int *h, int *out_w)
{
    *n = x->n, *c = w->k;
    *h = (x->h + 2 * conv->pad - w->h) / conv->stride + 1;
    *out_w = (x->w + 2 * conv->pad - w->w) / conv->stride + 1;
    return CUDNN_STATUS_SUCCESS;
}

// the answer of one query: which = "forward", "data" or "filter"
template <typename Perf>
static cudnnStatus_t answer(const char *which, bool measured, int h, int *returned, Perf *perf)
{
    printf("%s %s h=%d\n", measured ? "find" : "guess", which, h);
    if (measured && env_on("DN_FAKE_FIND_FAILS")) {
        pending = cudaErrorMemoryAllocation;
        return CUDNN_STATUS_ALLOC_FAILED;
    }
    bool none = env_on("DN_FAKE_NO_FP32");
    cudnnStatus_t usable = none ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
    int base = strcmp(which, "forward") == 0 ? 0 : 10;
    memset(perf, 0, 4 * sizeof *perf);
    if (measured) {
        perf[0] = {base + 7, CUDNN_STATUS_SUCCESS, 1.f, 0, CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH, {}};
        perf[1] = {base + 6, CUDNN_STATUS_SUCCESS, 2.f, (size_t)2 << 30, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH, {}};
        perf[2] = {base + 9, usable, 2.5f, 0, CUDNN_DETERMINISTIC, CUDNN_DEFAULT_MATH, {}};
        perf[3] = {base + (base ? h % 4 : h % 5), usable, 3.f, (size_t)h * 100, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH,
                   {}};
        *returned = env_on("DN_FAKE_NO_FMA") ? 3 : 4;
    } else {
        perf[0] = {base + 5, CUDNN_STATUS_NOT_SUPPORTED, -1.f, 0, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH, {}};
        perf[1] = {base + 4, none ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS, -1.f, (size_t)h * 10,
                   CUDNN_DETERMINISTIC, CUDNN_DEFAULT_MATH, {}};
        *returned = 2;
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t,
                                                   cudnnConvolutionDescriptor_t, cudnnTensorDescriptor_t, int,
                                                   int *returned, cudnnConvolutionFwdAlgoPerf_t *perf)
{
    return answer("forward", true, x->h, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t, cudnnConvolutionDescriptor_t,
                                                     cudnnTensorDescriptor_t, int, int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf)
{
    return answer("forward", false, x->h, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t, cudnnFilterDescriptor_t,
                                                        cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                        cudnnTensorDescriptor_t dx, int, int *returned,
                                                        cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
    return answer("data", true, dx->h, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, cudnnFilterDescriptor_t,
                                                          cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                          cudnnTensorDescriptor_t dx, int, int *returned,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
    return answer("data", false, dx->h, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                          cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                          cudnnFilterDescriptor_t, int, int *returned,
                                                          cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
    return answer("filter", true, x->h, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                            cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                            cudnnFilterDescriptor_t, int, int *returned,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
    return answer("filter", false, x->h, returned, perf);
}

static cudnnStatus_t workspace_size(int algo, int h, size_t *size)
{
    *size = (size_t)h * 100 + algo;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t, cudnnConvolutionDescriptor_t,
                                                      cudnnTensorDescriptor_t, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *size)
{
    return workspace_size(algo, x->h, size);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, cudnnFilterDescriptor_t,
                                                           cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *size)
{
    return workspace_size(algo, dx->h, size);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t,
                                                             cudnnFilterDescriptor_t,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *size)
{
    return workspace_size(algo, x->h, size);
}

// a convolution: which algorithm, how much workspace it was given, and
// whether a CUDA error was left pending when it ran
static cudnnStatus_t ran(const char *which, int algo, size_t workspace_bytes, cudnnTensorDescriptor_t x)
{
    printf("run %s algo=%d workspace=%zu pending=%d n=%d h=%d\n", which, algo, workspace_bytes, pending != cudaSuccess,
           x->n, x->h);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void *, cudnnTensorDescriptor_t x, const void *,
                                      cudnnFilterDescriptor_t, const void *, cudnnConvolutionDescriptor_t,
                                      cudnnConvolutionFwdAlgo_t algo, void *, size_t bytes, const void *,
                                      cudnnTensorDescriptor_t, void *)
{
    return ran("forward", algo, bytes, x);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void *, cudnnTensorDescriptor_t x, const void *,
                                             cudnnTensorDescriptor_t, const void *, cudnnConvolutionDescriptor_t,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *, size_t bytes,
                                             const void *, cudnnFilterDescriptor_t, void *)
{
    return ran("filter", algo, bytes, x);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void *, cudnnFilterDescriptor_t, const void *,
                                           cudnnTensorDescriptor_t, const void *, cudnnConvolutionDescriptor_t,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *, size_t bytes, const void *,
                                           cudnnTensorDescriptor_t x, void *)
{
    return ran("data", algo, bytes, x);
}

// ---- the driver -------------------------------------------------------------------------

int main(int argc, char **argv)
{
    static float buffer[1];
    dn_layer l;
    memset(&l, 0, sizeof l);
    l.type = DN_LAYER_CONVOLUTIONAL;
    l.in_c = 4, l.out_c = 8;
    l.u.conv.filters = 8, l.u.conv.size = 3, l.u.conv.stride = 1, l.u.conv.pad = 1, l.u.conv.groups = 1;
    l.gpu.weights = l.gpu.output = l.gpu.delta = l.gpu.weight_grads = buffer;
    dn_gpu gpu;
    memset(&gpu, 0, sizeof gpu);
    dn_gpu_ctx gctx = {&gpu, buffer, NULL, NULL, 0, NULL, 0};
    dn_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.gpu = &gctx;
    for (int i = 1; i < argc; i++) {
        char what[16];
        int batch, h, w;
        if (sscanf(argv[i], "%15[a-z-]:%d:%d:%d", what, &batch, &h, &w) != 4) return 2;
        l.batch = batch, l.in_h = l.out_h = h, l.in_w = l.out_w = w;
        std::string step = what;
        gctx.input_delta = step == "bwd" ? buffer : NULL;
        ctx.train = step != "fwd";
        int handled = step == "fwd" ? dn_conv_cudnn_forward(&l, &ctx) : dn_conv_cudnn_backward(&l, &ctx);
        if (!handled) return 3;
        printf("workspace allocated=%zu\n", gpu.dnn_workspace_bytes);
        if (gpu.error != DN_OK) {
            printf("error %d: %s\n", (int)gpu.error, last_error);
            gpu.error = DN_OK;
        }
    }
    dn_conv_cudnn_free(&l);
    dn_cudnn_release(&gpu);
    return 0;
}
