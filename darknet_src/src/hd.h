/* DN_HD: a function written once for the host and, under nvcc, the device
 * (activation_formulas.h, box.h, layers/detection_loss.h). */
#ifndef DN_HD_H
#define DN_HD_H

#ifdef __CUDACC__
#define DN_HD __host__ __device__
#else
#define DN_HD
#endif

#endif
