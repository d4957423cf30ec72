/* The device interface: where a replica's buffers live and how replicas
 * exchange them.  Data-parallel training uses only these operations, so the
 * CUDA build adds GPUs (peer copies / NCCL) without touching the trainer.
 *
 * A collective works on one buffer per replica, each of n floats, all of
 * the same layout (a network's parameter, gradient or statistics buffer). */
#ifndef DN_DEVICE_H
#define DN_DEVICE_H

#include <stddef.h>

#include "darknet.h"
#include "pool.h"

typedef enum { DN_DEVICE_CPU = 0, DN_DEVICE_CUDA = 1 } dn_device_kind;

typedef struct dn_device dn_device;

typedef struct {
    dn_status (*alloc)(dn_device *d, size_t n, float **out);
    void (*free)(dn_device *d, float *p);
    dn_status (*to_host)(dn_device *d, float *host, const float *src, size_t n);
    dn_status (*from_host)(dn_device *d, float *dst, const float *host, size_t n);
} dn_device_ops;

struct dn_device {
    dn_device_kind kind;
    int index;                 /* GPU ordinal, -1 for the CPU */
    const dn_device_ops *ops;
};

/* The host. */
dn_device *dn_cpu_device(void);

typedef struct dn_collective dn_collective;

typedef struct {
    /* every buffer becomes the element-wise sum of all of them */
    dn_status (*allreduce_sum)(dn_collective *c, float **buffers, size_t n);
    /* every buffer becomes a copy of buffers[root] */
    dn_status (*broadcast)(dn_collective *c, float **buffers, size_t n, int root);
    /* every buffer becomes the element-wise mean */
    dn_status (*average)(dn_collective *c, float **buffers, size_t n);
    void (*free)(dn_collective *c);
} dn_collective_ops;

struct dn_collective {
    const dn_collective_ops *ops;
    int n_replicas;
    dn_pool *pool;             /* CPU: threads that share the reduction */
};

/* Host buffers: sums in replica order (bit-for-bit repeatable), split over
 * `pool` by ranges of the buffer. */
dn_status dn_cpu_collective_create(int n_replicas, dn_pool *pool, dn_collective **out);

#endif
