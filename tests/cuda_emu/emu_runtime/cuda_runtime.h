// The CUDA runtime calls darknet_src makes, run on the CPU for the emulated
// CUDA build (tests/cuda_emu/emulated_build.py): device memory is host
// memory.  DN_EMU_GPUS devices (default 1), each of DN_EMU_GPU_MB MiB
// (default 4096; "4096,64" gives each its own): allocations past that fail
// with cudaErrorMemoryAllocation, as a full GPU's do.
//
// Streams (DN_EMU_STREAMS): unset or "issue", every copy, memset, kernel and
// GEMM runs when issued, in issue order.  "late": each waits in its
// stream's queue until something CUDA promises needs it done (a
// synchronisation of its stream, its device or an event recorded after it;
// a stream waiting on such an event running; a legacy-stream operation
// ordered after a blocking stream's; a synchronous cudaMemcpy; cudaFree), so
// a missing wait reads what the other stream has not written yet.
// "late-except-newest": the same, but the newest live stream of each device
// runs its work at once, ahead of the older streams' queued work, so a copy
// stream overwriting what the compute stream has yet to read shows.
// "random:SEED" (an integer): queued as "late", and at each operation issued
// and each synchronisation, now and then (how often is drawn from the seed)
// a stream drawn at random, by its pace (drawn at its creation: 0, it runs
// only when something needs it, as "late"), runs a random number of its
// queued operations, each after what it waits for: any stream may run ahead
// of or behind any other, as far as CUDA allows, so a hazard between any
// two streams (the legacy one included) can show; one seed, one schedule
// for one sequence of calls.
// Using a stream after cudaStreamDestroy or an event after cudaEventDestroy
// (their handles are invalid then) is reported and aborts, in every mode;
// the work queued before still runs.  Host
// memory that cudaHostAlloc gave is read and written by a queued copy when
// it runs, and freeing it under a queued copy aborts; pageable memory is read
// when the copy is issued, as CUDA stages it, and written when it runs.
#ifndef DN_EMU_CUDA_RUNTIME_H
#define DN_EMU_CUDA_RUNTIME_H

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

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
struct dn_emu_stream;
// queued work: what it runs, and how far other streams must have run first
typedef std::vector<std::pair<dn_emu_stream *, uint64_t>> dn_emu_deps;
struct dn_emu_op {
    std::function<void()> run;
    dn_emu_deps after;
    const char *host_begin, *host_end;  // page-locked host memory it reads or writes
};
struct dn_emu_stream {
    int device;
    bool blocking;  // synchronises with the legacy default stream (cudaStreamCreate without NonBlocking)
    bool legacy;    // a device's legacy default stream (stream 0)
    bool live;              // not destroyed (a destroyed stream still runs what it was given)
    uint64_t issued, done;  // operations issued to it, and run
    unsigned pace;          // random:SEED, how often it runs ahead (0: only when something needs it)
    std::deque<dn_emu_op> pending;
};
struct dn_emu_event {
    int device;
    bool live;              // not destroyed (kept, so that a later use is reported)
    dn_emu_stream *stream;  // where it was last recorded, and how far that stream had been issued
    uint64_t issued;
};
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
    std::atomic<size_t> collectives{0};  // NCCL all-reduces run (emu_runtime/nccl.h)
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
// ---- streams ------------------------------------------------------------------------------

enum dn_emu_stream_mode { DN_EMU_AT_ISSUE, DN_EMU_LATE, DN_EMU_LATE_EXCEPT_NEWEST, DN_EMU_RANDOM };
struct dn_emu_stream_setting {
    dn_emu_stream_mode mode;
    unsigned long long seed;  // random:SEED
};
inline const dn_emu_stream_setting &dn_emu_stream_settings()
{
    static const dn_emu_stream_setting setting = []() -> dn_emu_stream_setting {
        const char *v = getenv("DN_EMU_STREAMS");
        if (!v || !*v || !strcmp(v, "issue")) return {DN_EMU_AT_ISSUE, 0};
        if (!strcmp(v, "late")) return {DN_EMU_LATE, 0};
        if (!strcmp(v, "late-except-newest")) return {DN_EMU_LATE_EXCEPT_NEWEST, 0};
        char *end = nullptr;
        unsigned long long seed = strncmp(v, "random:", 7) ? 0 : strtoull(v + 7, &end, 10);
        if (end && end != v + 7 && !*end) return {DN_EMU_RANDOM, seed};
        fprintf(stderr, "cuda_emu: DN_EMU_STREAMS=%s: expected issue, late, late-except-newest or random:SEED\n", v);
        abort();
    }();
    return setting;
}
inline dn_emu_stream_mode dn_emu_streams() { return dn_emu_stream_settings().mode; }

struct dn_emu_scheduler {
    std::recursive_mutex lock;  // queues, and the work they run (one host thread at a time)
    std::vector<dn_emu_stream *> streams;  // live streams, oldest first (legacy ones included)
    dn_emu_stream *legacy[64] = {};
    std::mt19937_64 random{dn_emu_stream_settings().seed};  // random:SEED's choices
    unsigned run_ahead_percent = 5 + random() % 91;          // how often a stream runs ahead there
};
inline dn_emu_scheduler &dn_emu_scheduler_state()
{
    static dn_emu_scheduler scheduler;
    return scheduler;
}

inline dn_emu_stream *dn_emu_new_stream(int device, bool blocking, bool legacy)
{
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    unsigned pace = dn_emu_streams() == DN_EMU_RANDOM ? sched.random() % 4 : 0;
    dn_emu_stream *s = new dn_emu_stream{device, blocking, legacy, true, 0, 0, pace, {}};
    sched.streams.push_back(s);
    return s;
}
// stream 0: the current device's legacy default stream
inline dn_emu_stream *dn_emu_resolve(cudaStream_t s)
{
    if (s) return s;
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    if (!sched.legacy[dn_emu_device]) sched.legacy[dn_emu_device] = dn_emu_new_stream(dn_emu_device, true, true);
    return sched.legacy[dn_emu_device];
}

// runs s's queued work until `upto` operations have run, each after what it waits for
inline void dn_emu_run_until(dn_emu_stream *s, uint64_t upto)
{
    while (s->done < upto) {
        dn_emu_op op = std::move(s->pending.front());
        s->pending.pop_front();
        for (const auto &[other, issued] : op.after) dn_emu_run_until(other, issued);
        if (op.run) op.run();
        s->done++;
    }
}
inline void dn_emu_finish(dn_emu_stream *s) { dn_emu_run_until(s, s->issued); }

// random:SEED, now and then: a stream with queued work, drawn by pace, runs a
// random number of its operations (each after what it waits for, as CUDA
// promises)
inline void dn_emu_random_step()
{
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    if (dn_emu_streams() != DN_EMU_RANDOM || sched.random() % 100 >= sched.run_ahead_percent) return;
    unsigned paces = 0;
    for (const dn_emu_stream *s : sched.streams) paces += s->issued > s->done ? s->pace : 0;
    if (!paces) return;
    unsigned pick = sched.random() % paces;
    for (dn_emu_stream *s : sched.streams) {
        unsigned pace = s->issued > s->done ? s->pace : 0;
        if (pick >= pace) {
            pick -= pace;
            continue;
        }
        dn_emu_run_until(s, s->done + 1 + sched.random() % (s->issued - s->done));
        return;
    }
}

// a stream or event used after its destruction: CUDA's handle is invalid
// then (the work queued before still runs)
inline void dn_emu_check_live(const char *call, const dn_emu_stream *s)
{
    if (!s || s->live) return;
    fprintf(stderr, "cuda_emu: %s on stream %p after cudaStreamDestroy\n", call, (const void *)s);
    abort();
}
inline void dn_emu_check_live(const char *call, const dn_emu_event *e)
{
    if (!e || e->live) return;
    fprintf(stderr, "cuda_emu: %s with event %p after cudaEventDestroy\n", call, (const void *)e);
    abort();
}

// every stream of `device` to the end, the oldest first (in a random order
// under random:SEED); destroyed streams drained are forgotten
inline void dn_emu_finish_device(int device)
{
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    std::vector<dn_emu_stream *> order;
    for (dn_emu_stream *s : sched.streams)
        if (s->device == device) order.push_back(s);
    if (dn_emu_streams() == DN_EMU_RANDOM) std::shuffle(order.begin(), order.end(), sched.random);
    for (dn_emu_stream *s : order) dn_emu_finish(s);
    auto drained = [device](const dn_emu_stream *s) { return s->device == device && !s->live && s->done == s->issued; };
    sched.streams.erase(std::remove_if(sched.streams.begin(), sched.streams.end(), drained), sched.streams.end());
}

inline bool dn_emu_newest_of_device(const dn_emu_stream *s)
{
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    for (auto it = sched.streams.rbegin(); it != sched.streams.rend(); ++it)
        if ((*it)->device == s->device && !(*it)->legacy && (*it)->live) return *it == s;
    return false;
}

// where the legacy stream and the blocking streams of `device` have got to
// (work they still have queued), except `skip`
inline void dn_emu_blocking_tails(int device, const dn_emu_stream *skip, dn_emu_deps &out)
{
    for (dn_emu_stream *other : dn_emu_scheduler_state().streams)
        if (other->device == device && other->blocking && other != skip && other->issued > other->done)
            out.push_back({other, other->issued});
}

// `run` (nothing where null: a marker) as the next operation of `stream`,
// issued by `call`, at once where DN_EMU_STREAMS is unset, else queued behind
// its stream's earlier work, `after`, and what the legacy-stream rules order
// it after; `host` is the page-locked memory it uses.  Returns where it
// sits: (stream, issued).
inline std::pair<dn_emu_stream *, uint64_t> dn_emu_enqueue(const char *call, cudaStream_t stream,
                                                           std::function<void()> run, dn_emu_deps after = {},
                                                           std::pair<const void *, size_t> host = {})
{
    dn_emu_check_live(call, stream);
    if (dn_emu_streams() == DN_EMU_AT_ISSUE) {
        if (run) run();
        return {nullptr, 0};
    }
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    dn_emu_stream *s = dn_emu_resolve(stream);
    // the legacy stream waits for the blocking streams of its device, a blocking stream for the legacy stream
    dn_emu_stream *legacy = sched.legacy[s->device];
    if (s->legacy) dn_emu_blocking_tails(s->device, s, after);
    else if (s->blocking && legacy && legacy->issued > legacy->done) after.push_back({legacy, legacy->issued});
    const char *host_begin = (const char *)host.first;
    s->pending.push_back({std::move(run), std::move(after), host_begin, host_begin ? host_begin + host.second : nullptr});
    s->issued++;
    std::pair<dn_emu_stream *, uint64_t> at{s, s->issued};
    if (dn_emu_streams() == DN_EMU_LATE_EXCEPT_NEWEST && dn_emu_newest_of_device(s)) dn_emu_finish(s);
    dn_emu_random_step();
    return at;
}
// stream s to the end (cudaStreamSynchronize; `call` the caller's name)
inline void dn_emu_finish_stream(const char *call, cudaStream_t stream)
{
    dn_emu_check_live(call, stream);
    if (dn_emu_streams() == DN_EMU_AT_ISSUE) return;
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    dn_emu_random_step();
    dn_emu_finish(dn_emu_resolve(stream));
}

// whether queued work still uses [p, p + bytes) of page-locked memory
inline bool dn_emu_host_in_use(const void *p, size_t bytes)
{
    if (dn_emu_streams() == DN_EMU_AT_ISSUE) return false;
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    const char *begin = (const char *)p, *end = begin + bytes;
    for (const dn_emu_stream *s : sched.streams)
        for (const dn_emu_op &op : s->pending)
            if (op.host_begin && op.host_begin < end && begin < op.host_end) return true;
    return false;
}

// ---- memory -------------------------------------------------------------------------------

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
inline cudaError_t dn_emu_release(void *p)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    auto it = m.blocks.find((const char *)p);
    if (it == m.blocks.end()) return dn_emu_fail(cudaErrorInvalidValue);  // not a device pointer
    m.used[it->second.first] -= it->second.second;
    m.blocks.erase(it);
    free(p);
    return cudaSuccess;
}
inline int dn_emu_device_of(const void *p)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    auto it = m.blocks.find((const char *)p);
    return it == m.blocks.end() ? -1 : it->second.first;
}
// cudaFree waits for the device's work (as the driver does) before it frees
inline cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    int device = dn_emu_device_of(p);
    if (device < 0) return dn_emu_fail(cudaErrorInvalidValue);
    if (dn_emu_streams() != DN_EMU_AT_ISSUE) dn_emu_finish_device(device);
    return dn_emu_release(p);
}
// stream-ordered: usable by the stream's later work; freed when the stream
// gets there, and no longer device memory for work issued after the call
inline cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeAsync(void *p, cudaStream_t stream)
{
    if (!p) return cudaSuccess;
    std::pair<int, size_t> block;
    {
        dn_emu_memory &m = dn_emu_memory_state();
        std::lock_guard<std::mutex> guard(m.lock);
        auto it = m.blocks.find((const char *)p);
        if (it == m.blocks.end()) return dn_emu_fail(cudaErrorInvalidValue);
        block = it->second;
        m.blocks.erase(it);
    }
    dn_emu_enqueue("cudaFreeAsync", stream, [p, block] {
        dn_emu_memory &m = dn_emu_memory_state();
        std::lock_guard<std::mutex> guard(m.lock);
        m.used[block.first] -= block.second;
        free(p);
    });
    return cudaSuccess;
}

// page-locked host memory: queued copies read and write it when they run
struct dn_emu_pinned_blocks {
    std::mutex lock;
    std::map<const char *, size_t> blocks;
};
inline dn_emu_pinned_blocks &dn_emu_pinned_state()
{
    static dn_emu_pinned_blocks pinned;
    return pinned;
}
// whether [p, p + bytes) lies in one block of `blocks` (start -> what block_bytes reads the size from)
template <typename Blocks, typename Size>
inline bool dn_emu_within(const Blocks &blocks, const void *p, size_t bytes, Size block_bytes)
{
    auto it = blocks.upper_bound((const char *)p);
    if (it == blocks.begin()) return false;
    --it;
    return (const char *)p + bytes <= it->first + block_bytes(it->second);
}
inline bool dn_emu_pinned(const void *p, size_t bytes)
{
    dn_emu_pinned_blocks &m = dn_emu_pinned_state();
    std::lock_guard<std::mutex> guard(m.lock);
    return dn_emu_within(m.blocks, p, bytes, [](size_t size) { return size; });
}
inline cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned)
{
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return dn_emu_fail(cudaErrorMemoryAllocation);
    dn_emu_pinned_blocks &m = dn_emu_pinned_state();
    std::lock_guard<std::mutex> guard(m.lock);
    m.blocks[(const char *)*p] = bytes ? bytes : 1;
    return cudaSuccess;
}
// a block that queued work still reads or writes is reported and aborts
// (CUDA does not promise to wait for it: the memory would be reused under a
// running copy)
inline cudaError_t cudaFreeHost(void *p)
{
    if (!p) return cudaSuccess;
    dn_emu_pinned_blocks &m = dn_emu_pinned_state();
    size_t bytes;
    {
        std::lock_guard<std::mutex> guard(m.lock);
        auto it = m.blocks.find((const char *)p);
        if (it == m.blocks.end()) return dn_emu_fail(cudaErrorInvalidValue);
        bytes = it->second;
        m.blocks.erase(it);
    }
    if (dn_emu_host_in_use(p, bytes)) {
        fprintf(stderr, "cuda_emu: cudaFreeHost(%p) while a queued copy still uses that page-locked memory\n", p);
        abort();
    }
    free(p);
    return cudaSuccess;
}
// whether [p, p + bytes) lies in one device allocation
inline bool dn_emu_on_device(const void *p, size_t bytes)
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    return dn_emu_within(m.blocks, p, bytes, [](const std::pair<int, size_t> &block) { return block.second; });
}

// ---- copies -------------------------------------------------------------------------------

// A copy whose pointers are not where its kind says fails, as cuda-memcheck
// would report it (a host pointer given as device memory reads garbage on a
// GPU).  Pageable host memory is read when the copy is issued (CUDA stages
// it); page-locked memory, and pageable memory written by a copy, when the
// copy runs.  Returns where it was queued.
inline cudaError_t dn_emu_copy(const char *call, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                               cudaStream_t stream, dn_emu_deps after = {})
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
    std::pair<const void *, size_t> pinned{};
    if (!src_device && dn_emu_pinned(src, bytes)) pinned = {src, bytes};
    if (!dst_device && dn_emu_pinned(dst, bytes)) pinned = {dst, bytes};
    if (!src_device && !dn_emu_pinned(src, bytes)) {
        std::shared_ptr<std::vector<char>> staged(new std::vector<char>((const char *)src, (const char *)src + bytes));
        dn_emu_enqueue(call, stream, [dst, staged] { memcpy(dst, staged->data(), staged->size()); }, std::move(after),
                       pinned);
    } else {
        dn_emu_enqueue(call, stream, [dst, src, bytes] { memmove(dst, src, bytes); }, std::move(after), pinned);
    }
    return cudaSuccess;
}
// queued on the stream; a copy into pageable memory too (CUDA's documentation
// says only that it "might be synchronous"), so the host reads it after a
// synchronisation
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream)
{
    return dn_emu_copy("cudaMemcpyAsync", dst, src, bytes, kind, stream);
}
// On the legacy stream.  From host memory: the stream's earlier work first,
// then the host side staged (pageable) or copied (page-locked) before it
// returns; into host memory: returns once done; device to device: queued.
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (!bytes) return cudaSuccess;
    bool from_host = !dn_emu_on_device(src, bytes), to_host = !dn_emu_on_device(dst, bytes);
    if (from_host) dn_emu_finish_stream("cudaMemcpy", nullptr);
    cudaError_t e = dn_emu_copy("cudaMemcpy", dst, src, bytes, kind, nullptr);
    if (e == cudaSuccess && (to_host || (from_host && dn_emu_pinned(src, bytes))))
        dn_emu_finish_stream("cudaMemcpy", nullptr);
    return e;
}
// Between devices: queued behind the legacy stream and the blocking streams
// of both devices (not the non-blocking ones), on the destination's legacy
// stream, with a marker on the source's that later work there waits behind;
// asynchronous to the host.
inline cudaError_t cudaMemcpyPeer(void *dst, int dst_device, const void *src, int src_device, size_t bytes)
{
    if (!bytes) return cudaSuccess;
    if (!dn_emu_on_device(dst, bytes) || !dn_emu_on_device(src, bytes)) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    int current = dn_emu_device;
    dn_emu_deps after;
    if (dn_emu_streams() != DN_EMU_AT_ISSUE) {
        dn_emu_blocking_tails(src_device, nullptr, after);
        dn_emu_blocking_tails(current, nullptr, after);
    }
    dn_emu_device = dst_device;
    dn_emu_traffic_counters.device_to_device += bytes;
    auto at = dn_emu_enqueue("cudaMemcpyPeer", nullptr, [dst, src, bytes] { memmove(dst, src, bytes); },
                             std::move(after));
    if (at.first && src_device != dst_device) {
        dn_emu_device = src_device;
        dn_emu_enqueue("cudaMemcpyPeer", nullptr, nullptr, {at});
    }
    dn_emu_device = current;
    return cudaSuccess;
}
// on `stream`, asynchronous; the caller orders it against the other device's work
inline cudaError_t cudaMemcpyPeerAsync(void *dst, int, const void *src, int, size_t bytes, cudaStream_t stream)
{
    if (!bytes) return cudaSuccess;
    if (!dn_emu_on_device(dst, bytes) || !dn_emu_on_device(src, bytes)) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_traffic_counters.device_to_device += bytes;
    dn_emu_enqueue("cudaMemcpyPeerAsync", stream, [dst, src, bytes] { memmove(dst, src, bytes); });
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width,
                                     size_t height, cudaMemcpyKind kind, cudaStream_t stream)
{
    if (width > dst_pitch || width > src_pitch || kind != cudaMemcpyDeviceToDevice) return dn_emu_fail(cudaErrorInvalidValue);
    if (!height) return cudaSuccess;
    if (!(dn_emu_on_device(dst, (height - 1) * dst_pitch + width) && dn_emu_on_device(src, (height - 1) * src_pitch + width)))
        return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_traffic_counters.device_to_device += height * width;
    dn_emu_enqueue("cudaMemcpy2DAsync", stream, [=] {
        for (size_t row = 0; row < height; row++)
            memmove((char *)dst + row * dst_pitch, (const char *)src + row * src_pitch, width);
    });
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream)
{
    if (bytes && !dn_emu_on_device(p, bytes)) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_enqueue("cudaMemsetAsync", stream, [=] { memset(p, value, bytes); });
    return cudaSuccess;
}
// on the legacy stream, asynchronous to the host
inline cudaError_t cudaMemset(void *p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }

// ---- streams and events -------------------------------------------------------------------

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    *s = dn_emu_new_stream(dn_emu_device, !(flags & cudaStreamNonBlocking), false);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
// returns at once; its queued work still runs when something needs it (as
// CUDA finishes it later); the stream object stays for events recorded on it
inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (!s) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    dn_emu_check_live("cudaStreamDestroy", s);
    s->live = false;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    dn_emu_finish_stream("cudaStreamSynchronize", s);
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize()
{
    if (dn_emu_streams() != DN_EMU_AT_ISSUE) dn_emu_finish_device(dn_emu_device);
    return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new dn_emu_event{dn_emu_device, true, nullptr, 0};
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
// returns at once; waits already issued on it still hold
inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    if (!e) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_check_live("cudaEventDestroy", e);
    e->live = false;
    return cudaSuccess;
}
// the event stands for the work issued to s so far (on the legacy stream,
// with the blocking streams' work before it)
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    dn_emu_check_live("cudaEventRecord", e);
    if (!e || e->device != (s ? s->device : dn_emu_device)) return dn_emu_fail(cudaErrorInvalidValue);  // CUDA refuses that
    auto at = dn_emu_enqueue("cudaEventRecord", s, nullptr);
    e->stream = at.first;
    e->issued = at.second;
    return cudaSuccess;
}
// s's later work waits for the work the event stood for when this was called
inline cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned)
{
    if (!e) return dn_emu_fail(cudaErrorInvalidValue);
    dn_emu_check_live("cudaStreamWaitEvent", e);
    dn_emu_check_live("cudaStreamWaitEvent", s);
    if (e->stream) dn_emu_enqueue("cudaStreamWaitEvent", s, nullptr, {{e->stream, e->issued}});
    return cudaSuccess;
}

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
