// cuDNN's convolutions for the emulated CUDA build with DN_CUDNN
// (emulated_build.py --cudnn), on the API names of fake_cuda/cudnn.h:
// real arithmetic (im2col + the engine's CPU GEMM per image and group),
// alpha/beta as cuDNN defines them, and three algorithms per direction that
// differ only in what they report: 0 (FMA math, no workspace, slowest),
// 1 (FMA math, a workspace of a quarter of the columns, faster), 2
// (tensor-op math, fastest, which the engine must not pick: it fails to
// run).  A convolution given less workspace than its algorithm asked for
// fails, and its workspace is written over, as a real algorithm's would be.
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

extern "C" {
#include "gemm.h"
#include "im2col.h"
}

struct dn_fake_dnn { cudaStream_t stream; };
struct dn_fake_tensor { int n, c, h, w; };
struct dn_fake_filter { int k, c, h, w; };
struct dn_fake_conv { int pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, groups; cudnnMathType_t math; };

const char *cudnnGetErrorString(cudnnStatus_t status)
{
    return status == CUDNN_STATUS_SUCCESS ? "CUDNN_STATUS_SUCCESS" : "CUDNN_STATUS_NOT_SUPPORTED (emulated)";
}
cudnnStatus_t cudnnCreate(cudnnHandle_t *handle)
{
    *handle = new dn_fake_dnn{nullptr};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle)
{
    delete handle;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream)
{
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

#define CREATE_DESTROY(kind, type)                                                  \
    cudnnStatus_t cudnnCreate##kind##Descriptor(type *d)                            \
    {                                                                               \
        *d = new std::remove_pointer_t<type>{};                                     \
        return CUDNN_STATUS_SUCCESS;                                                \
    }                                                                               \
    cudnnStatus_t cudnnDestroy##kind##Descriptor(type d)                            \
    {                                                                               \
        delete d;                                                                   \
        return CUDNN_STATUS_SUCCESS;                                                \
    }
CREATE_DESTROY(Tensor, cudnnTensorDescriptor_t)
CREATE_DESTROY(Filter, cudnnFilterDescriptor_t)
CREATE_DESTROY(Convolution, cudnnConvolutionDescriptor_t)

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t, cudnnDataType_t, int n,
                                         int c, int h, int w)
{
    if (n < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = {n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t, cudnnTensorFormat_t, int k,
                                         int c, int h, int w)
{
    if (k < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = {k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t, cudnnDataType_t)
{
    *d = {pad_h, pad_w, u, v, dilation_h, dilation_w, 1, CUDNN_DEFAULT_MATH};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups)
{
    d->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math)
{
    d->math = math;
    return CUDNN_STATUS_SUCCESS;
}
static int output_size(int in, int pad, int k, int stride) { return (in + 2 * pad - k) / stride + 1; }
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c, int *h, int *out_w)
{
    *n = x->n;
    *c = w->k;
    *h = output_size(x->h, conv->pad_h, w->h, conv->stride_h);
    *out_w = output_size(x->w, conv->pad_w, w->w, conv->stride_w);
    return CUDNN_STATUS_SUCCESS;
}

// ---- the shape this emulation supports, and its algorithms --------------------------------

struct shape {
    int batch, in_c, in_h, in_w, filters, out_h, out_w, size, stride, pad, groups;
    int group_in() const { return in_c / groups; }
    int group_filters() const { return filters / groups; }
    size_t kernel_len() const { return (size_t)group_in() * size * size; }
    size_t pixels() const { return (size_t)out_h * out_w; }
};

static bool shape_of(cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                     cudnnTensorDescriptor_t y, shape *s)
{
    if (w->h != w->w || conv->pad_h != conv->pad_w || conv->stride_h != conv->stride_w || conv->dilation_h != 1 ||
        conv->dilation_w != 1 || conv->groups < 1 || x->c % conv->groups || w->k % conv->groups ||
        w->c * conv->groups != x->c || y->n != x->n || y->c != w->k ||
        y->h != output_size(x->h, conv->pad_h, w->h, conv->stride_h) ||
        y->w != output_size(x->w, conv->pad_w, w->w, conv->stride_w))
        return false;
    *s = {x->n, x->c, x->h, x->w, w->k, y->h, y->w, w->h, conv->stride_h, conv->pad_h, conv->groups};
    return true;
}

static size_t algo_bytes(const shape &s, int algo)
{
    return algo == 1 ? s.kernel_len() * s.pixels() * sizeof(float) / 4 : 0;
}

template <typename Perf>
static cudnnStatus_t list_algorithms(const shape &s, int requested, int *returned, Perf *perf)
{
    const float times[3] = {3.f, 1.f, .5f};
    const cudnnMathType_t math[3] = {CUDNN_FMA_MATH, CUDNN_FMA_MATH, CUDNN_TENSOR_OP_MATH};
    int order[3] = {2, 1, 0};  // fastest first, as cuDNN sorts them
    *returned = requested < 3 ? requested : 3;
    for (int i = 0; i < *returned; i++) {
        int algo = order[i];
        perf[i] = {};
        perf[i].algo = algo;
        perf[i].status = CUDNN_STATUS_SUCCESS;
        perf[i].time = times[algo];
        perf[i].memory = algo_bytes(s, algo);
        perf[i].determinism = CUDNN_DETERMINISTIC;
        perf[i].mathType = math[algo];
    }
    return CUDNN_STATUS_SUCCESS;
}

#define FIND_AND_GUESS(find, guess, Perf, Desc1, Desc2, Desc3, shape_args)                                       \
    cudnnStatus_t find(cudnnHandle_t, Desc1 a, Desc2 b, cudnnConvolutionDescriptor_t conv, Desc3 c, int requested, \
                       int *returned, Perf *perf)                                                                 \
    {                                                                                                             \
        shape s;                                                                                                  \
        if (!shape_of shape_args) return CUDNN_STATUS_NOT_SUPPORTED;                                              \
        return list_algorithms(s, requested, returned, perf);                                                     \
    }                                                                                                             \
    cudnnStatus_t guess(cudnnHandle_t h, Desc1 a, Desc2 b, cudnnConvolutionDescriptor_t conv, Desc3 c,            \
                        int requested, int *returned, Perf *perf)                                                 \
    {                                                                                                             \
        return find(h, a, b, conv, c, requested, returned, perf);                                                 \
    }
FIND_AND_GUESS(cudnnFindConvolutionForwardAlgorithm, cudnnGetConvolutionForwardAlgorithm_v7,
               cudnnConvolutionFwdAlgoPerf_t, cudnnTensorDescriptor_t, cudnnFilterDescriptor_t,
               cudnnTensorDescriptor_t, (a, b, conv, c, &s))
FIND_AND_GUESS(cudnnFindConvolutionBackwardDataAlgorithm, cudnnGetConvolutionBackwardDataAlgorithm_v7,
               cudnnConvolutionBwdDataAlgoPerf_t, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t,
               cudnnTensorDescriptor_t, (c, a, conv, b, &s))
FIND_AND_GUESS(cudnnFindConvolutionBackwardFilterAlgorithm, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
               cudnnConvolutionBwdFilterAlgoPerf_t, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t,
               cudnnFilterDescriptor_t, (a, c, conv, b, &s))

#define WORKSPACE_SIZE(name, Desc1, Desc2, Desc3, Algo, shape_args)                                              \
    cudnnStatus_t name(cudnnHandle_t, Desc1 a, Desc2 b, cudnnConvolutionDescriptor_t conv, Desc3 c, Algo algo,   \
                       size_t *bytes)                                                                             \
    {                                                                                                             \
        shape s;                                                                                                  \
        if (!shape_of shape_args || algo < 0 || algo > 2) return CUDNN_STATUS_NOT_SUPPORTED;                      \
        *bytes = algo_bytes(s, algo);                                                                             \
        return CUDNN_STATUS_SUCCESS;                                                                              \
    }
WORKSPACE_SIZE(cudnnGetConvolutionForwardWorkspaceSize, cudnnTensorDescriptor_t, cudnnFilterDescriptor_t,
               cudnnTensorDescriptor_t, cudnnConvolutionFwdAlgo_t, (a, b, conv, c, &s))
WORKSPACE_SIZE(cudnnGetConvolutionBackwardDataWorkspaceSize, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t,
               cudnnTensorDescriptor_t, cudnnConvolutionBwdDataAlgo_t, (c, a, conv, b, &s))
WORKSPACE_SIZE(cudnnGetConvolutionBackwardFilterWorkspaceSize, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t,
               cudnnFilterDescriptor_t, cudnnConvolutionBwdFilterAlgo_t, (a, c, conv, b, &s))

// An algorithm runs with the workspace it asked for, and uses it; algorithm
// 2's tensor-op math is refused (the engine asks for FP32 FMA).  With
// DN_EMU_CUDNN_LOG set, each call appends "DIRECTION algo=A" to that file.
static bool workspace_fits(const char *direction, const shape &s, int algo, void *workspace, size_t bytes)
{
    if (const char *log = getenv("DN_EMU_CUDNN_LOG")) {
        if (FILE *f = fopen(log, "a")) {
            fprintf(f, "%s algo=%d\n", direction, algo);
            fclose(f);
        }
    }
    size_t needed = algo_bytes(s, algo);
    return algo >= 0 && algo <= 1 && bytes >= needed && (!needed || workspace);
}
static void scribble(const shape &s, int algo, void *workspace)
{
    if (size_t needed = algo_bytes(s, algo)) memset(workspace, 0x7F, needed);
}

// the im2col columns of group g of image b of x
static void columns_of(const shape &s, const float *x, int b, int g, float *col)
{
    const float *image = x + ((size_t)b * s.in_c + (size_t)g * s.group_in()) * s.in_h * s.in_w;
    dn_im2col(NULL, image, s.group_in(), s.in_h, s.in_w, s.size, s.stride, s.pad, col);
}

// the arithmetic, run when the handle's stream gets to it
static void forward(const shape &s, float alpha, const void *x, const void *w, float beta, void *y);
static void backward_filter(const shape &s, float alpha, const void *x, const void *dy, float scale, void *dw);
static void backward_data(const shape &s, float a, const void *w, const void *dy, float scale, void *dx);

// y = alpha * conv(x, w) + beta * y (y not read where beta is 0)
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace, size_t workspace_bytes,
                                      const void *beta, cudnnTensorDescriptor_t yd, void *y)
{
    shape s;
    if (!shape_of(xd, wd, conv, yd, &s) || !workspace_fits("forward", s, algo, workspace, workspace_bytes))
        return CUDNN_STATUS_NOT_SUPPORTED;
    float a = *(const float *)alpha, b = *(const float *)beta;
    dn_emu_enqueue("cudnnConvolutionForward", handle->stream, [=] {
        scribble(s, algo, workspace);
        forward(s, a, x, w, b, y);
    });
    return CUDNN_STATUS_SUCCESS;
}
static void forward(const shape &s, float alpha, const void *x, const void *w, float beta, void *y)
{
    std::vector<float> col(s.kernel_len() * s.pixels());
    for (int b = 0; b < s.batch; b++)
        for (int g = 0; g < s.groups; g++) {
            columns_of(s, (const float *)x, b, g, col.data());
            float *out = (float *)y + ((size_t)b * s.filters + (size_t)g * s.group_filters()) * s.pixels();
            const float *weights = (const float *)w + (size_t)g * s.group_filters() * s.kernel_len();
            dn_gemm(NULL, 0, 0, s.group_filters(), (int)s.pixels(), (int)s.kernel_len(), alpha, weights,
                    (int)s.kernel_len(), col.data(), (int)s.pixels(), beta, out, (int)s.pixels());
        }
}

// dw = alpha * sum over images of dy x columns^T + beta * dw
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha, cudnnTensorDescriptor_t xd,
                                             const void *x, cudnnTensorDescriptor_t dyd, const void *dy,
                                             cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdFilterAlgo_t algo,
                                             void *workspace, size_t workspace_bytes, const void *beta,
                                             cudnnFilterDescriptor_t dwd, void *dw)
{
    shape s;
    if (!shape_of(xd, dwd, conv, dyd, &s) || !workspace_fits("filter", s, algo, workspace, workspace_bytes))
        return CUDNN_STATUS_NOT_SUPPORTED;
    float a = *(const float *)alpha, b = *(const float *)beta;
    dn_emu_enqueue("cudnnConvolutionBackwardFilter", handle->stream, [=] {
        scribble(s, algo, workspace);
        backward_filter(s, a, x, dy, b, dw);
    });
    return CUDNN_STATUS_SUCCESS;
}
static void backward_filter(const shape &s, float alpha, const void *x, const void *dy, float scale, void *dw)
{
    std::vector<float> col(s.kernel_len() * s.pixels());
    float *grads = (float *)dw;
    size_t n_grads = (size_t)s.filters * s.kernel_len();
    for (size_t i = 0; i < n_grads; i++) grads[i] = scale == 0.f ? 0.f : grads[i] * scale;
    for (int b = 0; b < s.batch; b++)
        for (int g = 0; g < s.groups; g++) {
            columns_of(s, (const float *)x, b, g, col.data());
            const float *delta = (const float *)dy + ((size_t)b * s.filters + (size_t)g * s.group_filters()) * s.pixels();
            dn_gemm(NULL, 0, 1, s.group_filters(), (int)s.kernel_len(), (int)s.pixels(), alpha, delta,
                    (int)s.pixels(), col.data(), (int)s.pixels(), 1.f, grads + (size_t)g * s.group_filters() * s.kernel_len(),
                    (int)s.kernel_len());
        }
}

// dx = alpha * col2im(w^T x dy) + beta * dx
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha, cudnnFilterDescriptor_t wd,
                                           const void *w, cudnnTensorDescriptor_t dyd, const void *dy,
                                           cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *workspace, size_t workspace_bytes, const void *beta,
                                           cudnnTensorDescriptor_t dxd, void *dx)
{
    shape s;
    if (!shape_of(dxd, wd, conv, dyd, &s) || !workspace_fits("data", s, algo, workspace, workspace_bytes))
        return CUDNN_STATUS_NOT_SUPPORTED;
    float a = *(const float *)alpha, b = *(const float *)beta;
    dn_emu_enqueue("cudnnConvolutionBackwardData", handle->stream, [=] {
        scribble(s, algo, workspace);
        backward_data(s, a, w, dy, b, dx);
    });
    return CUDNN_STATUS_SUCCESS;
}
static void backward_data(const shape &s, float a, const void *w, const void *dy, float scale, void *dx)
{
    std::vector<float> col(s.kernel_len() * s.pixels());
    size_t image_floats = (size_t)s.in_c * s.in_h * s.in_w;
    std::vector<float> image(image_floats);
    for (int b = 0; b < s.batch; b++) {
        std::fill(image.begin(), image.end(), 0.f);
        for (int g = 0; g < s.groups; g++) {
            const float *delta = (const float *)dy + ((size_t)b * s.filters + (size_t)g * s.group_filters()) * s.pixels();
            const float *weights = (const float *)w + (size_t)g * s.group_filters() * s.kernel_len();
            dn_gemm(NULL, 1, 0, (int)s.kernel_len(), (int)s.pixels(), s.group_filters(), 1.f, weights,
                    (int)s.kernel_len(), delta, (int)s.pixels(), 0.f, col.data(), (int)s.pixels());
            dn_col2im(NULL, col.data(), s.group_in(), s.in_h, s.in_w, s.size, s.stride, s.pad,
                      image.data() + (size_t)g * s.group_in() * s.in_h * s.in_w);
        }
        float *out = (float *)dx + (size_t)b * image_floats;
        for (size_t i = 0; i < image_floats; i++) out[i] = a * image[i] + (scale == 0.f ? 0.f : scale * out[i]);
    }
}
