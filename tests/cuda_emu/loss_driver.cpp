// Runs darknet_src's region / yolo loss kernels (layers/detection_loss_kernels.cuh)
// on the CPU through cuda_emu.hpp, launched as loss_layers.cu launches them:
//   loss_driver DIR
// DIR/params.txt, one line:
//   region B W H N COORDS CLASSES SOFTMAX BACKGROUND RESCORE BIAS_MATCH PRIOR THRESH
//          COORD_SCALE OBJECT_SCALE NOOBJECT_SCALE CLASS_SCALE TRUTH_STRIDE
//   yolo B W H N TOTAL CLASSES MAX_BOXES NET_W NET_H IGNORE_THRESH TRUTH_THRESH TRUTH_STRIDE
// reads DIR/{output,truth,anchors,mask}.bin (float32; mask for yolo only),
// writes DIR/delta.bin and DIR/results.bin: cost, objectness sum, the
// DN_LOSS_SUMS batch sums.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda_emu.hpp"
#include "float_files.hpp"
#include "layers/detection_loss_kernels.cuh"

static unsigned blocks_for(size_t n) { return n ? (unsigned)((n + 255) / 256) : 1u; }

// the loss stages as loss_layers.cu launches them
template <typename Args>
static void launch_loss(const Args &a, const std::vector<float> &truth, int truth_stride, int batch,
                        std::vector<float> &results)
{
    launch(dim3(DN_LOSS_BLOCKS), DN_LOSS_THREADS,
           [&] { loss_cells_kernel(a, truth.data(), truth_stride, batch, results.data()); });
    launch(dim3(blocks_for(batch)), 256, [&] {
        loss_truths_kernel(a, truth.data(), truth_stride, batch, results.data() + 2 * DN_LOSS_BLOCKS);
    });
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    std::string dir = argv[1];
    FILE *params = fopen((dir + "/params.txt").c_str(), "r");
    char kind[16] = {0};
    if (!params || fscanf(params, "%15s", kind) != 1) return 2;
    int batch, w, h, n_anchors, classes, truth_stride;
    std::vector<float> output, truth, anchors, delta, results;
    std::vector<int> mask;
    size_t out_floats;
    if (!strcmp(kind, "region")) {
        dn_region_loss_args a;
        if (fscanf(params, "%d %d %d %d %d %d %d %d %d %d %d %f %f %f %f %f %d", &batch, &w, &h, &n_anchors,
                   &a.coords, &classes, &a.softmax, &a.background, &a.rescore, &a.bias_match, &a.prior,
                   &a.thresh, &a.coord_scale, &a.object_scale, &a.noobject_scale, &a.class_scale,
                   &truth_stride) != 17)
            return 2;
        a.w = w;
        a.h = h;
        a.n_anchors = n_anchors;
        a.classes = classes;
        a.truth_floats = a.coords + 1;
        a.out_size = w * h * n_anchors * (a.coords + 1 + classes);
        out_floats = (size_t)batch * a.out_size;
        output = read_floats(dir + "/output.bin", out_floats);
        truth = read_floats(dir + "/truth.bin", (size_t)batch * truth_stride);
        anchors = read_floats(dir + "/anchors.bin", 2 * (size_t)n_anchors);
        delta.assign(out_floats, 0.f);  // the training forward zeroes every delta
        results.assign(2 * DN_LOSS_BLOCKS + (size_t)batch * DN_LOSS_SUMS, -1.f);
        a.output = output.data();
        a.delta = delta.data();
        a.anchors = anchors.data();
        launch_loss(a, truth, truth_stride, batch, results);
    } else if (!strcmp(kind, "yolo")) {
        dn_yolo_loss_args a;
        if (fscanf(params, "%d %d %d %d %d %d %d %d %d %f %f %d", &batch, &w, &h, &n_anchors, &a.total, &classes,
                   &a.max_boxes, &a.net_w, &a.net_h, &a.ignore_thresh, &a.truth_thresh, &truth_stride) != 12)
            return 2;
        a.w = w;
        a.h = h;
        a.n_anchors = n_anchors;
        a.classes = classes;
        a.out_size = w * h * n_anchors * (4 + 1 + classes);
        out_floats = (size_t)batch * a.out_size;
        output = read_floats(dir + "/output.bin", out_floats);
        truth = read_floats(dir + "/truth.bin", (size_t)batch * truth_stride);
        anchors = read_floats(dir + "/anchors.bin", 2 * (size_t)a.total);
        std::vector<float> mask_values = read_floats(dir + "/mask.bin", (size_t)n_anchors);
        for (float m : mask_values) mask.push_back((int)m);
        delta.assign(out_floats, 0.f);
        results.assign(2 * DN_LOSS_BLOCKS + (size_t)batch * DN_LOSS_SUMS, -1.f);
        a.output = output.data();
        a.delta = delta.data();
        a.anchors = anchors.data();
        a.mask = mask.data();
        launch_loss(a, truth, truth_stride, batch, results);
    } else {
        fprintf(stderr, "unknown loss %s\n", kind);
        return 2;
    }
    fclose(params);
    launch(dim3(DN_LOSS_BLOCKS), DN_LOSS_THREADS,
           [&] { squares_partials_kernel(delta.data(), out_floats, results.data() + DN_LOSS_BLOCKS); });
    std::vector<float> summary(2 + DN_LOSS_SUMS);
    dn_loss_results(results.data(), batch, &summary[0], &summary[1], summary.data() + 2);
    write_floats(dir + "/delta.bin", delta);
    write_floats(dir + "/results.bin", summary);
    return 0;
}
