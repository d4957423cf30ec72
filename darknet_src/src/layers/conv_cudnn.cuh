// cuDNN convolutions (conv_cudnn.cu): each returns 1 when it ran the
// convolution (failures are recorded on the network's dn_gpu), 0 when the
// library was built without cuDNN and the caller runs im2col + cuBLAS.
#ifndef DN_CONV_CUDNN_CUH
#define DN_CONV_CUDNN_CUH

#include "../cuda_common.cuh"

// output = conv(input, weights), before bias / batch norm / activation
int dn_conv_cudnn_forward(dn_layer *l, const dn_ctx *ctx);
// weight gradients += and input delta += from l->gpu.delta (after the
// activation's gradient and batch norm's backward)
int dn_conv_cudnn_backward(dn_layer *l, const dn_ctx *ctx);
// a layer's descriptors (with its other device buffers)
void dn_conv_cudnn_free(dn_layer *l);
// a network's cuDNN handle and workspace (when it leaves the GPU)
void dn_cudnn_release(dn_gpu *gpu);

#endif
