// CUDA build: device queries and the first kernels.  Compiled only with
// PYDARKNET_CUDA=1 (make CUDA=1); the CPU build uses device.c's answers.
#include <cuda_runtime.h>

extern "C" {
#include "darknet.h"
}

#define DN_API extern "C" __attribute__((visibility("default")))

DN_API int dn_built_with_cuda(void) { return 1; }

DN_API int dn_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: a CPU machine */
        return 0;
    }
    return n;
}

// y = alpha * x + y, the first kernel of the device path.
__global__ void dn_axpy_kernel(int n, float alpha, const float *x, float *y)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += alpha * x[i];
}
