/* The table of layer kinds: one entry per section name, no if/else chain. */
#include <string.h>

#include "../layer.h"

extern const dn_layer_ops dn_convolutional_ops, dn_connected_ops, dn_maxpool_ops, dn_avgpool_ops,
    dn_route_ops, dn_reorg_ops, dn_shortcut_ops, dn_upsample_ops, dn_region_ops, dn_yolo_ops,
    dn_softmax_ops, dn_dropout_ops, dn_cost_ops, dn_crop_ops;

static const dn_layer_ops *const layer_table[] = {
    &dn_convolutional_ops, &dn_connected_ops, &dn_maxpool_ops, &dn_avgpool_ops,
    &dn_route_ops,         &dn_reorg_ops,     &dn_shortcut_ops, &dn_upsample_ops,
    &dn_region_ops,        &dn_yolo_ops,      &dn_softmax_ops,  &dn_dropout_ops,
    &dn_cost_ops,          &dn_crop_ops,
};

const dn_layer_ops *dn_layer_ops_for(const char *section_name)
{
    for (size_t i = 0; i < sizeof layer_table / sizeof layer_table[0]; i++) {
        const dn_layer_ops *ops = layer_table[i];
        if (strcmp(section_name, ops->name) == 0) return ops;
        if (ops->alias && strcmp(section_name, ops->alias) == 0) return ops;
    }
    return NULL;
}

/* Sections darknet knows that pydarknet does not implement. */
static const struct {
    const char *name;
    const char *what;
} unsupported[] = {
    {"local", "locally connected layer"},
    {"detection", "YOLOv1 detection layer"},
    {"rnn", "recurrent layer"},
    {"gru", "GRU layer"},
    {"lstm", "LSTM layer"},
    {"crnn", "convolutional recurrent layer"},
    {"deconvolutional", "deconvolutional layer"},
    {"deconv", "deconvolutional layer"},
    {"batchnorm", "stand-alone batch-norm layer"},
    {"activation", "stand-alone activation layer"},
    {"logistic", "logistic loss layer"},
    {"l2norm", "L2-normalisation layer"},
    {"normalization", "local response normalisation layer"},
    {"lrn", "local response normalisation layer"},
    {"iseg", "instance segmentation layer"},
    {"xor", "xor layer"},
};

const char *dn_layer_unsupported_reason(const char *section_name)
{
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (strcmp(section_name, unsupported[i].name) == 0) return unsupported[i].what;
    return NULL;
}
