/* Frames to network input: darknet's bilinear resize, letterbox, BGR->RGB. */
#ifndef DN_IMAGE_H
#define DN_IMAGE_H

#include "darknet.h"
#include "pool.h"

/* The size letterbox_image gives an img_w x img_h image inside net_w x net_h. */
void dn_letterbox_size(int img_w, int img_h, int net_w, int net_h, int *new_w, int *new_h);

/* Frame -> CHW floats of out_w x out_h (see dn_frame_to_input), using `pool`. */
dn_status dn_frame_to_input_pool(dn_pool *pool, const dn_frame *frame, int out_w, int out_h,
                                 dn_resize_mode mode, float *out);

/* NULL when `value` is a setting darknet's augmentation arithmetic can use
 * for `name` ("jitter", "hue", "saturation" or "exposure"), else what is
 * expected (augment.c; the cfg's [net] and [region]/[yolo] use it too). */
const char *dn_augment_expected(const char *name, float value);

#endif
