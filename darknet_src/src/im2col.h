/* im2col / col2im for convolutions (darknet's column layout):
 * col[(c*k*k + ky*k + kx)][oy*out_w + ox] = im[c][oy*stride + ky - pad][ox*stride + kx - pad]
 * (0 outside the image). */
#ifndef DN_IM2COL_H
#define DN_IM2COL_H

#include "pool.h"

void dn_im2col(dn_pool *pool, const float *im, int channels, int height, int width, int ksize,
               int stride, int pad, float *col);
/* The adjoint: im += col2im(col) (backward). */
void dn_col2im(dn_pool *pool, const float *col, int channels, int height, int width, int ksize,
               int stride, int pad, float *im);

#endif
