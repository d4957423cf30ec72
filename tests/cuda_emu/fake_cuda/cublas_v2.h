/* See cuda_runtime.h beside it: names only, for the CPU emulation tests. */
#ifndef DN_FAKE_CUBLAS_V2_H
#define DN_FAKE_CUBLAS_V2_H
#include "cuda_runtime.h"
typedef struct dn_fake_cublas *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
#endif
