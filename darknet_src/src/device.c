/* The CUDA seam: what the rest of the engine asks about devices.  A CPU
 * build answers "none"; the CUDA build (cuda.cu) provides the real ones. */
#include "darknet.h"
#include "error.h"

#ifndef DN_CUDA
DN_API int dn_built_with_cuda(void) { return 0; }
DN_API int dn_cuda_device_count(void) { return 0; }
#endif
