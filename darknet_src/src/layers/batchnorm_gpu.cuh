// Batch normalisation on the GPU (batchnorm.h's twin).
#ifndef DN_BATCHNORM_GPU_CUH
#define DN_BATCHNORM_GPU_CUH

#include "../cuda_common.cuh"

// floats of l->gpu.bn_partials (the partial sums of training) for n_biases channels
size_t dn_batchnorm_partials_floats(int n_biases);

void dn_batchnorm_forward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial);
void dn_batchnorm_backward_gpu(dn_layer *l, const dn_ctx *ctx, int spatial);

#endif
