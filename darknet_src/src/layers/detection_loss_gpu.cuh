// [region] and [yolo] on the GPU: what cuda.cu needs to size a loss layer's
// device scratch (layers/detection_loss_kernels.cuh has its layout).
#ifndef DN_DETECTION_LOSS_GPU_CUH
#define DN_DETECTION_LOSS_GPU_CUH

#include <stddef.h>

extern "C" {
#include "../layer.h"
}

// floats of scratch the loss of [region]/[yolo] layer `l` needs for a pass
// whose truths hold `truth_stride` floats per image (0 for other layers)
size_t dn_detection_loss_gpu_floats(const dn_layer *l, int truth_stride);

#endif
