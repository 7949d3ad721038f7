# The ResNet-50 version with MobileNetV2 1.0 instead (the ODConv paper's
# mobile detection rows): FPN takes torchvision feature indices 3, 6, 13,
# 18 (mmdet stages 1, 2, 4, 7), channels 24, 32, 96, 1280; its frozen
# first stage is torchvision features 0-3, mmdet's stem + layer1 + layer2.
_base_ = './faster-rcnn_r50_fpn_1x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='DynamicMobileNetV2',
        widen_factor=1.0,
        out_indices=(1, 2, 4, 7),
        frozen_stages=2,
        norm_eval=True,
        init_cfg={{_base_.imagenet_init.mobilenet_v2}}),
    neck=dict(in_channels=[24, 32, 96, 1280]))
