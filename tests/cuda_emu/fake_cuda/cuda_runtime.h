/* The few CUDA runtime names darknet_src's CUDA headers mention, for
 * compiling host-side orchestration on the CPU in tests/test_cuda_emulated.py.
 * Not the real API: the functions are declared for the drivers that need them
 * (cudnn_driver.cpp defines them; the others call none). */
#ifndef DN_FAKE_CUDA_RUNTIME_H
#define DN_FAKE_CUDA_RUNTIME_H
#include <stddef.h>
typedef struct dn_fake_stream *cudaStream_t;
typedef struct dn_fake_event *cudaEvent_t;
typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 } cudaError_t;
cudaError_t cudaMalloc(void **pointer, size_t bytes);
cudaError_t cudaFree(void *pointer);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t error);
#endif
