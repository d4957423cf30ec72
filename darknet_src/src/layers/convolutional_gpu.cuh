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

#endif
