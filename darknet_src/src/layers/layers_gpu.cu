// The table of CUDA twins, one entry per layer kind (layer.h).
#include "../cuda_common.cuh"

#define TWIN(name) \
    void dn_##name##_forward_gpu(dn_layer *l, const dn_ctx *ctx); \
    void dn_##name##_backward_gpu(dn_layer *l, const dn_ctx *ctx);
TWIN(conv) TWIN(connected) TWIN(maxpool) TWIN(avgpool) TWIN(route) TWIN(reorg) TWIN(shortcut)
TWIN(upsample) TWIN(region) TWIN(yolo) TWIN(softmax) TWIN(dropout) TWIN(cost) TWIN(crop)
#undef TWIN

static const dn_layer_gpu_ops gpu_table[DN_LAYER_TYPE_COUNT] = {
    {DN_LAYER_CONVOLUTIONAL, dn_conv_forward_gpu, dn_conv_backward_gpu},
    {DN_LAYER_CONNECTED, dn_connected_forward_gpu, dn_connected_backward_gpu},
    {DN_LAYER_MAXPOOL, dn_maxpool_forward_gpu, dn_maxpool_backward_gpu},
    {DN_LAYER_AVGPOOL, dn_avgpool_forward_gpu, dn_avgpool_backward_gpu},
    {DN_LAYER_ROUTE, dn_route_forward_gpu, dn_route_backward_gpu},
    {DN_LAYER_REORG, dn_reorg_forward_gpu, dn_reorg_backward_gpu},
    {DN_LAYER_SHORTCUT, dn_shortcut_forward_gpu, dn_shortcut_backward_gpu},
    {DN_LAYER_UPSAMPLE, dn_upsample_forward_gpu, dn_upsample_backward_gpu},
    {DN_LAYER_REGION, dn_region_forward_gpu, dn_region_backward_gpu},
    {DN_LAYER_YOLO, dn_yolo_forward_gpu, dn_yolo_backward_gpu},
    {DN_LAYER_SOFTMAX, dn_softmax_forward_gpu, dn_softmax_backward_gpu},
    {DN_LAYER_DROPOUT, dn_dropout_forward_gpu, dn_dropout_backward_gpu},
    {DN_LAYER_COST, dn_cost_forward_gpu, dn_cost_backward_gpu},
    {DN_LAYER_CROP, dn_crop_forward_gpu, dn_crop_backward_gpu},
};

extern "C" const dn_layer_gpu_ops *dn_layer_gpu_ops_for(dn_layer_type type)
{
    for (int i = 0; i < DN_LAYER_TYPE_COUNT; i++)
        if (gpu_table[i].type == type) return &gpu_table[i];
    return NULL;
}
