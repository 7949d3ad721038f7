# MobileNetV3-Small + the light head of upsampling and inverted residual
# blocks ("type B" in Dynamic Convolution, for its mobile backbones).
_base_ = './td-hm_coco-256x192.py'
model = dict(
    backbone=dict(type='DynamicMobileNetV3', arch='small', out_indices=(-1, )),
    head=dict(
        type='InvertedResidualHeatmapHead',
        in_channels=576,
        stage_channels=(64, 32, 16)))
