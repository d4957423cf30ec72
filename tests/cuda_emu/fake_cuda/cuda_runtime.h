/* The few CUDA runtime names darknet_src's CUDA headers mention, for
 * compiling host-side orchestration (no kernels, no CUDA calls) on the CPU
 * in tests/test_cuda_emulated.py.  Not the real API: nothing here runs. */
#ifndef DN_FAKE_CUDA_RUNTIME_H
#define DN_FAKE_CUDA_RUNTIME_H
typedef struct dn_fake_stream *cudaStream_t;
typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 } cudaError_t;
#endif
