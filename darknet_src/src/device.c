/* The CPU device and collectives; the CUDA seam's answers in a CPU build. */
#include "device.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cuda.h"
#include "error.h"
#include "util.h"

/* ---- a CPU build: every CUDA entry point says so ------------------------------- */
#ifndef DN_CUDA

DN_API int dn_built_with_cuda(void) { return 0; }
DN_API int dn_built_with_cudnn(void) { return 0; }
DN_API int dn_cuda_device_count(void) { return 0; }

static dn_status no_cuda(void)
{
    return DN_FAIL(DN_ERR_UNSUPPORTED, "this pydarknet was built without CUDA (rebuild with "
                   "PYDARKNET_CUDA=1 on a machine with nvcc)");
}

DN_API dn_status dn_cuda_device_name(int device, char *buf, int size)
{
    (void)device;
    if (buf && size > 0) buf[0] = '\0';
    return no_cuda();
}

const dn_layer_gpu_ops *dn_layer_gpu_ops_for(dn_layer_type type)
{
    (void)type;
    return NULL;
}

dn_status dn_cuda_network_attach(struct dn_network *net, int device) { (void)net; (void)device; return no_cuda(); }
void dn_cuda_network_detach(struct dn_network *net) { (void)net; }
dn_status dn_cuda_network_realloc(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_forward(struct dn_network *net, const float *input, int train, const float *truth)
{
    (void)net; (void)input; (void)train; (void)truth;
    return no_cuda();
}
dn_status dn_cuda_backward(struct dn_network *net) { (void)net; return no_cuda(); }
void dn_cuda_cancel_prefetch(struct dn_network *net) { (void)net; }
dn_status dn_cuda_update(struct dn_network *net, const dn_update_args *args, int *params_finite)
{
    (void)net; (void)args; (void)params_finite;
    return no_cuda();
}
dn_status dn_cuda_pull_params(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_push_params(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_pull_output(struct dn_network *net, int index) { (void)net; (void)index; return no_cuda(); }
dn_status dn_cuda_pull_training_state(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_zero_grads(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_frames_to_input(struct dn_network *net, const dn_frame *frames, int n_frames,
                                  dn_resize_mode mode)
{
    (void)net; (void)frames; (void)n_frames; (void)mode;
    return no_cuda();
}
dn_status dn_cuda_forward_device_input(struct dn_network *net) { (void)net; return no_cuda(); }
dn_status dn_cuda_allreduce(struct dn_network **nets, int n, dn_gpu_buffer which, int average)
{
    (void)nets; (void)n; (void)which; (void)average;
    return no_cuda();
}
dn_status dn_cuda_broadcast(struct dn_network **nets, int n, dn_gpu_buffer which)
{
    (void)nets; (void)n; (void)which;
    return no_cuda();
}
dn_status dn_cuda_host_alloc(size_t bytes, void **out)
{
    (void)bytes;
    *out = NULL;
    return no_cuda();
}
void dn_cuda_host_free(void *p) { (void)p; }
#endif

/* ---- host buffers for batches ----------------------------------------------------
 * A header in front of the floats says how they were allocated, so that one
 * dn_host_free serves both kinds; it is 64 bytes, which keeps the floats
 * 64-byte aligned (page-locked and mapped blocks start on a page).  Plain
 * buffers are mapped pages rather than malloc'd: a batch is megabytes, and
 * unmapping gives them back to the system at once, where malloc may keep
 * freed blocks of that size in its heap. */

#define HOST_HEADER 64
static const unsigned HOST_MAGIC = 0x686f7374u; /* "host" */
enum { HOST_MAPPED = 1, HOST_PINNED = 2 };

typedef struct {
    unsigned magic;
    int kind;
    size_t bytes; /* of the whole block, header included */
} host_header;

DN_API dn_status dn_host_alloc(size_t n_floats, int pinned, float **out, int *is_pinned)
{
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    *out = NULL;
    if (is_pinned) *is_pinned = 0;
    if (n_floats > (SIZE_MAX - 2 * HOST_HEADER) / sizeof(float))
        return DN_FAIL(DN_ERR_OOM, "host buffer of %zu floats is too large", n_floats);
    size_t bytes = HOST_HEADER + (n_floats ? n_floats : 1) * sizeof(float);
    void *block = NULL;
    int kind = HOST_MAPPED;
    if (pinned && dn_cuda_device_count() > 0) {
        if (dn_cuda_host_alloc(bytes, &block) == DN_OK)
            kind = HOST_PINNED;
        else
            dn_clear_error(); /* page-locked memory refused (limits): plain memory still works */
    }
    if (!block) {
        block = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED)
            return DN_FAIL(DN_ERR_OOM, "out of memory allocating a host buffer of %zu bytes", bytes);
    }
    host_header *h = block;
    h->magic = HOST_MAGIC;
    h->kind = kind;
    h->bytes = bytes;
    *out = (float *)((char *)block + HOST_HEADER);
    if (is_pinned) *is_pinned = kind == HOST_PINNED;
    return DN_OK;
}

DN_API void dn_host_free(float *p)
{
    if (!p) return;
    host_header *h = (host_header *)((char *)p - HOST_HEADER);
    if (h->magic != HOST_MAGIC) return; /* not ours: leaking beats freeing a foreign pointer */
    h->magic = 0;
    if (h->kind == HOST_PINNED)
        dn_cuda_host_free(h);
    else
        munmap(h, h->bytes);
}

/* ---- the host as a device ------------------------------------------------------- */

static dn_status cpu_alloc(dn_device *d, size_t n, float **out)
{
    (void)d;
    *out = dn_alloc_floats(n, "device buffer");
    return *out ? DN_OK : DN_ERR_OOM;
}

static void cpu_free(dn_device *d, float *p)
{
    (void)d;
    dn_free(p);
}

static dn_status cpu_copy(dn_device *d, float *dst, const float *src, size_t n)
{
    (void)d;
    if (dst != src) memcpy(dst, src, n * sizeof *dst);
    return DN_OK;
}

static const dn_device_ops cpu_ops = {cpu_alloc, cpu_free, cpu_copy, cpu_copy};
static dn_device cpu_device = {DN_DEVICE_CPU, -1, &cpu_ops};

dn_device *dn_cpu_device(void) { return &cpu_device; }

/* ---- collectives on host buffers -------------------------------------------------- */

typedef struct {
    float **buffers;
    size_t n;
    int replicas;
    int parts;
    int root;
    float scale;      /* 1 for a sum, 1/replicas for a mean */
} reduce_job;

static void chunk(size_t n, int parts, int part, size_t *b, size_t *e)
{
    size_t base = n / (size_t)parts, extra = n % (size_t)parts, p = (size_t)part;
    *b = p * base + (p < extra ? p : extra);
    *e = *b + base + (p < extra ? 1 : 0);
}

/* sum in replica order into buffer 0, scale, copy to the others */
static void reduce_range(void *p, int part, int thread)
{
    (void)thread;
    reduce_job *j = p;
    size_t b, e;
    chunk(j->n, j->parts, part, &b, &e);
    float *first = j->buffers[0];
    for (int r = 1; r < j->replicas; r++) {
        const float *other = j->buffers[r];
        for (size_t i = b; i < e; i++) first[i] += other[i];
    }
    if (j->scale != 1.f)
        for (size_t i = b; i < e; i++) first[i] *= j->scale;
    for (int r = 1; r < j->replicas; r++) memcpy(j->buffers[r] + b, first + b, (e - b) * sizeof *first);
}

static void broadcast_range(void *p, int part, int thread)
{
    (void)thread;
    reduce_job *j = p;
    size_t b, e;
    chunk(j->n, j->parts, part, &b, &e);
    for (int r = 0; r < j->replicas; r++)
        if (r != j->root) memcpy(j->buffers[r] + b, j->buffers[j->root] + b, (e - b) * sizeof(float));
}

static int parts_for(const dn_collective *c, size_t n)
{
    int threads = dn_pool_threads(c->pool);
    return n < 65536 ? 1 : 4 * threads;
}

static dn_status check_buffers(const dn_collective *c, float **buffers)
{
    if (!buffers) return DN_FAIL(DN_ERR_ARG, "collective: buffers must not be NULL");
    for (int r = 0; r < c->n_replicas; r++)
        if (!buffers[r]) return DN_FAIL(DN_ERR_ARG, "collective: buffer of replica %d is NULL", r);
    return DN_OK;
}

static dn_status cpu_reduce(dn_collective *c, float **buffers, size_t n, float scale)
{
    DN_TRY(check_buffers(c, buffers));
    if (c->n_replicas < 2 || n == 0) return DN_OK;
    reduce_job j = {buffers, n, c->n_replicas, parts_for(c, n), 0, scale};
    dn_pool_run(c->pool, j.parts, reduce_range, &j);
    return DN_OK;
}

static dn_status cpu_allreduce_sum(dn_collective *c, float **buffers, size_t n)
{
    return cpu_reduce(c, buffers, n, 1.f);
}

static dn_status cpu_average(dn_collective *c, float **buffers, size_t n)
{
    return cpu_reduce(c, buffers, n, 1.f / c->n_replicas);
}

static dn_status cpu_broadcast(dn_collective *c, float **buffers, size_t n, int root)
{
    DN_TRY(check_buffers(c, buffers));
    if (root < 0 || root >= c->n_replicas)
        return DN_FAIL(DN_ERR_ARG, "broadcast root %d out of range", root);
    if (c->n_replicas < 2 || n == 0) return DN_OK;
    reduce_job j = {buffers, n, c->n_replicas, parts_for(c, n), root, 1.f};
    dn_pool_run(c->pool, j.parts, broadcast_range, &j);
    return DN_OK;
}

static void cpu_collective_free(dn_collective *c) { free(c); }

static const dn_collective_ops cpu_collective_ops = {cpu_allreduce_sum, cpu_broadcast, cpu_average,
                                                     cpu_collective_free};

dn_status dn_cpu_collective_create(int n_replicas, dn_pool *pool, dn_collective **out)
{
    *out = NULL;
    if (n_replicas < 1) return DN_FAIL(DN_ERR_ARG, "a collective needs at least one replica");
    dn_collective *c = calloc(1, sizeof *c);
    if (!c) return DN_FAIL(DN_ERR_OOM, "out of memory creating a collective");
    c->ops = &cpu_collective_ops;
    c->n_replicas = n_replicas;
    c->pool = pool;
    *out = c;
    return DN_OK;
}
