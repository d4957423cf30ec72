// The NCCL calls darknet_src makes (cuda.cu with DN_NCCL), for the emulated
// CUDA build with --nccl: communicators over emulated devices and an
// all-reduce of float buffers on each rank's stream.
//
// As NCCL: the calls of one group (ncclGroupStart .. ncclGroupEnd) form one
// collective per communicator set, which starts when every rank's stream has
// run the work issued before it, and each rank's later work waits for it; a
// rank's stream must be on its communicator's device; an all-reduce of
// several ranks outside a group (which would hang, one thread waiting on the
// others) is refused; two ranks on one device are refused at init.  The sum
// runs in rank order (NCCL's ring order differs; the tests compare within
// tolerance).
#ifndef DN_EMU_NCCL_H
#define DN_EMU_NCCL_H

#include <algorithm>
#include <memory>
#include <vector>

#include "cuda_runtime.h"

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
} ncclResult_t;
typedef enum { ncclFloat32 = 7, ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;

struct dn_emu_clique;
struct dn_emu_comm {
    int device, rank;
    std::shared_ptr<dn_emu_clique> clique;
};
struct dn_emu_clique {
    int n_ranks;
};
typedef dn_emu_comm *ncclComm_t;

inline const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    }
    return "unknown result code";
}

// one communicator per listed device (0 .. n-1 where `devices` is NULL)
inline ncclResult_t ncclCommInitAll(ncclComm_t *comms, int n, const int *devices)
{
    if (!comms || n < 1) return ncclInvalidArgument;
    std::vector<int> list(n);
    for (int r = 0; r < n; r++) {
        list[r] = devices ? devices[r] : r;
        if (list[r] < 0 || list[r] >= dn_emu_gpus()) return ncclInvalidArgument;
    }
    std::vector<int> sorted = list;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return ncclInvalidUsage;  // duplicate GPU
    auto clique = std::make_shared<dn_emu_clique>(dn_emu_clique{n});
    for (int r = 0; r < n; r++) comms[r] = new dn_emu_comm{list[r], r, clique};
    return ncclSuccess;
}

struct dn_emu_nccl_call {
    float *send, *recv;
    size_t count;
    ncclRedOp_t op;
    ncclComm_t comm;
    cudaStream_t stream;
};
struct dn_emu_nccl_group {
    int depth = 0;
    std::vector<dn_emu_nccl_call> calls;
};
inline thread_local dn_emu_nccl_group dn_emu_nccl;

// One collective: every rank's buffer summed in rank order (averaged for
// ncclAvg) into every rank's result, on rank 0's stream once the others'
// streams have run what came before; their later work waits for it.
inline ncclResult_t dn_emu_nccl_collective(std::vector<dn_emu_nccl_call> calls)
{
    std::sort(calls.begin(), calls.end(),
              [](const dn_emu_nccl_call &a, const dn_emu_nccl_call &b) { return a.comm->rank < b.comm->rank; });
    for (size_t r = 0; r < calls.size(); r++)
        if (calls[r].comm->rank != (int)r || calls[r].count != calls[0].count || calls[r].op != calls[0].op)
            return ncclInvalidUsage;
    auto run = [calls] {
        dn_emu_traffic_counters.collectives++;
        size_t count = calls[0].count;
        std::vector<float> sum(calls[0].send, calls[0].send + count);
        for (size_t r = 1; r < calls.size(); r++)
            for (size_t i = 0; i < count; i++) sum[i] += calls[r].send[i];
        if (calls[0].op == ncclAvg)
            for (float &v : sum) v *= 1.f / (float)calls.size();
        for (const dn_emu_nccl_call &c : calls) std::copy(sum.begin(), sum.end(), c.recv);
    };
    dn_emu_scheduler &sched = dn_emu_scheduler_state();
    std::lock_guard<std::recursive_mutex> guard(sched.lock);
    dn_emu_deps others;  // never the legacy stream: ncclAllReduce refuses stream 0
    for (size_t r = 1; r < calls.size(); r++) others.push_back({calls[r].stream, calls[r].stream->issued});
    auto at = dn_emu_enqueue("ncclAllReduce", calls[0].stream, run, std::move(others));
    if (at.first)
        for (size_t r = 1; r < calls.size(); r++) dn_emu_enqueue("ncclAllReduce", calls[r].stream, nullptr, {at});
    return ncclSuccess;
}

inline ncclResult_t ncclGroupStart()
{
    dn_emu_nccl.depth++;
    return ncclSuccess;
}

// the group's calls, one collective per set of communicators
inline ncclResult_t ncclGroupEnd()
{
    if (dn_emu_nccl.depth < 1) return ncclInvalidUsage;
    if (--dn_emu_nccl.depth > 0) return ncclSuccess;
    std::vector<dn_emu_nccl_call> calls = std::move(dn_emu_nccl.calls);
    dn_emu_nccl.calls.clear();
    while (!calls.empty()) {
        std::shared_ptr<dn_emu_clique> clique = calls[0].comm->clique;
        std::vector<dn_emu_nccl_call> mine, rest;
        for (const dn_emu_nccl_call &c : calls) (c.comm->clique == clique ? mine : rest).push_back(c);
        if ((int)mine.size() != clique->n_ranks) return ncclInvalidUsage;  // a rank missing: NCCL would hang
        ncclResult_t r = dn_emu_nccl_collective(mine);
        if (r != ncclSuccess) return r;
        calls = std::move(rest);
    }
    return ncclSuccess;
}

inline ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                  ncclComm_t comm, cudaStream_t stream)
{
    if (!comm || type != ncclFloat || (op != ncclSum && op != ncclAvg)) return ncclInvalidArgument;
    // the rank's device's stream (stream 0, which NCCL takes, is not emulated: the engine never passes it)
    if (!stream || stream->device != comm->device) return ncclInvalidArgument;
    if (count && (!dn_emu_on_device(send, count * sizeof(float)) || !dn_emu_on_device(recv, count * sizeof(float))))
        return ncclInvalidArgument;
    dn_emu_nccl_call call{(float *)send, (float *)recv, count, op, comm, stream};
    if (dn_emu_nccl.depth > 0) {
        dn_emu_nccl.calls.push_back(call);
        return ncclSuccess;
    }
    if (comm->clique->n_ranks > 1) return ncclInvalidUsage;  // the other ranks' calls could never join it
    return dn_emu_nccl_collective({call});
}

#endif
