/* A thin C shim over pjreddie darknet (Debian's libdarknet.so), compiled by
 * tests/oracle.py at test time against /usr/lib/darknet/include/darknet.h.
 * It exposes plain functions ctypes can call, so tests compare pydarknet
 * with darknet on the same inputs.  Test code only: darknet exits the
 * process on bad input, so only valid inputs go through here. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "darknet.h"

/* darknet prints its layer table to stderr; keep test logs readable */
static int saved_stderr = -1;
static void quiet(const char *log_path)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(log_path && log_path[0] ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
}
static void loud(void)
{
    fflush(stderr);
    if (saved_stderr >= 0) {
        dup2(saved_stderr, 2);
        close(saved_stderr);
        saved_stderr = -1;
    }
}

/* log_path: where darknet's layer table (stderr) goes, or "" */
void *oracle_load(const char *cfg, const char *weights, int batch, const char *log_path)
{
    quiet(log_path);
    network *net = parse_network_cfg((char *)cfg);
    if (weights && weights[0]) load_weights(net, (char *)weights);
    set_batch_network(net, batch);
    loud();
    return net;
}

void oracle_free(void *p) { free_network((network *)p); }
int oracle_n_layers(void *p) { return ((network *)p)->n; }
int oracle_net_w(void *p) { return ((network *)p)->w; }
int oracle_net_h(void *p) { return ((network *)p)->h; }

/* type (darknet's LAYER_TYPE), output shape, outputs, inputs */
void oracle_layer_info(void *p, int i, int *info)
{
    layer l = ((network *)p)->layers[i];
    info[0] = l.type;
    info[1] = l.out_w;
    info[2] = l.out_h;
    info[3] = l.out_c;
    info[4] = l.outputs;
    info[5] = l.inputs;
}

float *oracle_predict(void *p, float *input) { return network_predict((network *)p, input); }

float *oracle_layer_output(void *p, int i) { return ((network *)p)->layers[i].output; }

/* darknet's image ops on a CHW float image */
void oracle_resize(float *in, int w, int h, int c, int ow, int oh, float *out)
{
    image im = {w, h, c, in};
    image r = resize_image(im, ow, oh);
    memcpy(out, r.data, sizeof(float) * ow * oh * c);
    free_image(r);
}

void oracle_letterbox(float *in, int w, int h, int c, int ow, int oh, float *out)
{
    image im = {w, h, c, in};
    image r = letterbox_image(im, ow, oh);
    memcpy(out, r.data, sizeof(float) * ow * oh * c);
    free_image(r);
}

/* darknet's `detect` pipeline on an already decoded CHW RGB float image:
 * letterbox_image, network_predict, get_network_boxes, NMS (0 = sort,
 * 1 = obj, 2 = none), then every (box, class) above thresh as
 * draw_detections prints them: rows of (class, prob, x, y, w, h, objectness)
 * in pixels.  Returns the number of rows (at most max_rows). */
int oracle_detect(void *p, float *pixels, int w, int h, float thresh, float hier, float nms,
                  int nms_kind, int letterbox, float *rows, int max_rows)
{
    network *net = (network *)p;
    image im = {w, h, 3, pixels};
    image sized = letterbox ? letterbox_image(im, net->w, net->h) : resize_image(im, net->w, net->h);
    network_predict(net, sized.data);
    int nboxes = 0;
    detection *dets = get_network_boxes(net, w, h, thresh, hier, 0, 1, &nboxes);
    layer l = net->layers[net->n - 1];
    if (nms > 0 && nms_kind == 0) do_nms_sort(dets, nboxes, l.classes, nms);
    if (nms > 0 && nms_kind == 1) do_nms_obj(dets, nboxes, l.classes, nms);
    int count = 0;
    for (int i = 0; i < nboxes; i++)
        for (int j = 0; j < l.classes; j++)
            if (dets[i].prob[j] > thresh && count < max_rows) {
                float *r = rows + 7 * count++;
                r[0] = j;
                r[1] = dets[i].prob[j];
                r[2] = dets[i].bbox.x * w;
                r[3] = dets[i].bbox.y * h;
                r[4] = dets[i].bbox.w * w;
                r[5] = dets[i].bbox.h * h;
                r[6] = dets[i].objectness;
            }
    free_detections(dets, nboxes);
    free_image(sized);
    return count;
}
