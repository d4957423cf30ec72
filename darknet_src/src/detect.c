/* Detection: frames -> network input -> forward -> boxes (darknet's
 * get_network_boxes over every region/yolo layer) -> NMS -> the (box, class)
 * pairs above thresh, in the order darknet's draw_detections prints them. */
#include <stdlib.h>
#include <string.h>

#include "box.h"
#include "cuda.h"
#include "error.h"
#include "image.h"
#include "layers/detection_layers.h"
#include "network.h"

DN_API dn_detect_params dn_detect_default_params(void)
{
    dn_detect_params p = {.5f, .5f, .45f, DN_NMS_SORT, DN_RESIZE_LETTERBOX};
    return p;
}

DN_API void dn_detections_free(dn_detections *dets)
{
    if (!dets) return;
    free(dets->items);
    free(dets);
}

static int is_detection_layer(const dn_layer *l)
{
    return l->type == DN_LAYER_REGION || l->type == DN_LAYER_YOLO;
}

typedef struct {
    dn_candidate *candidates;
    float *probs;
    int capacity;
    int classes;
} candidate_buffer;

static dn_status make_candidate_buffer(const dn_network *net, candidate_buffer *buf)
{
    memset(buf, 0, sizeof *buf);
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (!is_detection_layer(l)) continue;
        buf->capacity += dn_detection_layer_capacity(l);
        int classes = dn_detection_layer_classes(l);
        if (classes > buf->classes) buf->classes = classes;
    }
    if (!buf->capacity)
        return DN_FAIL(DN_ERR_ARG, "%s has no [region] or [yolo] layer: it is not a detector",
                       net->name);
    buf->candidates = calloc((size_t)buf->capacity, sizeof *buf->candidates);
    buf->probs = calloc((size_t)buf->capacity * buf->classes, sizeof *buf->probs);
    if (!buf->candidates || !buf->probs) {
        free(buf->candidates);
        free(buf->probs);
        return DN_FAIL(DN_ERR_OOM, "out of memory for %d candidate boxes", buf->capacity);
    }
    return DN_OK;
}

static void free_candidate_buffer(candidate_buffer *buf)
{
    free(buf->candidates);
    free(buf->probs);
}

/* darknet's get_network_boxes for image `batch_index` of the last forward;
 * boxes in pixels of an img_w x img_h image. */
static int network_candidates(const dn_network *net, int batch_index, int img_w, int img_h,
                              float thresh, int letterbox, candidate_buffer *buf)
{
    int count = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const dn_layer *l = &net->layers[i];
        if (!is_detection_layer(l)) continue;
        dn_candidate *dets = buf->candidates + count;
        float *probs = buf->probs + (size_t)count * buf->classes;
        int n;
        if (l->type == DN_LAYER_REGION)
            n = dn_region_candidates(l, batch_index, thresh, dets, probs);
        else
            n = dn_yolo_candidates(l, batch_index, thresh, net->w, net->h, dets, probs);
        /* layers with fewer classes than the widest: zero the rest */
        int classes = dn_detection_layer_classes(l);
        for (int k = 0; k < n; k++) {
            dets[k].prob = probs + (size_t)k * buf->classes;
            if (classes < buf->classes)
                memset(dets[k].prob + classes, 0, (size_t)(buf->classes - classes) * sizeof(float));
            dets[k].classes = buf->classes;
        }
        dn_correct_boxes(dets, n, img_w, img_h, net->w, net->h, 0, letterbox);
        count += n;
    }
    return count;
}

typedef struct {
    dn_detection *items;
    int count, cap;
} result_list;

static dn_status push_result(result_list *list, dn_detection d)
{
    if (list->count == list->cap) {
        int cap = list->cap ? 2 * list->cap : 64;
        dn_detection *grown = realloc(list->items, (size_t)cap * sizeof *grown);
        if (!grown) return DN_FAIL(DN_ERR_OOM, "out of memory collecting detections");
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->count++] = d;
    return DN_OK;
}

static dn_status collect_image(const dn_network *net, int batch_index, int img_w, int img_h,
                               const dn_detect_params *p, candidate_buffer *buf,
                               result_list *results)
{
    int letterbox = p->resize == DN_RESIZE_LETTERBOX;
    int total = network_candidates(net, batch_index, img_w, img_h, p->thresh, letterbox, buf);
    if (p->nms > 0 && p->nms_kind == DN_NMS_SORT)
        dn_nms_sort(buf->candidates, total, buf->classes, p->nms);
    else if (p->nms > 0 && p->nms_kind == DN_NMS_OBJ)
        dn_nms_obj(buf->candidates, total, buf->classes, p->nms);
    for (int i = 0; i < total; i++) {
        const dn_candidate *c = &buf->candidates[i];
        for (int k = 0; k < buf->classes; k++) {
            if (!(c->prob[k] > p->thresh)) continue;
            dn_detection d = {batch_index, c->index, k,       c->prob[k],
                              c->objectness, c->bbox.x, c->bbox.y, c->bbox.w, c->bbox.h};
            DN_TRY(push_result(results, d));
        }
    }
    return DN_OK;
}

static dn_status check_params(const dn_detect_params *p)
{
    if (!p) return DN_FAIL(DN_ERR_ARG, "detect params must not be NULL");
    if (p->nms_kind != DN_NMS_SORT && p->nms_kind != DN_NMS_OBJ && p->nms_kind != DN_NMS_NONE)
        return DN_FAIL(DN_ERR_ARG, "unknown NMS kind %d", (int)p->nms_kind);
    if (p->resize != DN_RESIZE_LETTERBOX && p->resize != DN_RESIZE_PLAIN)
        return DN_FAIL(DN_ERR_ARG, "unknown resize mode %d", (int)p->resize);
    if (!(p->thresh >= 0 && p->thresh <= 1))
        return DN_FAIL(DN_ERR_ARG, "thresh must be in [0, 1], got %g", p->thresh);
    if (!(p->hier_thresh >= 0 && p->hier_thresh <= 1))
        return DN_FAIL(DN_ERR_ARG, "hier_thresh must be in [0, 1], got %g", p->hier_thresh);
    /* 0 turns NMS off; a negative or NaN value would too, silently */
    if (!(p->nms >= 0 && p->nms <= 1))
        return DN_FAIL(DN_ERR_ARG, "nms must be in [0, 1] (0: no NMS), got %g", p->nms);
    return DN_OK;
}

static dn_status finish(result_list *results, dn_status st, dn_detections **out)
{
    if (st != DN_OK) {
        free(results->items);
        return st;
    }
    dn_detections *d = malloc(sizeof *d);
    if (!d) {
        free(results->items);
        return DN_FAIL(DN_ERR_OOM, "out of memory returning detections");
    }
    d->items = results->items;
    d->count = results->count;
    *out = d;
    return DN_OK;
}

DN_API dn_status dn_network_boxes(dn_network *net, int batch_index, int img_w, int img_h,
                                  const dn_detect_params *params, dn_detections **out)
{
    if (!net || !out) return DN_FAIL(DN_ERR_ARG, "network and out must not be NULL");
    *out = NULL;
    DN_TRY(check_params(params));
    DN_TRY(dn_network_check_buffers(net));
    if (batch_index < 0 || batch_index >= net->batch)
        return DN_FAIL(DN_ERR_ARG, "batch index %d out of range (batch %d)", batch_index,
                       net->batch);
    if (img_w < 1 || img_h < 1)
        return DN_FAIL(DN_ERR_ARG, "image size must be positive, got %dx%d", img_w, img_h);
    candidate_buffer buf;
    DN_TRY(make_candidate_buffer(net, &buf));
    result_list results = {0};
    dn_status st = collect_image(net, batch_index, img_w, img_h, params, &buf, &results);
    free_candidate_buffer(&buf);
    return finish(&results, st, out);
}

DN_API dn_status dn_network_detect(dn_network *net, const dn_frame *frames, int n_frames,
                                   const dn_detect_params *params, dn_detections **out)
{
    if (!net || !out || !frames) return DN_FAIL(DN_ERR_ARG, "network, frames and out must not be NULL");
    *out = NULL;
    DN_TRY(check_params(params));
    DN_TRY(dn_network_check_buffers(net));
    if (n_frames < 1 || n_frames > net->batch)
        return DN_FAIL(DN_ERR_ARG, "%d frames for a network of batch %d (use dn_network_set_batch)",
                       n_frames, net->batch);
    if (net->c != 3)
        return DN_FAIL(DN_ERR_IMAGE, "the network takes %d channels; frames have 3", net->c);
    candidate_buffer buf;
    DN_TRY(make_candidate_buffer(net, &buf));
    dn_status st = DN_OK;
    if (net->gpu) {
        /* upload the frames and letterbox them on the GPU */
        for (int i = 0; i < n_frames && st == DN_OK; i++)
            if (frames[i].width < 1 || frames[i].height < 1 || !frames[i].data ||
                frames[i].row_stride < 3 * frames[i].width)
                st = DN_FAIL(DN_ERR_IMAGE, "frame %d: bad frame (%dx%d, row stride %d)", i,
                             frames[i].width, frames[i].height, frames[i].row_stride);
        if (st == DN_OK && net->device_params_stale) {
            st = dn_cuda_push_params(net);
            if (st == DN_OK) net->device_params_stale = 0;
        }
        if (st == DN_OK) st = dn_cuda_frames_to_input(net, frames, n_frames, params->resize);
        if (st == DN_OK) st = dn_cuda_forward_device_input(net);
    } else {
        for (int i = 0; i < n_frames && st == DN_OK; i++) {
            st = dn_frame_to_input_pool(net->pool, &frames[i], net->w, net->h, params->resize,
                                        net->input + (size_t)i * net->inputs);
            if (st != DN_OK) dn_error_prefix("frame %d: ", i);
        }
        if (st == DN_OK) st = dn_network_forward(net, net->input, 0, NULL);
    }
    result_list results = {0};
    for (int i = 0; i < n_frames && st == DN_OK; i++)
        st = collect_image(net, i, frames[i].width, frames[i].height, params, &buf, &results);
    free_candidate_buffer(&buf);
    return finish(&results, st, out);
}
