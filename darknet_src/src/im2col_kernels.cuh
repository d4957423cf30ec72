// The im2col / col2im kernels of blas_kernels.cu and the block copy the
// convolution's weight gradients use.  Built on cuda_device.cuh alone, so
// tests/cuda_emu runs these very kernels on the CPU (conv_driver.cpp).
//
// darknet's columns (im2col.h): row (c, ky, kx), column (oy, ox) of one image.
// Here several images at once, each image's columns at
//   col + image * col_image + row * col_ld + pixel
// darknet's layout per image: col_image = rows * pixels, col_ld = pixels;
// the images side by side (one wide matrix, rows x count * pixels):
// col_image = pixels, col_ld = count * pixels.
#ifndef DN_IM2COL_KERNELS_CUH
#define DN_IM2COL_KERNELS_CUH

#include "cuda_device.cuh"

// one thread per column entry of every image
__global__ void im2col_images_kernel(const float *im, size_t im_image, int channels, int height, int width,
                                     int ksize, int stride, int pad, int out_h, int out_w, float *col,
                                     size_t col_image, size_t col_ld, size_t per_image, size_t n)
{
    GRID_STRIDE(i, n)
    {
        size_t image = i / per_image, entry = i % per_image;
        int ox = entry % out_w;
        int oy = (entry / out_w) % out_h;
        int row = entry / ((size_t)out_w * out_h);  // c * k * k + ky * k + kx
        int kx = row % ksize, ky = (row / ksize) % ksize, c = row / ksize / ksize;
        int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
        const float *source = im + image * im_image;
        col[image * col_image + row * col_ld + (size_t)oy * out_w + ox] =
            (iy >= 0 && iy < height && ix >= 0 && ix < width) ? source[((size_t)c * height + iy) * width + ix]
                                                              : 0.f;
    }
}

// one thread per pixel of every image: gather every column entry that maps to
// it (darknet's per-image layout, image b's columns at col + b * col_image),
// added to what the image (at im + b * im_image) holds
__global__ void col2im_images_kernel(const float *col, size_t col_image, int channels, int height, int width,
                                     int ksize, int stride, int pad, int out_h, int out_w, float *im, size_t im_image,
                                     size_t per_image, size_t n)
{
    GRID_STRIDE(i, n)
    {
        size_t image = i / per_image, pixel = i % per_image;
        int x = pixel % width;
        int y = (pixel / width) % height;
        int c = pixel / ((size_t)width * height);
        const float *columns = col + image * col_image;
        float sum = 0;
        for (int ky = 0; ky < ksize; ky++) {
            int oy_num = y + pad - ky;
            if (oy_num < 0 || oy_num % stride) continue;
            int oy = oy_num / stride;
            if (oy >= out_h) continue;
            for (int kx = 0; kx < ksize; kx++) {
                int ox_num = x + pad - kx;
                if (ox_num < 0 || ox_num % stride) continue;
                int ox = ox_num / stride;
                if (ox >= out_w) continue;
                int row = (c * ksize + ky) * ksize + kx;
                sum += columns[((size_t)row * out_h + oy) * out_w + ox];
            }
        }
        im[image * im_image + pixel] += sum;
    }
}

// dst[b * dst_block + r * dst_ld + x] = src[b * src_block + r * src_ld + x]
// for count blocks of rows x width
__global__ void copy_blocks_kernel(const float *src, size_t src_block, size_t src_ld, float *dst, size_t dst_block,
                                   size_t dst_ld, int rows, int width, size_t n)
{
    GRID_STRIDE(i, n)
    {
        size_t x = i % width, r = (i / width) % rows, b = i / ((size_t)width * rows);
        dst[b * dst_block + r * dst_ld + x] = src[b * src_block + r * src_ld + x];
    }
}

#endif
