// The CUDA runtime calls darknet_src makes, run on the CPU for the emulated
// CUDA build (tests/cuda_emu/emulated_build.py): device memory is host
// memory, every stream is the calling thread (copies and kernels run when
// issued, in order), events are no-ops.  DN_EMU_GPUS devices (default 1),
// each of DN_EMU_GPU_MB MiB (default 4096; "4096,64" gives each its own):
// allocations past that fail with
// cudaErrorMemoryAllocation, as a full GPU's do.
#ifndef DN_EMU_CUDA_RUNTIME_H
#define DN_EMU_CUDA_RUNTIME_H

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <map>

#include "cuda_emu.hpp"

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidDevice = 101,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost,
    cudaMemcpyHostToDevice,
    cudaMemcpyDeviceToHost,
    cudaMemcpyDeviceToDevice,
    cudaMemcpyDefault
} cudaMemcpyKind;
struct dn_emu_stream { int device; };
struct dn_emu_event { int device; };
typedef dn_emu_stream *cudaStream_t;
typedef dn_emu_event *cudaEvent_t;
#define cudaStreamNonBlocking 1u
#define cudaEventDisableTiming 2u
#define cudaHostAllocPortable 1u

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor, multiProcessorCount;
};

struct dn_emu_memory {
    std::mutex lock;
    std::map<const char *, std::pair<int, size_t>> blocks;  // start -> device, bytes
    size_t used[64] = {0};
};
inline dn_emu_memory &dn_emu_memory_state()
{
    static dn_emu_memory memory;
    return memory;
}
inline thread_local int dn_emu_device = 0;

// what went between host and devices, for dn_emu_traffic (emu_traffic.cpp)
struct dn_emu_counters {
    std::atomic<size_t> host_to_device{0}, device_to_host{0}, device_to_device{0}, launches{0};
};
inline dn_emu_counters dn_emu_traffic_counters;
inline thread_local cudaError_t dn_emu_last_error = cudaSuccess;

inline int dn_emu_env(const char *name, int fallback)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}
inline int dn_emu_gpus() { return dn_emu_env("DN_EMU_GPUS", 1); }
// DN_EMU_GPU_MB: one size for every device, or a comma-separated size per device
inline size_t dn_emu_gpu_bytes(int device)
{
    const char *v = getenv("DN_EMU_GPU_MB");
    long mb = 4096;
    for (int d = 0; v && *v; d++) {
        char *end;
        long value = strtol(v, &end, 10);
        if (end == v) break;
        if (d == 0 || d == device) mb = value;
        if (d == device || *end != ',') break;
        v = end + 1;
    }
    return (size_t)mb << 20;
}
inline cudaError_t dn_emu_fail(cudaError_t e) { return dn_emu_last_error = e; }

inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    }
    return "unknown error";
}
inline const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    }
    return "cudaErrorUnknown";
}
inline cudaError_t cudaGetLastError()
{
    cudaError_t e = dn_emu_last_error;
    dn_emu_last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaGetDeviceCount(int *count)
{
    *count = dn_emu_gpus();
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= dn_emu_gpus()) return dn_emu_fail(cudaErrorInvalidDevice);
    dn_emu_device = device;
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int *device)
{
    *device = dn_emu_device;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device < 0 || device >= dn_emu_gpus()) return dn_emu_fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CUDA emulated on the CPU (device %d)", device);
    prop->totalGlobalMem = dn_emu_gpu_bytes(device);
    prop->major = 9;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    *total = dn_emu_gpu_bytes(dn_emu_device);
    *free_bytes = *total - m.used[dn_emu_device];
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t bytes)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    *p = nullptr;
    if (m.used[dn_emu_device] + bytes > dn_emu_gpu_bytes(dn_emu_device)) return dn_emu_fail(cudaErrorMemoryAllocation);
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return dn_emu_fail(cudaErrorMemoryAllocation);
    memset(*p, 0xFF, bytes);  // device memory starts as NaNs: nothing may read it unwritten
    m.blocks[(const char *)*p] = {dn_emu_device, bytes};
    m.used[dn_emu_device] += bytes;
    return cudaSuccess;
}
inline cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    auto it = m.blocks.find((const char *)p);
    if (it == m.blocks.end()) return dn_emu_fail(cudaErrorInvalidValue);  // not a device pointer
    m.used[it->second.first] -= it->second.second;
    m.blocks.erase(it);
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return cudaFree(p); }
inline cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned)
{
    *p = malloc(bytes ? bytes : 1);
    return *p ? cudaSuccess : dn_emu_fail(cudaErrorMemoryAllocation);
}
inline cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}
// whether [p, p + bytes) lies in one device allocation
inline bool dn_emu_on_device(const void *p, size_t bytes)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    auto it = m.blocks.upper_bound((const char *)p);
    if (it == m.blocks.begin()) return false;
    --it;
    return (const char *)p + bytes <= it->first + it->second.second;
}
// a copy whose pointers are not where its kind says fails, as cuda-memcheck
// would report it (a host pointer given as device memory reads garbage on a GPU)
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t)
{
    if (!bytes) return cudaSuccess;
    bool dst_device = dn_emu_on_device(dst, bytes), src_device = dn_emu_on_device(src, bytes);
    bool ok = kind == cudaMemcpyDefault || (kind == cudaMemcpyHostToDevice && dst_device && !src_device) ||
              (kind == cudaMemcpyDeviceToHost && src_device && !dst_device) ||
              (kind == cudaMemcpyDeviceToDevice && src_device && dst_device) ||
              (kind == cudaMemcpyHostToHost && !src_device && !dst_device);
    if (!ok) return dn_emu_fail(cudaErrorInvalidValue);
    (dst_device ? src_device ? dn_emu_traffic_counters.device_to_device : dn_emu_traffic_counters.host_to_device
                : dn_emu_traffic_counters.device_to_host) += src_device || dst_device ? bytes : 0;
    memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
inline cudaError_t cudaMemcpyPeer(void *dst, int, const void *src, int, size_t bytes)
{
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, nullptr);
}
inline cudaError_t cudaMemcpy2DAsync(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width,
                                     size_t height, cudaMemcpyKind kind, cudaStream_t)
{
    if (width > dst_pitch || width > src_pitch) return dn_emu_fail(cudaErrorInvalidValue);
    if (height && kind == cudaMemcpyDeviceToDevice &&
        !(dn_emu_on_device(dst, (height - 1) * dst_pitch + width) && dn_emu_on_device(src, (height - 1) * src_pitch + width)))
        return dn_emu_fail(cudaErrorInvalidValue);
    if (kind == cudaMemcpyDeviceToDevice) dn_emu_traffic_counters.device_to_device += height * width;
    for (size_t row = 0; row < height; row++)
        memmove((char *)dst + row * dst_pitch, (const char *)src + row * src_pitch, width);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t)
{
    if (bytes && !dn_emu_on_device(p, bytes)) return dn_emu_fail(cudaErrorInvalidValue);
    memset(p, value, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new dn_emu_stream{dn_emu_device};
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new dn_emu_event{dn_emu_device};
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    return s && e->device != s->device ? dn_emu_fail(cudaErrorInvalidValue) : cudaSuccess;  // CUDA refuses that
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

// the kernels' device-side helpers
inline float atomicAdd(float *address, float value)
{
    float old = *address;  // one host thread runs a block's threads in turn
    *address = old + value;
    return old;
}
inline int atomicAdd(int *address, int value)
{
    int old = *address;
    *address = old + value;
    return old;
}
inline unsigned atomicAdd(unsigned *address, unsigned value)
{
    unsigned old = *address;
    *address = old + value;
    return old;
}

#endif
