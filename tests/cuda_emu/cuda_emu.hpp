// Just enough of CUDA's execution model to run a kernel's logic on the CPU:
// dim3, threadIdx/blockIdx/blockDim/gridDim, __shared__ memory (one block
// runs at a time per host thread, so a thread_local static array is that
// block's) and __syncthreads as a barrier of the block's threads.
//
// launch() runs a grid block after block on the calling host thread.  The
// first block runs its threads as fibers (their own stacks, with a guard
// page; an x86-64 stack switch): __syncthreads switches to the next thread of the block, so every
// thread reaches the barrier before any goes past it; a barrier that some
// threads skip (divergent code) is reported and aborts.  Where that first block never synchronised, the
// rest of the grid runs its threads one after the other as plain calls; a
// kernel that synchronises in some blocks only is reported and aborts.
//
// For kernels written only on darknet_src/src/cuda_device.cuh (no CUDA
// library calls): tests/test_cuda_emulated.py compiles them with this, and
// tests/cuda_emu/emulated_build.py the whole CUDA engine.
#ifndef DN_CUDA_EMU_HPP
#define DN_CUDA_EMU_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

// a fiber's stack, with a page below it that faults on an overflow
struct dn_emu_stack {
    static constexpr size_t bytes = 64 << 10;
    char *base = nullptr;  // the guard page; the stack is above it
    size_t page = 0;
    dn_emu_stack()
    {
        page = (size_t)sysconf(_SC_PAGESIZE);
        void *p = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "cuda_emu: no memory for a fiber stack\n");
            abort();
        }
        base = (char *)p;
        mprotect(base, page, PROT_NONE);
    }
    ~dn_emu_stack() { munmap(base, bytes + page); }
    dn_emu_stack(const dn_emu_stack &) = delete;
    dn_emu_stack &operator=(const dn_emu_stack &) = delete;
};

struct dn_emu_fiber {
    void *sp;  // its saved stack pointer while it is not running
    std::unique_ptr<dn_emu_stack> stack;
    dim3 thread;
    bool done;
};

struct dn_emu_state {
    std::vector<dn_emu_fiber> fibers;
    void *scheduler_sp = nullptr;
    dn_emu_fiber *current = nullptr;  // the fiber running, NULL outside fiber mode
    bool synchronised = false;        // a __syncthreads happened in the block run with fibers
    const std::function<void()> *kernel = nullptr;
};

inline thread_local dn_emu_state dn_emu;

// The switch between stacks (x86-64 System V; ucontext's swapcontext makes a
// system call each time, 50x slower): push the callee-saved registers, save
// the stack pointer in *from, load `to`, pop that stack's registers, return
// into it.
__attribute__((naked, noinline)) static void dn_emu_switch(void **from, void *to)
{
    asm("pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
        "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
        "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret\n\t");
}

inline void __syncthreads()
{
    if (!dn_emu.current) {
        fprintf(stderr, "cuda_emu: __syncthreads in a block after a first block that never synchronised\n");
        abort();
    }
    dn_emu.synchronised = true;
    dn_emu_switch(&dn_emu.current->sp, dn_emu.scheduler_sp);
}

// where a fiber starts (through dn_emu_switch's `ret`); it never returns
[[noreturn]] static void dn_emu_fiber_main()
{
    (*dn_emu.kernel)();
    dn_emu.current->done = true;
    dn_emu_switch(&dn_emu.current->sp, dn_emu.scheduler_sp);
    abort();  // a finished fiber is never resumed
}

// a fresh stack that dn_emu_switch enters at dn_emu_fiber_main: six zeroed
// registers, then the return address, placed so that the function starts
// with the stack aligned as a call would leave it
inline void *dn_emu_fresh_stack(dn_emu_stack &stack)
{
    uintptr_t top = (uintptr_t)(stack.base + stack.page + dn_emu_stack::bytes) & ~(uintptr_t)15;
    void **sp = (void **)(top - 64);
    for (int i = 0; i < 6; i++) sp[i] = nullptr;
    sp[6] = (void *)&dn_emu_fiber_main;
    sp[7] = nullptr;
    return sp;
}

inline dim3 dn_emu_thread(unsigned t, dim3 block) { return dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y)); }

// one block, its threads as fibers, round robin between barriers
inline void dn_emu_fiber_block(unsigned threads, dim3 block)
{
    if (dn_emu.fibers.size() < threads) dn_emu.fibers.resize(threads);
    for (unsigned t = 0; t < threads; t++) {
        dn_emu_fiber &f = dn_emu.fibers[t];
        if (!f.stack) f.stack.reset(new dn_emu_stack);
        f.sp = dn_emu_fresh_stack(*f.stack);
        f.thread = dn_emu_thread(t, block);
        f.done = false;
    }
    for (unsigned running = threads; running > 0;) {
        unsigned finished = 0;
        running = 0;
        for (unsigned t = 0; t < threads; t++) {
            dn_emu_fiber &f = dn_emu.fibers[t];
            if (f.done) continue;
            dn_emu.current = &f;
            threadIdx = f.thread;
            dn_emu_switch(&dn_emu.scheduler_sp, f.sp);
            running += !f.done;
            finished += f.done;
        }
        // every thread reaches each barrier, or none: some ending while
        // others wait is a __syncthreads in divergent code
        if (running && finished) {
            fprintf(stderr, "cuda_emu: block (%u,%u,%u): %u threads wait at __syncthreads while %u ended\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, running, finished);
            abort();
        }
    }
    dn_emu.current = nullptr;
}

// kernel<<<grid, block>>>(...) as launch(grid, block, [&] { kernel(...); })
inline void launch(dim3 grid, dim3 block, const std::function<void()> &kernel)
{
    gridDim = grid;
    blockDim = block;
    unsigned threads = block.x * block.y * block.z;
    dn_emu.kernel = &kernel;
    dn_emu.synchronised = false;
    bool fibers = true;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                if (fibers) {
                    dn_emu_fiber_block(threads, block);
                    fibers = dn_emu.synchronised;  // plain calls from here on where it never synchronised
                    continue;
                }
                for (unsigned t = 0; t < threads; t++) {
                    threadIdx = dn_emu_thread(t, block);
                    kernel();
                }
            }
}

inline void launch(dim3 grid, unsigned threads, const std::function<void()> &kernel)
{
    launch(grid, dim3(threads), kernel);
}

#endif
