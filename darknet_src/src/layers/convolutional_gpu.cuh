// [convolutional] on the GPU: what cuda.cu needs to size the device scratch.
#ifndef DN_CONVOLUTIONAL_GPU_CUH
#define DN_CONVOLUTIONAL_GPU_CUH

#include <stddef.h>

extern "C" {
#include "../layer.h"
}

// floats of im2col columns for one image and group (0 for a 1x1, stride 1,
// unpadded convolution, whose input already is its columns)
size_t dn_conv_gpu_columns_per_image(const dn_layer *l);

// pixel ranges a weight gradient is split into (1: not split), and the
// floats of device scratch its partial gradients need (0 when not split)
int dn_conv_gpu_grad_segments(const dn_layer *l);
size_t dn_conv_gpu_grad_partials_floats(const dn_layer *l);

#endif
