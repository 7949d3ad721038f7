# ResNet-50 + SimpleBaseline's head, as MMPose's td-hm_res50.
_base_ = './td-hm_coco-256x192.py'
model = dict(
    backbone=dict(
        type='DynamicResNet', depth=50, out_indices=(3, ), norm_eval=False),
    head=dict(type='DeconvHeatmapHead', in_channels=2048))
