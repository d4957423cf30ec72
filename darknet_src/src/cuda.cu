// The CUDA runtime side of the engine (see cuda.h): devices, errors, the
// device copy of a network, its forward/backward/update, host transfers,
// frames to input on the GPU, and the collectives of multi-GPU training.
#include "cuda_common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DN_NCCL
#include <nccl.h>
#include <pthread.h>
#endif

extern "C" {
#include "image.h"
#include "layers/detection_layers.h"
}
#include "layers/batchnorm_gpu.cuh"
#include "layers/conv_cudnn.cuh"
#include "layers/convolutional_gpu.cuh"
#include "layers/detection_loss_gpu.cuh"


// ---- errors -------------------------------------------------------------------------

dn_status dn_cuda_fail(cudaError_t e, const char *call, const char *file, int line)
{
    // reported here, so not again by the next launch's cudaGetLastError (an
    // allocation failure is not sticky; a sticky error keeps failing every call)
    cudaGetLastError();
    const char *base = strrchr(file, '/');
    return dn_set_error_at(file, line, DN_ERR_CUDA, "CUDA error in %s (%s:%d): %s (%s)", call,
                           base ? base + 1 : file, line, cudaGetErrorString(e),
                           cudaGetErrorName(e));
}

const char *dn_cublas_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_?";
    }
}

dn_status dn_cublas_fail(cublasStatus_t s, const char *call, const char *file, int line)
{
    const char *base = strrchr(file, '/');
    return dn_set_error_at(file, line, DN_ERR_CUDA, "cuBLAS error in %s (%s:%d): %s", call,
                           base ? base + 1 : file, line, dn_cublas_name(s));
}

void dn_gpu_record(dn_gpu *gpu, dn_status status)
{
    if (gpu->error != DN_OK || status == DN_OK) return;
    gpu->error = status;
    snprintf(gpu->error_message, sizeof gpu->error_message, "%s", dn_last_error());
}

// The first failure recorded by a layer since the last call, as this thread's error.
static dn_status take_recorded(dn_gpu *gpu)
{
    if (gpu->error == DN_OK) return DN_OK;
    dn_status st = gpu->error;
    gpu->error = DN_OK;
    return DN_FAIL(st, "%s", gpu->error_message);
}

// The stream's queue run out, then the first failure recorded in it or the
// synchronisation's own: also after a failure, nothing issued is left
// running (it may read the caller's memory, or the next pass's buffers).
static dn_status drain(dn_gpu *gpu)
{
    cudaError_t synced = cudaStreamSynchronize(gpu->stream);
    DN_TRY(take_recorded(gpu));
    if (synced != cudaSuccess) return dn_cuda_fail(synced, "cudaStreamSynchronize", __FILE__, __LINE__);
    return DN_OK;
}

static dn_status use_device(const dn_gpu *gpu)
{
    CUDA_TRY(cudaSetDevice(gpu->device));
    return DN_OK;
}

// ---- devices ---------------------------------------------------------------------------

DN_API_CPP int dn_built_with_cuda(void) { return 1; }

DN_API_CPP int dn_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: a CPU machine */
        return 0;
    }
    return n;
}

DN_API_CPP dn_status dn_cuda_device_name(int device, char *buf, int size)
{
    if (!buf || size < 1) return DN_FAIL(DN_ERR_ARG, "buffer must not be NULL");
    buf[0] = '\0';
    int n = dn_cuda_device_count();
    if (device < 0 || device >= n)
        return DN_FAIL(DN_ERR_ARG, "GPU %d does not exist (this machine has %d CUDA device%s)",
                       device, n, n == 1 ? "" : "s");
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    snprintf(buf, (size_t)size, "%s", prop.name);
    return DN_OK;
}

// ---- transfers ----------------------------------------------------------------------------

extern "C" dn_status dn_cuda_host_alloc(size_t bytes, void **out)
{
    *out = NULL;
    cudaError_t e = cudaHostAlloc(out, bytes, cudaHostAllocPortable);
    if (e == cudaSuccess) return DN_OK;
    cudaGetLastError(); /* not sticky: clear it for the next call */
    *out = NULL;
    return dn_cuda_fail(e, "cudaHostAlloc", __FILE__, __LINE__);
}

extern "C" void dn_cuda_host_free(void *p)
{
    if (p) cudaFreeHost(p);
}

dn_status dn_to_host(dn_gpu *gpu, float *host, const float *device, size_t n)
{
    if (!n) return DN_OK;
    CUDA_TRY(cudaMemcpyAsync(host, device, n * sizeof(float), cudaMemcpyDeviceToHost, gpu->stream));
    CUDA_TRY(cudaStreamSynchronize(gpu->stream));
    return DN_OK;
}

dn_status dn_to_device(dn_gpu *gpu, float *device, const float *host, size_t n)
{
    if (!n) return DN_OK;
    CUDA_TRY(cudaMemcpyAsync(device, host, n * sizeof(float), cudaMemcpyHostToDevice, gpu->stream));
    CUDA_TRY(cudaStreamSynchronize(gpu->stream));
    return DN_OK;
}

void dn_gemm_gpu(dn_gpu *gpu, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T
    cublasStatus_t s = cublasSgemm(gpu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                                   &beta, C, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) dn_gpu_record(gpu, dn_cublas_fail(s, "cublasSgemm", __FILE__, __LINE__));
}

void dn_gemm_strided_gpu(dn_gpu *gpu, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                         int lda, long long stride_a, const float *B, int ldb, long long stride_b, float beta,
                         float *C, int ldc, long long stride_c, int count)
{
    if (M <= 0 || N <= 0 || count <= 0) return;
    if (count == 1) {
        dn_gemm_gpu(gpu, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    // the same row-major -> column-major swap as dn_gemm_gpu, per batch entry
    cublasStatus_t s = cublasSgemmStridedBatched(gpu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                 ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb,
                                                 stride_b, A, lda, stride_a, &beta, C, ldc, stride_c, count);
    if (s != CUBLAS_STATUS_SUCCESS)
        dn_gpu_record(gpu, dn_cublas_fail(s, "cublasSgemmStridedBatched", __FILE__, __LINE__));
}

// ---- device buffers of a network -------------------------------------------------------------

static dn_status device_alloc(size_t n, float **out, const char *what, int device)
{
    *out = NULL;
    if (!n) return DN_OK;
    cudaError_t e = cudaMalloc((void **)out, n * sizeof(float));
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        return DN_FAIL(DN_ERR_OOM, "out of GPU memory on GPU %d allocating %.1f MiB for %s "
                       "(%zu MiB free of %zu MiB): use a smaller batch or input size",
                       device, (double)(n * sizeof(float)) / (1 << 20), what, free_bytes >> 20, total >> 20);
    }
    if (e != cudaSuccess) return dn_cuda_fail(e, "cudaMalloc", __FILE__, __LINE__);
    return DN_OK;
}

static dn_status device_alloc_zero(size_t n, float **out, const char *what, int device)
{
    DN_TRY(device_alloc(n, out, what, device));
    if (n) CUDA_TRY(cudaMemset(*out, 0, n * sizeof(float)));
    return DN_OK;
}

static void device_free(float **p)
{
    if (*p) cudaFree(*p);
    *p = NULL;
}

static void free_layer_buffers(dn_layer *l)
{
    device_free(&l->gpu.output);
    device_free(&l->gpu.delta);
    device_free(&l->gpu.bn_x);
    device_free(&l->gpu.bn_x_norm);
    device_free(&l->gpu.bn_mean);
    device_free(&l->gpu.bn_variance);
    device_free(&l->gpu.bn_mean_delta);
    device_free(&l->gpu.bn_variance_delta);
    device_free(&l->gpu.mask);
    device_free(&l->gpu.factors);
    device_free(&l->gpu.bn_partials);
    device_free(&l->gpu.loss);
    if (l->gpu.indexes) cudaFree(l->gpu.indexes);
    l->gpu.indexes = NULL;
}

static dn_status alloc_layer_buffers(dn_network *net, dn_layer *l)
{
    int dev = net->gpu_index;
    size_t n = (size_t)l->batch * l->out_size;
    DN_TRY(device_alloc_zero(n, &l->gpu.output, "layer output", dev));
    if (net->train) DN_TRY(device_alloc_zero(n, &l->gpu.delta, "layer delta", dev));
    if (l->batch_normalize) {
        DN_TRY(device_alloc_zero(2 * (size_t)l->n_biases, &l->gpu.factors, "BN factors", dev));
        if (net->train) {
            DN_TRY(device_alloc_zero(n, &l->gpu.bn_x, "BN cache", dev));
            DN_TRY(device_alloc_zero(n, &l->gpu.bn_x_norm, "BN cache", dev));
            DN_TRY(device_alloc_zero((size_t)l->n_biases, &l->gpu.bn_mean, "BN mean", dev));
            DN_TRY(device_alloc_zero((size_t)l->n_biases, &l->gpu.bn_variance, "BN variance", dev));
            DN_TRY(device_alloc_zero((size_t)l->n_biases, &l->gpu.bn_mean_delta, "BN mean delta", dev));
            DN_TRY(device_alloc_zero((size_t)l->n_biases, &l->gpu.bn_variance_delta, "BN variance delta", dev));
            DN_TRY(device_alloc_zero(dn_batchnorm_partials_floats(l->n_biases), &l->gpu.bn_partials,
                                     "BN partial sums", dev));
        }
    }
    if (l->type == DN_LAYER_MAXPOOL && net->train) {
        cudaError_t e = cudaMalloc((void **)&l->gpu.indexes, n * sizeof(int));
        if (e != cudaSuccess) return dn_cuda_fail(e, "cudaMalloc(indexes)", __FILE__, __LINE__);
    }
    if (l->type == DN_LAYER_DROPOUT && net->train)
        DN_TRY(device_alloc_zero(n, &l->gpu.mask, "dropout mask", dev));
    if (net->train)  // the region / yolo loss's anchors, truths and results
        DN_TRY(device_alloc(dn_detection_loss_gpu_floats(l, net->truth_size), &l->gpu.loss, "loss scratch", dev));
    return DN_OK;
}

// parameter views into the network's device buffers, with the host layout
static void bind_parameter_views(dn_network *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_params) continue;
        dn_layer_param_views(l, net->params_gpu, &l->gpu.biases, &l->gpu.scales, &l->gpu.weights);
        if (net->grads_gpu) {
            dn_layer_param_views(l, net->grads_gpu, &l->gpu.bias_grads, &l->gpu.scale_grads, &l->gpu.weight_grads);
            dn_layer_param_views(l, net->velocity_gpu, &l->gpu.bias_velocity, &l->gpu.scale_velocity,
                                 &l->gpu.weight_velocity);
        }
        dn_layer_stats_views(l, net->stats_gpu, &l->gpu.rolling_mean, &l->gpu.rolling_variance);
    }
}

static void free_activation_buffers(dn_network *net)
{
    if (net->gpu->copy_stream) cudaStreamSynchronize(net->gpu->copy_stream);  // an upload into the spare
    net->prefetched = NULL;
    device_free(&net->input_spare_gpu);
    for (int i = 0; i < net->n_layers; i++) free_layer_buffers(&net->layers[i]);
    device_free(&net->input_gpu);
    device_free(&net->input_delta_gpu);
    device_free(&net->workspace_gpu);
    net->workspace_gpu_floats = 0;
    device_free(&net->grad_partials_gpu);
    net->grad_partials_gpu_floats = 0;
}

// The device scratch: the host's (one image's im2col columns at least), or,
// for the im2col path, the columns of as many images as fit in
// GPU_COLUMNS_BUDGET floats, so that convolutional_layer.cu runs one batched
// GEMM per chunk of images instead of one small GEMM per image.
#define GPU_COLUMNS_BUDGET ((size_t)64 << 20)  // 256 MiB

static size_t gpu_workspace_floats(const dn_network *net)
{
    if (dn_built_with_cudnn()) return 0;  // convolutions take cuDNN's own scratch; no other layer needs one
    size_t floats = net->workspace_size;
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (l->type != DN_LAYER_CONVOLUTIONAL) continue;
        size_t columns = dn_conv_gpu_columns_per_image(l);
        if (!columns) continue;
        size_t images = GPU_COLUMNS_BUDGET / columns;
        if (images > (size_t)l->batch) images = (size_t)l->batch;
        if (images * columns > floats) floats = images * columns;
    }
    return floats;
}

// The split weight gradients' scratch (convolutional_layer.cu): the largest
// layer's partials, for training on the im2col path.
static size_t grad_partials_floats(const dn_network *net)
{
    if (!net->train || dn_built_with_cudnn()) return 0;
    size_t floats = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (l->type != DN_LAYER_CONVOLUTIONAL) continue;
        size_t partials = dn_conv_gpu_grad_partials_floats(l);
        if (partials > floats) floats = partials;
    }
    return floats;
}

extern "C" dn_status dn_cuda_network_realloc(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    CUDA_TRY(cudaStreamSynchronize(net->gpu->stream));
    free_activation_buffers(net);
    for (int i = 0; i < net->n_layers; i++) DN_TRY(alloc_layer_buffers(net, &net->layers[i]));
    size_t inputs = (size_t)net->batch * net->inputs;
    DN_TRY(device_alloc_zero(inputs, &net->input_gpu, "network input", net->gpu_index));
    if (net->input_delta)
        DN_TRY(device_alloc_zero(inputs, &net->input_delta_gpu, "input delta", net->gpu_index));
    if (net->train && net->hp.subdivisions > 1)
        DN_TRY(device_alloc(inputs, &net->input_spare_gpu, "next pass input", net->gpu_index));
    net->workspace_gpu_floats = gpu_workspace_floats(net);
    DN_TRY(device_alloc_zero(net->workspace_gpu_floats, &net->workspace_gpu, "workspace", net->gpu_index));
    net->grad_partials_gpu_floats = grad_partials_floats(net);
    if (net->grad_partials_gpu_floats)
        DN_TRY(device_alloc(net->grad_partials_gpu_floats, &net->grad_partials_gpu, "partial weight gradients",
                            net->gpu_index));
    // the zeroing (device_alloc_zero's cudaMemset, here and in attach) runs on the
    // legacy default stream, which the network's non-blocking stream does not wait for
    CUDA_TRY(cudaDeviceSynchronize());
    return DN_OK;
}

extern "C" void dn_cuda_network_detach(dn_network *net)
{
    if (!net->gpu) return;
    cudaSetDevice(net->gpu->device);
    cudaStreamSynchronize(net->gpu->stream);
    free_activation_buffers(net);
    for (int i = 0; i < net->n_layers; i++) dn_conv_cudnn_free(&net->layers[i]);  // kept across reallocations
    device_free(&net->params_gpu);
    device_free(&net->grads_gpu);
    device_free(&net->velocity_gpu);
    device_free(&net->stats_gpu);
    dn_cudnn_release(net->gpu);
    if (net->gpu->input_ready) cudaEventDestroy(net->gpu->input_ready);
    if (net->gpu->copy_stream) cudaStreamDestroy(net->gpu->copy_stream);
    if (net->gpu->blas) cublasDestroy(net->gpu->blas);
    if (net->gpu->stream) cudaStreamDestroy(net->gpu->stream);
    free(net->gpu);
    net->gpu = NULL;
    cudaGetLastError();
}

extern "C" dn_status dn_cuda_network_attach(dn_network *net, int device)
{
    int count = dn_cuda_device_count();
    if (device < 0 || device >= count)
        return DN_FAIL(DN_ERR_ARG, "GPU %d does not exist: this machine has %d CUDA device%s%s",
                       device, count, count == 1 ? "" : "s",
                       count ? "" : " (no driver, or no NVIDIA GPU)");
    dn_gpu *gpu = (dn_gpu *)calloc(1, sizeof *gpu);
    if (!gpu) return DN_FAIL(DN_ERR_OOM, "out of memory");
    gpu->device = device;
    net->gpu = gpu;
    net->gpu_index = device;
    dn_status st = use_device(gpu);
    if (st == DN_OK) {
        cudaError_t e = cudaStreamCreateWithFlags(&gpu->stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) st = dn_cuda_fail(e, "cudaStreamCreate", __FILE__, __LINE__);
    }
    if (st == DN_OK) {
        cublasStatus_t s = cublasCreate(&gpu->blas);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(gpu->blas, gpu->stream);
        if (s != CUBLAS_STATUS_SUCCESS) st = dn_cublas_fail(s, "cublasCreate", __FILE__, __LINE__);
    }
    if (st == DN_OK) st = device_alloc(net->n_params, &net->params_gpu, "parameters", device);
    if (st == DN_OK) st = device_alloc(net->n_stats, &net->stats_gpu, "BN statistics", device);
    if (st == DN_OK && net->train) {
        st = device_alloc_zero(net->n_params, &net->grads_gpu, "gradients", device);
        if (st == DN_OK) st = device_alloc_zero(net->n_params, &net->velocity_gpu, "momentum", device);
    }
    if (st == DN_OK) {
        bind_parameter_views(net);
        /* uploaded before the first forward, once the weights are initialised or loaded */
        net->device_params_stale = 1;
    }
    if (st == DN_OK) st = dn_cuda_network_realloc(net);
    if (st != DN_OK) {
        dn_error_prefix("GPU %d: ", device);
        dn_cuda_network_detach(net);
        net->gpu_index = -1;
    }
    return st;
}

// ---- parameters ------------------------------------------------------------------------------

extern "C" dn_status dn_cuda_push_params(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    DN_TRY(dn_to_device(net->gpu, net->params_gpu, net->params, net->n_params));
    DN_TRY(dn_to_device(net->gpu, net->stats_gpu, net->stats, net->n_stats));
    if (net->velocity_gpu) DN_TRY(dn_to_device(net->gpu, net->velocity_gpu, net->velocity, net->n_params));
    return DN_OK;
}

extern "C" dn_status dn_cuda_pull_params(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    DN_TRY(dn_to_host(net->gpu, net->params, net->params_gpu, net->n_params));
    DN_TRY(dn_to_host(net->gpu, net->stats, net->stats_gpu, net->n_stats));
    if (net->velocity_gpu) DN_TRY(dn_to_host(net->gpu, net->velocity, net->velocity_gpu, net->n_params));
    return DN_OK;
}

extern "C" dn_status dn_cuda_pull_output(dn_network *net, int index)
{
    dn_layer *l = &net->layers[index];
    DN_TRY(use_device(net->gpu));
    return dn_to_host(net->gpu, l->output, l->gpu.output, (size_t)l->batch * l->out_size);
}

extern "C" dn_status dn_cuda_pull_training_state(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    if (net->grads_gpu) DN_TRY(dn_to_host(net->gpu, net->grads, net->grads_gpu, net->n_params));
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (l->delta && l->gpu.delta)
            DN_TRY(dn_to_host(net->gpu, l->delta, l->gpu.delta, (size_t)l->batch * l->out_size));
    }
    if (net->input_delta && net->input_delta_gpu)
        DN_TRY(dn_to_host(net->gpu, net->input_delta, net->input_delta_gpu,
                          (size_t)net->batch * net->inputs));
    return DN_OK;
}

extern "C" dn_status dn_cuda_zero_grads(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    if (net->grads_gpu) CUDA_TRY(cudaMemsetAsync(net->grads_gpu, 0, net->n_params * sizeof(float), net->gpu->stream));
    CUDA_TRY(cudaStreamSynchronize(net->gpu->stream));
    return DN_OK;
}

// ---- forward / backward / update ----------------------------------------------------------------

static dn_status run_forward(dn_network *net, int train, const float *truth)
{
    dn_gpu *gpu = net->gpu;
    dn_gpu_ctx gctx = {gpu, net->input_gpu, NULL, net->workspace_gpu, net->workspace_gpu_floats,
                       net->grad_partials_gpu, net->grad_partials_gpu_floats};
    dn_ctx ctx = dn_network_ctx(net, train);
    ctx.truth = truth;
    ctx.gpu = &gctx;
    gpu->error = DN_OK;
    for (int i = 0; i < net->n_layers && gpu->error == DN_OK; i++) {
        dn_layer *l = &net->layers[i];
        const dn_layer_gpu_ops *ops = dn_layer_gpu_ops_for(l->type);
        if (!ops || !ops->forward)
            return DN_FAIL(DN_ERR_UNSUPPORTED, "layer %d ([%s]) has no CUDA forward", i, l->ops->name);
        if (train && l->gpu.delta) dn_fill_gpu(gpu, l->gpu.delta, (size_t)l->batch * l->out_size, 0.f);
        ctx.input = i ? net->layers[i - 1].output : NULL; /* host copy, for host-side losses */
        ops->forward(l, &ctx);
        gctx.input = l->gpu.output;
    }
    return drain(gpu);
}

/* what the host reads after an inference forward: the output layer and the
 * detection layers (boxes are decoded on the host) */
static dn_status pull_results(dn_network *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (i == net->output_layer || l->type == DN_LAYER_REGION || l->type == DN_LAYER_YOLO)
            DN_TRY(dn_cuda_pull_output(net, i));
    }
    return DN_OK;
}

// This pass's input into net->input_gpu: the spare buffer swapped in where the
// previous pass prefetched it (the compute stream waits for that upload), else
// uploaded now.  The compute stream is idle here: every pass ends with its
// queue drained, failed or not.
static dn_status place_input(dn_network *net, const float *input)
{
    dn_gpu *gpu = net->gpu;
    int take = input && input == net->prefetched;
    net->prefetched = NULL;
    if (take) {
        float *current = net->input_gpu;
        net->input_gpu = net->input_spare_gpu;
        net->input_spare_gpu = current;
        CUDA_TRY(cudaStreamWaitEvent(gpu->stream, gpu->input_ready, 0));
    } else if (input) {
        DN_TRY(dn_to_device(gpu, net->input_gpu, input, (size_t)net->batch * net->inputs));
    }
    return DN_OK;
}

// A pass failed after its forward started the next upload: wait for that
// upload (it reads the caller's buffer) and forget it.
extern "C" void dn_cuda_cancel_prefetch(dn_network *net)
{
    if (!net->gpu || !net->gpu->copy_stream) return;
    cudaSetDevice(net->gpu->device);
    cudaStreamSynchronize(net->gpu->copy_stream);
    cudaGetLastError();
    net->prefetched = NULL;
}

static dn_status make_copy_stream(dn_gpu *gpu)
{
    cudaError_t e = cudaStreamCreateWithFlags(&gpu->copy_stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) {
        e = cudaEventCreateWithFlags(&gpu->input_ready, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            cudaStreamDestroy(gpu->copy_stream);
            gpu->input_ready = NULL;
        }
    }
    if (e != cudaSuccess) {
        gpu->copy_stream = NULL;
        return dn_cuda_fail(e, "cudaStreamCreate / cudaEventCreate (input upload)", __FILE__, __LINE__);
    }
    return DN_OK;
}

// The next pass's input (net->next_input, set by the pass loop) into the spare
// buffer on the copy stream, while this pass computes.  The spare buffer held
// the previous pass's input, which nothing reads any more.
static dn_status start_prefetch(dn_network *net, const float *next)
{
    if (!next || !net->input_spare_gpu) return DN_OK;
    dn_gpu *gpu = net->gpu;
    if (!gpu->copy_stream) DN_TRY(make_copy_stream(gpu));
    CUDA_TRY(cudaMemcpyAsync(net->input_spare_gpu, next, (size_t)net->batch * net->inputs * sizeof(float),
                             cudaMemcpyHostToDevice, gpu->copy_stream));
    CUDA_TRY(cudaEventRecord(gpu->input_ready, gpu->copy_stream));
    net->prefetched = next;
    return DN_OK;
}

extern "C" dn_status dn_cuda_forward(dn_network *net, const float *input, int train,
                                     const float *truth)
{
    const float *next_input = train ? net->next_input : NULL;
    net->next_input = NULL;
    DN_TRY(use_device(net->gpu));
    DN_TRY(place_input(net, input));
    DN_TRY(start_prefetch(net, next_input));
    DN_TRY(run_forward(net, train, truth));
    if (!train) DN_TRY(pull_results(net));
    return DN_OK;
}

extern "C" dn_status dn_cuda_forward_device_input(dn_network *net)
{
    DN_TRY(use_device(net->gpu));
    DN_TRY(run_forward(net, 0, NULL));
    return pull_results(net);
}

extern "C" dn_status dn_cuda_backward(dn_network *net)
{
    dn_gpu *gpu = net->gpu;
    DN_TRY(use_device(gpu));
    dn_gpu_ctx gctx = {gpu, NULL, NULL, net->workspace_gpu, net->workspace_gpu_floats, net->grad_partials_gpu,
                       net->grad_partials_gpu_floats};
    dn_ctx ctx = dn_network_ctx(net, 1);
    ctx.gpu = &gctx;
    gpu->error = DN_OK;
    if (net->input_delta_gpu)
        dn_fill_gpu(gpu, net->input_delta_gpu, (size_t)net->batch * net->inputs, 0.f);
    for (int i = net->n_layers - 1; i >= 0 && gpu->error == DN_OK; i--) {
        dn_layer *l = &net->layers[i];
        if (l->stopbackward) break;
        const dn_layer_gpu_ops *ops = dn_layer_gpu_ops_for(l->type);
        if (!ops || !ops->backward)
            return DN_FAIL(DN_ERR_UNSUPPORTED, "layer %d ([%s]) has no CUDA backward", i, l->ops->name);
        gctx.input = i ? net->layers[i - 1].gpu.output : net->input_gpu;
        gctx.input_delta = i ? net->layers[i - 1].gpu.delta : net->input_delta_gpu;
        ops->backward(l, &ctx);
    }
    return drain(gpu);
}

extern "C" dn_status dn_cuda_update(dn_network *net, const dn_update_args *a, int *params_finite)
{
    dn_gpu *gpu = net->gpu;
    DN_TRY(use_device(gpu));
    gpu->error = DN_OK;
    for (int i = 0; i < net->n_layers; i++) {
        dn_layer *l = &net->layers[i];
        if (!l->n_params || !l->ops->update) continue;
        float lr_over_batch = a->learning_rate * l->learning_rate_scale / a->batch;
        dn_sgd_gpu(gpu, l->gpu.biases, l->gpu.bias_grads, l->gpu.bias_velocity, (size_t)l->n_biases,
                   lr_over_batch, a->momentum, 0.f);
        if (l->gpu.scales)
            dn_sgd_gpu(gpu, l->gpu.scales, l->gpu.scale_grads, l->gpu.scale_velocity,
                       (size_t)l->n_biases, lr_over_batch, a->momentum, 0.f);
        dn_sgd_gpu(gpu, l->gpu.weights, l->gpu.weight_grads, l->gpu.weight_velocity, l->n_weights,
                   lr_over_batch, a->momentum, a->decay * a->batch);
    }
    if (gpu->error != DN_OK) return drain(gpu);  // else the finite check below waits for the stream
    *params_finite = dn_all_finite_gpu(gpu, net->params_gpu, net->n_params);
    DN_TRY(take_recorded(gpu));
    return DN_OK;
}

// ---- frames to the network input on the GPU ----------------------------------------------------
// The same arithmetic as image.c: BGR bytes / 255 into RGB, darknet's two-pass
// bilinear resize (horizontal into out_w x in_h, then vertical), letterbox
// canvas of 0.5.

__global__ void resize_rows_kernel(const unsigned char *frame, int width, int height, int stride,
                                   int new_w, float w_scale, float *part)
{
    size_t n = (size_t)3 * height * new_w;
    GRID_STRIDE(i, n)
    {
        int c = i % new_w;
        int row = (i / new_w) % height;
        int k = i / ((size_t)new_w * height);
        const unsigned char *src = frame + (size_t)row * stride;
        float val;
        if (c == new_w - 1 || width == 1) {
            val = src[(size_t)(width - 1) * 3 + (2 - k)] / 255.f;
        } else {
            float sx = c * w_scale;
            int ix = (int)sx;
            float dx = sx - ix;
            float a = src[(size_t)ix * 3 + (2 - k)] / 255.f, b = src[(size_t)(ix + 1) * 3 + (2 - k)] / 255.f;
            val = __fadd_rn(__fmul_rn(1 - dx, a), __fmul_rn(dx, b));
        }
        part[i] = val;
    }
}

__global__ void resize_columns_kernel(const float *part, int height, int new_w, int new_h,
                                      float h_scale, float *canvas, int canvas_w, int canvas_h,
                                      int dx, int dy)
{
    size_t n = (size_t)3 * new_h * new_w;
    GRID_STRIDE(i, n)
    {
        int c = i % new_w;
        int r = (i / new_w) % new_h;
        int k = i / ((size_t)new_w * new_h);
        float sy = r * h_scale;
        int iy = (int)sy;
        float fy = sy - iy;
        int last = (r == new_h - 1 || height == 1);
        const float *row0 = part + ((size_t)k * height + iy) * new_w;
        float val = __fmul_rn(1 - fy, row0[c]);
        if (!last) val = __fadd_rn(val, __fmul_rn(fy, row0[new_w + c]));
        canvas[((size_t)k * canvas_h + dy + r) * canvas_w + dx + c] = val;
    }
}

// One frame's pixels up and resized (letterboxed) into image f of the
// network input, on the stream; its scratch freed in stream order.
static dn_status upload_frame(dn_network *net, const dn_frame *frame, int f, dn_resize_mode mode)
{
    dn_gpu *gpu = net->gpu;
    int new_w = net->w, new_h = net->h, dx = 0, dy = 0;
    if (mode == DN_RESIZE_LETTERBOX) {
        dn_letterbox_size(frame->width, frame->height, net->w, net->h, &new_w, &new_h);
        dx = (net->w - new_w) / 2;
        dy = (net->h - new_h) / 2;
    }
    size_t frame_bytes = (size_t)frame->row_stride * (frame->height - 1) + (size_t)frame->width * 3;
    unsigned char *pixels = NULL;
    float *part = NULL;
    CUDA_TRY(cudaMallocAsync((void **)&pixels, frame_bytes, gpu->stream));
    cudaError_t e = cudaMallocAsync((void **)&part, (size_t)3 * frame->height * new_w * sizeof(float), gpu->stream);
    if (e != cudaSuccess) {
        cudaFreeAsync(pixels, gpu->stream);
        return dn_cuda_fail(e, "cudaMallocAsync", __FILE__, __LINE__);
    }
    GPU_CHECK(gpu, cudaMemcpyAsync(pixels, frame->data, frame_bytes, cudaMemcpyHostToDevice, gpu->stream));
    float *canvas = net->input_gpu + (size_t)f * net->inputs;
    if (mode == DN_RESIZE_LETTERBOX) dn_fill_gpu(gpu, canvas, (size_t)net->inputs, .5f);
    float w_scale = new_w > 1 ? (float)(frame->width - 1) / (new_w - 1) : 0.f;
    float h_scale = new_h > 1 ? (float)(frame->height - 1) / (new_h - 1) : 0.f;
    size_t rows = (size_t)3 * frame->height * new_w, cols = (size_t)3 * new_h * new_w;
    resize_rows_kernel<<<dn_blocks(rows), 256, 0, gpu->stream>>>(pixels, frame->width, frame->height,
                                                                 frame->row_stride, new_w, w_scale, part);
    GPU_LAUNCHED(gpu);
    resize_columns_kernel<<<dn_blocks(cols), 256, 0, gpu->stream>>>(part, frame->height, new_w, new_h,
                                                                    h_scale, canvas, net->w, net->h, dx, dy);
    GPU_LAUNCHED(gpu);
    GPU_CHECK(gpu, cudaFreeAsync(pixels, gpu->stream));
    GPU_CHECK(gpu, cudaFreeAsync(part, gpu->stream));
    return DN_OK;
}

extern "C" dn_status dn_cuda_frames_to_input(dn_network *net, const dn_frame *frames, int n_frames,
                                             dn_resize_mode mode)
{
    dn_gpu *gpu = net->gpu;
    DN_TRY(use_device(gpu));
    gpu->error = DN_OK;
    for (int f = 0; f < n_frames && mode == DN_RESIZE_LETTERBOX; f++) {  // before any upload starts
        int new_w, new_h;
        dn_letterbox_size(frames[f].width, frames[f].height, net->w, net->h, &new_w, &new_h);
        if (new_w < 1 || new_h < 1) return DN_FAIL(DN_ERR_IMAGE, "frame %d: too thin to letterbox", f);
    }
    dn_status st = DN_OK;
    for (int f = 0; f < n_frames && st == DN_OK && gpu->error == DN_OK; f++)
        st = upload_frame(net, &frames[f], f, mode);
    dn_status drained = drain(gpu);  // also after a failure: issued uploads read the caller's pixels
    return st != DN_OK ? st : drained;
}

// ---- collectives over replicas -------------------------------------------------------------------

static float *buffer_of(dn_network *net, dn_gpu_buffer which, size_t *n)
{
    switch (which) {
    case DN_GPU_BUF_PARAMS: *n = net->n_params; return net->params_gpu;
    case DN_GPU_BUF_GRADS: *n = net->n_params; return net->grads_gpu;
    case DN_GPU_BUF_VELOCITY: *n = net->n_params; return net->velocity_gpu;
    case DN_GPU_BUF_STATS: *n = net->n_stats; return net->stats_gpu;
    }
    *n = 0;
    return NULL;
}

/* Through the host: every replica's buffer down, summed in replica order,
 * back up.  Works for any placement (two replicas on one GPU included). */
static dn_status allreduce_host(dn_network **nets, int n, dn_gpu_buffer which, int average)
{
    size_t count = 0;
    buffer_of(nets[0], which, &count);
    if (!count) return DN_OK;
    float *sum = (float *)malloc(count * sizeof(float));
    float *part = (float *)malloc(count * sizeof(float));
    dn_status st = (sum && part) ? DN_OK : DN_FAIL(DN_ERR_OOM, "out of memory for a reduction");
    for (int r = 0; r < n && st == DN_OK; r++) {
        size_t c;
        float *dev = buffer_of(nets[r], which, &c);
        st = use_device(nets[r]->gpu);
        if (st == DN_OK) st = dn_to_host(nets[r]->gpu, r ? part : sum, dev, count);
        if (st == DN_OK && r)
            for (size_t i = 0; i < count; i++) sum[i] += part[i];
    }
    if (st == DN_OK && average)
        for (size_t i = 0; i < count; i++) sum[i] *= 1.f / n;
    for (int r = 0; r < n && st == DN_OK; r++) {
        size_t c;
        float *dev = buffer_of(nets[r], which, &c);
        st = use_device(nets[r]->gpu);
        if (st == DN_OK) st = dn_to_device(nets[r]->gpu, dev, sum, count);
    }
    free(sum);
    free(part);
    return st;
}

static int distinct_gpus(dn_network **nets, int n)
{
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (nets[a]->gpu_index == nets[b]->gpu_index) return 0;
    return 1;
}

#ifdef DN_NCCL
static dn_status nccl_fail(ncclResult_t r, const char *call)
{
    return DN_FAIL(DN_ERR_CUDA, "NCCL error in %s: %s", call, ncclGetErrorString(r));
}

/* One communicator per set of GPUs, kept for the life of the process. */
typedef struct {
    int n;
    int devices[64];
    ncclComm_t comms[64];
} nccl_clique;
static nccl_clique cliques[8];
static int n_cliques = 0;
static pthread_mutex_t clique_lock = PTHREAD_MUTEX_INITIALIZER;

static dn_status clique_for(dn_network **nets, int n, ncclComm_t **out)
{
    pthread_mutex_lock(&clique_lock);
    for (int c = 0; c < n_cliques; c++) {
        int same = cliques[c].n == n;
        for (int r = 0; r < n && same; r++) same = cliques[c].devices[r] == nets[r]->gpu_index;
        if (same) {
            *out = cliques[c].comms;
            pthread_mutex_unlock(&clique_lock);
            return DN_OK;
        }
    }
    if (n_cliques == 8 || n > 64) {
        pthread_mutex_unlock(&clique_lock);
        return DN_FAIL(DN_ERR_UNSUPPORTED, "too many GPU sets for NCCL communicators");
    }
    nccl_clique *c = &cliques[n_cliques];
    c->n = n;
    for (int r = 0; r < n; r++) c->devices[r] = nets[r]->gpu_index;
    ncclResult_t res = ncclCommInitAll(c->comms, n, c->devices);
    if (res != ncclSuccess) {
        pthread_mutex_unlock(&clique_lock);
        return nccl_fail(res, "ncclCommInitAll");
    }
    n_cliques++;
    *out = c->comms;
    pthread_mutex_unlock(&clique_lock);
    return DN_OK;
}

static dn_status allreduce_nccl(dn_network **nets, int n, dn_gpu_buffer which, int average)
{
    ncclComm_t *comms;
    DN_TRY(clique_for(nets, n, &comms));
    size_t count = 0;
    buffer_of(nets[0], which, &count);
    ncclResult_t res = ncclGroupStart();
    for (int r = 0; r < n && res == ncclSuccess; r++) {
        size_t c;
        float *dev = buffer_of(nets[r], which, &c);
        res = ncclAllReduce(dev, dev, count, ncclFloat, average ? ncclAvg : ncclSum, comms[r],
                            nets[r]->gpu->stream);
    }
    ncclResult_t end = ncclGroupEnd();
    if (res != ncclSuccess) return nccl_fail(res, "ncclAllReduce");
    if (end != ncclSuccess) return nccl_fail(end, "ncclGroupEnd");
    for (int r = 0; r < n; r++) {
        DN_TRY(use_device(nets[r]->gpu));
        CUDA_TRY(cudaStreamSynchronize(nets[r]->gpu->stream));
    }
    return DN_OK;
}
#endif

extern "C" dn_status dn_cuda_allreduce(dn_network **nets, int n, dn_gpu_buffer which, int average)
{
    if (n < 1) return DN_OK;
#ifdef DN_NCCL
    /* one rank included: NCCL's path is then the one a single GPU runs */
    if (distinct_gpus(nets, n)) return allreduce_nccl(nets, n, which, average);
#else
    (void)distinct_gpus;
#endif
    if (n < 2) return DN_OK;
    return allreduce_host(nets, n, which, average);
}

extern "C" dn_status dn_cuda_broadcast(dn_network **nets, int n, dn_gpu_buffer which)
{
    size_t count = 0;
    float *root = buffer_of(nets[0], which, &count);
    if (n < 2 || !count) return DN_OK;
    DN_TRY(use_device(nets[0]->gpu));
    CUDA_TRY(cudaStreamSynchronize(nets[0]->gpu->stream));
    // on each replica's own stream, finished before returning: cudaMemcpyPeer
    // runs on the legacy default stream, which the replicas' non-blocking
    // streams do not wait for, so their next pass could read the old values
    for (int r = 1; r < n; r++) {
        size_t c;
        float *dev = buffer_of(nets[r], which, &c);
        DN_TRY(use_device(nets[r]->gpu));
        CUDA_TRY(cudaMemcpyPeerAsync(dev, nets[r]->gpu_index, root, nets[0]->gpu_index, count * sizeof(float),
                                     nets[r]->gpu->stream));
        CUDA_TRY(cudaStreamSynchronize(nets[r]->gpu->stream));
    }
    return DN_OK;
}
