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
#include <xmmintrin.h>

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

/* ---- training --------------------------------------------------------------------------
 * darknet's train_network_datum, split so that tests can look in between:
 * oracle_train_forward sets seen (as it was before this batch) and adds the
 * batch to it BEFORE the forward, as darknet does, copies input and truth,
 * and runs forward_network in training mode; oracle_backward runs
 * backward_network.  darknet leaves net->delta NULL (the first layer then
 * computes no input gradient); `input_delta` (batch * inputs floats, or NULL)
 * is lent to it for one backward so that the input's gradient can be read. */

float oracle_train_forward(void *p, const float *input, const float *truth, long long seen_before)
{
    network *net = (network *)p;
    *net->seen = (size_t)seen_before + net->batch;
    net->train = 1;
    memcpy(net->input, input, sizeof(float) * net->inputs * net->batch);
    if (truth) memcpy(net->truth, truth, sizeof(float) * net->truths * net->batch);
    forward_network(net);
    return *net->cost;
}

void oracle_backward(void *p, float *input_delta)
{
    network *net = (network *)p;
    float *saved = net->delta;
    net->delta = input_delta;
    backward_network(net);
    net->delta = saved;
}

/* darknet's train_network on n images (n / batch forwards; an update every
 * `subdivisions` of them): returns its loss (cost per image) */
float oracle_train_network(void *p, float *images, float *truths, int n)
{
    network *net = (network *)p;
    data d = {0};
    d.X.rows = d.y.rows = n;
    d.X.cols = net->inputs;
    d.y.cols = net->truths;
    d.X.vals = calloc(n, sizeof(float *));
    d.y.vals = calloc(n, sizeof(float *));
    for (int i = 0; i < n; i++) {
        d.X.vals[i] = images + (size_t)i * net->inputs;
        d.y.vals[i] = truths + (size_t)i * net->truths;
    }
    float loss = train_network(net, d);
    free(d.X.vals);
    free(d.y.vals);
    return loss;
}

void oracle_update(void *p) { update_network((network *)p); }
float oracle_current_rate(void *p) { return get_current_rate((network *)p); }
void oracle_set_seen(void *p, long long seen) { *((network *)p)->seen = (size_t)seen; }
long long oracle_seen(void *p) { return (long long)*((network *)p)->seen; }
int oracle_truths(void *p) { return ((network *)p)->truths; }

/* One of a layer's arrays: 0 output, 1 delta, 2 biases, 3 scales, 4 weights,
 * 5 bias_updates, 6 scale_updates, 7 weight_updates, 8 rolling_mean,
 * 9 rolling_variance.  Copies n floats; returns -1 where the layer has none. */
int oracle_layer_array(void *p, int i, int which, float *out, int n)
{
    layer *l = &((network *)p)->layers[i];
    float *arrays[] = {l->output,         l->delta,          l->biases,       l->scales,
                       l->weights,        l->bias_updates,   l->scale_updates, l->weight_updates,
                       l->rolling_mean,   l->rolling_variance};
    if (which < 0 || which >= (int)(sizeof arrays / sizeof arrays[0]) || !arrays[which]) return -1;
    memcpy(out, arrays[which], sizeof(float) * n);
    return 0;
}

float oracle_layer_cost(void *p, int i)
{
    layer *l = &((network *)p)->layers[i];
    return l->cost ? *l->cost : 0.f;
}

/* pjreddie's CPU backward_region_layer is empty (its body is commented out):
 * CPU darknet passes no gradient from a [region] layer to the network.  Its
 * GPU path, which trained the published YOLOv2 models and which pydarknet
 * implements on every device, multiplies the x, y and objectness deltas by
 * the logistic derivative out * (1 - out) and adds the whole delta to the
 * previous layer's.  This is that behaviour, written here for the CPU
 * library, so that whole training steps of region networks can be compared. */
static void region_backward_gpu_path(layer l, network net)
{
    int spatial = l.w * l.h, entries = l.coords + l.classes + 1;
    for (int b = 0; b < l.batch; b++)
        for (int n = 0; n < l.n; n++) {
            int base = b * l.outputs + n * spatial * entries;
            int planes[3] = {0, 1, l.coords};
            for (int k = 0; k < (l.background ? 2 : 3); k++)
                for (int s = 0; s < spatial; s++) {
                    int at = base + planes[k] * spatial + s;
                    l.delta[at] *= l.output[at] * (1 - l.output[at]);
                }
        }
    if (net.delta)
        for (int k = 0; k < l.batch * l.inputs; k++) net.delta[k] += l.delta[k];
}

/* Replace the backward of every [region] layer by the GPU path above;
 * returns how many were replaced. */
int oracle_use_gpu_region_backward(void *p)
{
    network *net = (network *)p;
    int count = 0;
    for (int i = 0; i < net->n; i++)
        if (net->layers[i].type == REGION) {
            net->layers[i].backward = region_backward_gpu_path;
            count++;
        }
    return count;
}

/* Debian builds libdarknet.so with -Ofast: loading it switches on flush-to-zero
 * and denormals-are-zero for the loading thread (crtfastmath).  Put the
 * default back so the rest of the test process computes with IEEE floats. */
void oracle_fpu_default(void)
{
    _mm_setcsr(_mm_getcsr() & ~(0x8000u | 0x0040u));
}
