// The emulated CUDA build's count of copies and launches since the process
// started, for tests (ctypes): bytes host -> device, device -> host, device
// -> device (a device's pinned host buffers count as host), kernel launches;
// the NCCL collectives run; and the device memory in use.
#include "cuda_runtime.h"

extern "C" __attribute__((visibility("default"))) void dn_emu_traffic(unsigned long long out[4])
{
    out[0] = dn_emu_traffic_counters.host_to_device;
    out[1] = dn_emu_traffic_counters.device_to_host;
    out[2] = dn_emu_traffic_counters.device_to_device;
    out[3] = dn_emu_traffic_counters.launches;
}

// device memory now: bytes allocated (all devices) and live allocations
extern "C" __attribute__((visibility("default"))) void dn_emu_device_memory(unsigned long long out[2])
{
    dn_emu_memory &m = dn_emu_memory_state();
    std::lock_guard<std::mutex> guard(m.lock);
    out[0] = 0;
    for (const auto &block : m.blocks) out[0] += block.second.second;
    out[1] = m.blocks.size();
}

// NCCL collectives run (one per group of ranks; 0 in a build without NCCL)
extern "C" __attribute__((visibility("default"))) unsigned long long dn_emu_collectives(void)
{
    return dn_emu_traffic_counters.collectives;
}
