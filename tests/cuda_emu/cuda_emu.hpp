// Just enough of CUDA's execution model to run a kernel's logic on the CPU:
// dim3, threadIdx/blockIdx (per thread), blockDim/gridDim, __shared__ memory
// (one block runs at a time, so a static array is that block's) and
// __syncthreads as a barrier of the block's threads.  launch() runs a grid
// block after block, each block on blockDim.x real threads.
//
// For kernels written only on darknet_src/src/cuda_device.cuh (no CUDA
// library calls): tests/test_cuda_emulated.py compiles them with this.
#ifndef DN_CUDA_EMU_HPP
#define DN_CUDA_EMU_HPP

#include <barrier>
#include <cmath>
#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<> *dn_emu_block_barrier;

inline void __syncthreads() { dn_emu_block_barrier->arrive_and_wait(); }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

// kernel<<<grid, threads>>>(...) as launch(grid, threads, [&] { kernel(...); })
inline void launch(dim3 grid, unsigned threads, const std::function<void()> &kernel)
{
    gridDim = grid;
    blockDim = dim3(threads);
    std::barrier<> block_barrier((std::ptrdiff_t)threads);
    dn_emu_block_barrier = &block_barrier;
    std::vector<std::thread> block_threads;
    for (unsigned t = 0; t < threads; t++)
        block_threads.emplace_back([&, t] {
            threadIdx = dim3(t);
            for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                    for (unsigned x = 0; x < grid.x; x++) {
                        blockIdx = dim3(x, y, z);
                        kernel();
                        block_barrier.arrive_and_wait();  // the next block starts when this one ended
                    }
        });
    for (auto &thread : block_threads) thread.join();
}

#endif
