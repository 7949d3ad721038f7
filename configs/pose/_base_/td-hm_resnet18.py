# ResNet-18 + SimpleBaseline's head ("type A" in Dynamic Convolution): three
# 4x4 stride-2 deconvs of 256 channels and a 1x1 heatmap conv, as MMPose's
# td-hm_res18. DeconvHeatmapHead is MMPose's HeatmapHead whose deconvs (as
# sub-pixel convs) and convs take a conv_cfg; static, it is that head.
_base_ = './td-hm_coco-256x192.py'
model = dict(
    backbone=dict(
        type='DynamicResNet', depth=18, out_indices=(3, ), norm_eval=False),
    head=dict(type='DeconvHeatmapHead', in_channels=512))
