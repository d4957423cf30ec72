#include "box.h"

#include <stdlib.h>
#include <string.h>

/* ---- sorting ------------------------------------------------------------------
 * darknet sorts with qsort; glibc's qsort (Debian's darknet) is a stable
 * merge sort for arrays like these, so ties keep their order.  We use our own
 * stable merge sort to get the same order everywhere. */

static float sort_key(const dn_candidate *d)
{
    return d->sort_class >= 0 ? d->prob[d->sort_class] : d->objectness;
}

/* descending by key, stable */
static void merge_sort(dn_candidate *a, dn_candidate *tmp, int n)
{
    if (n < 2) return;
    int mid = n / 2;
    merge_sort(a, tmp, mid);
    merge_sort(a + mid, tmp, n - mid);
    int i = 0, j = mid, k = 0;
    while (i < mid && j < n) {
        /* take from the right only when strictly larger: keeps ties stable */
        if (sort_key(&a[j]) > sort_key(&a[i]))
            tmp[k++] = a[j++];
        else
            tmp[k++] = a[i++];
    }
    while (i < mid) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, (size_t)n * sizeof *a);
}

static void sort_candidates(dn_candidate *dets, int n)
{
    if (n < 2) return;
    dn_candidate *tmp = malloc((size_t)n * sizeof *tmp);
    if (tmp) {
        merge_sort(dets, tmp, n);
        free(tmp);
        return;
    }
    /* no memory for the merge buffer: stable insertion sort */
    for (int i = 1; i < n; i++) {
        dn_candidate d = dets[i];
        int j = i - 1;
        while (j >= 0 && sort_key(&d) > sort_key(&dets[j])) {
            dets[j + 1] = dets[j];
            j--;
        }
        dets[j + 1] = d;
    }
}

/* darknet moves empty candidates to the back by swapping with the last
 * non-empty one (so the front keeps a particular order); reproduced. */
static int drop_empty(dn_candidate *dets, int total)
{
    int k = total - 1;
    for (int i = 0; i <= k; i++) {
        if (dets[i].objectness == 0) {
            dn_candidate swap = dets[i];
            dets[i] = dets[k];
            dets[k] = swap;
            k--;
            i--;
        }
    }
    return k + 1;
}

int dn_nms_sort(dn_candidate *dets, int total, int classes, float thresh)
{
    total = drop_empty(dets, total);
    for (int k = 0; k < classes; k++) {
        for (int i = 0; i < total; i++) dets[i].sort_class = k;
        sort_candidates(dets, total);
        for (int i = 0; i < total; i++) {
            if (dets[i].prob[k] == 0) continue;
            dn_box a = dets[i].bbox;
            for (int j = i + 1; j < total; j++)
                if (dn_box_iou(a, dets[j].bbox) > thresh) dets[j].prob[k] = 0;
        }
    }
    return total;
}

int dn_nms_obj(dn_candidate *dets, int total, int classes, float thresh)
{
    total = drop_empty(dets, total);
    for (int i = 0; i < total; i++) dets[i].sort_class = -1;
    sort_candidates(dets, total);
    for (int i = 0; i < total; i++) {
        if (dets[i].objectness == 0) continue;
        dn_box a = dets[i].bbox;
        for (int j = i + 1; j < total; j++) {
            if (dets[j].objectness == 0) continue;
            if (dn_box_iou(a, dets[j].bbox) > thresh) {
                dets[j].objectness = 0;
                for (int k = 0; k < classes; k++) dets[j].prob[k] = 0;
            }
        }
    }
    return total;
}

void dn_correct_boxes(dn_candidate *dets, int n, int w, int h, int net_w, int net_h, int relative,
                      int letterbox)
{
    int new_w = net_w, new_h = net_h;
    if (letterbox) {
        /* the size letterbox_image gave the image inside the network input */
        if ((float)net_w / w < (float)net_h / h) {
            new_w = net_w;
            new_h = (h * net_w) / w;
        } else {
            new_h = net_h;
            new_w = (w * net_h) / h;
        }
    }
    for (int i = 0; i < n; i++) {
        dn_box b = dets[i].bbox;
        b.x = (b.x - (net_w - new_w) / 2. / net_w) / ((float)new_w / net_w);
        b.y = (b.y - (net_h - new_h) / 2. / net_h) / ((float)new_h / net_h);
        b.w *= (float)net_w / new_w;
        b.h *= (float)net_h / new_h;
        if (!relative) {
            b.x *= w;
            b.w *= w;
            b.y *= h;
            b.h *= h;
        }
        dets[i].bbox = b;
    }
}
