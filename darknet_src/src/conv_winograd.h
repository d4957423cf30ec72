/* Winograd F(4x4, 3x3) convolution for inference: 3x3 filters, stride 1,
 * one group, any padding.  For each 4x4 block of outputs ("tile") of filter
 * f, with d_c the 6x6 input patch of channel c under it:
 *
 *   out = A^T [ sum over c of (G g_fc G^T) . (B^T d_c B) ] A      (. elementwise)
 *
 * so the 36 entries ("points") p of the 6x6 transforms turn the convolution
 * into 36 independent GEMMs  M[p] = U[p] V[p]  (filters x channels times
 * channels x tiles): 36 multiplies per 16 outputs instead of 144.
 * Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016).
 *
 * Results are not darknet's bits (the sums are regrouped) but are within
 * a few 1e-6 of the output's scale (see conv_winograd.c), and they are the
 * same bits for any number of threads. */
#ifndef DN_CONV_WINOGRAD_H
#define DN_CONV_WINOGRAD_H

#include <stddef.h>

#include "darknet.h"
#include "gemm.h"
#include "pool.h"

/* Floats of transformed, packed weights for `filters` x `channels` 3x3 filters. */
size_t dn_winograd_weights_floats(int filters, int channels);

/* U = G g G^T of every filter and channel (weights [filters][channels][3][3],
 * darknet's layout), packed for the GEMM into `u`
 * (dn_winograd_weights_floats floats).  Depends on the GEMM kernel chosen
 * at run time, which never changes in a process. */
void dn_winograd_transform_weights(dn_pool *pool, const float *weights, int filters, int channels,
                                   float *u);

/* Scratch floats dn_winograd_conv needs for one image. */
size_t dn_winograd_workspace_floats(int channels, int filters, int out_h, int out_w);

/* One image: output[filters][out_h][out_w] = act(conv(input) * scale + shift)
 * (the epilogue as in gemm.h, NULL = none), out_h = height + 2 * pad - 2.
 * DN_ERR_OOM (output unspecified) when a thread's transform buffer could
 * not be allocated: the caller falls back to another method. */
dn_status dn_winograd_conv(dn_pool *pool, const float *input, int channels, int height, int width,
                           int pad, int filters, const float *u, float *output,
                           const dn_gemm_epilogue *epilogue, float *workspace);

#endif
