# MobileNetV2 x1.0 + the light head of upsampling and inverted residual
# blocks ("type B" in Dynamic Convolution, for its mobile backbones).
_base_ = './td-hm_coco-256x192.py'
model = dict(
    backbone=dict(
        type='DynamicMobileNetV2', widen_factor=1.0, out_indices=(7, )),
    head=dict(
        type='InvertedResidualHeatmapHead',
        in_channels=1280,
        stage_channels=(64, 32, 16)))
