/* The CUDA side as the C core sees it.  Implemented in cuda.cu in a CUDA
 * build; in a CPU build device.c answers every call with DN_ERR_UNSUPPORTED
 * (and dn_built_with_cuda() is 0), so no other file needs an #ifdef.
 *
 * A network on a GPU keeps its parameters, gradients, momentum and BN
 * statistics in four device buffers with the host layout (one copy each way
 * moves a whole model), every layer's activations and deltas on the device,
 * and pulls to the host only what the host reads: the output layer, the
 * detection layers, the loss layers' outputs (their loss runs on the host,
 * as in darknet), and parameters when they are saved or inspected. */
#ifndef DN_CUDA_H
#define DN_CUDA_H

#include <stddef.h>

#include "darknet.h"
#include "layer.h"

typedef struct dn_gpu dn_gpu;   /* per-network CUDA state: device, stream, cuBLAS */

struct dn_gpu_ctx {
    dn_gpu *gpu;
    const float *input;          /* device: this layer's input */
    float *input_delta;          /* device: the input's delta, or NULL */
    float *workspace;            /* device scratch */
    size_t workspace_floats;     /* its size */
    float *grad_partials;        /* device: partial weight gradients (training), or NULL */
    size_t grad_partials_floats; /* its size */
};

struct dn_network;

/* Allocate the device copy of a network on GPU `device` and upload its
 * parameters (called once the host network is built). */
dn_status dn_cuda_network_attach(struct dn_network *net, int device);
void dn_cuda_network_detach(struct dn_network *net);
/* Re-create the activation buffers after a batch or size change. */
dn_status dn_cuda_network_realloc(struct dn_network *net);

/* Forward on the device; `input` is on the host (batch * inputs floats).
 * With train = 1 the loss layers run against `truth` (host). */
dn_status dn_cuda_forward(struct dn_network *net, const float *input, int train,
                          const float *truth);
dn_status dn_cuda_backward(struct dn_network *net);
/* after a failed pass: wait for and forget the next pass's input upload */
void dn_cuda_cancel_prefetch(struct dn_network *net);
dn_status dn_cuda_update(struct dn_network *net, const dn_update_args *args,
                         int *params_finite);

/* Parameters: device -> host (before saving or reading them) and
 * host -> device (after loading or editing them). */
dn_status dn_cuda_pull_params(struct dn_network *net);
dn_status dn_cuda_push_params(struct dn_network *net);
/* A layer's activations to the host (l->output). */
dn_status dn_cuda_pull_output(struct dn_network *net, int index);
/* Gradients, every layer's delta and the input delta to the host (tests,
 * inspection). */
dn_status dn_cuda_pull_training_state(struct dn_network *net);
dn_status dn_cuda_zero_grads(struct dn_network *net);

/* Frames straight into the device input (upload + darknet's resize on the GPU). */
dn_status dn_cuda_frames_to_input(struct dn_network *net, const dn_frame *frames, int n_frames,
                                  dn_resize_mode mode);
/* Forward of what dn_cuda_frames_to_input left in the device input. */
dn_status dn_cuda_forward_device_input(struct dn_network *net);

/* Collectives over the same buffer of several GPU networks (replicas):
 * NCCL when built with it and the GPUs are distinct, else through the host. */
typedef enum { DN_GPU_BUF_PARAMS, DN_GPU_BUF_GRADS, DN_GPU_BUF_VELOCITY, DN_GPU_BUF_STATS } dn_gpu_buffer;
dn_status dn_cuda_allreduce(struct dn_network **nets, int n, dn_gpu_buffer which, int average);
dn_status dn_cuda_broadcast(struct dn_network **nets, int n, dn_gpu_buffer which);

/* Page-locked host memory (cudaHostAlloc, portable to every device's
 * context): what dn_host_alloc asks for when a batch goes to a GPU. */
dn_status dn_cuda_host_alloc(size_t bytes, void **out);
void dn_cuda_host_free(void *p);

#endif
