// Device-side helpers with no CUDA library behind them: the block sum and
// the grid-stride loop.  Kept apart from cuda_common.cuh so that kernels
// built only on these (layers/batchnorm_kernels.cuh) also compile on the CPU
// under tests/cuda_emu, which runs their logic without a GPU.
#ifndef DN_CUDA_DEVICE_CUH
#define DN_CUDA_DEVICE_CUH

#include <stddef.h>

// The sum of `value` over a block of at most 256 threads (a power of two),
// returned to every thread.
static __device__ __forceinline__ float dn_block_sum(float value)
{
    __shared__ float partial[256];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    float total = partial[0];
    __syncthreads();
    return total;
}

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

#endif
