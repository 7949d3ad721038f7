# MobileNetV3-Small, dynamic backbone, static head:
# one of the four settings of Dynamic Convolution's keypoint study
# (Chen et al., CVPR 2020) for this backbone.
_base_ = '../_base_/td-hm_mobilenetv3-small.py'
# K = 4 kernels, as in the paper; placement: the backbone's and the
# head's (see DynamicResNet / DynamicMobileNetV2 / DynamicMobileNetV3
# and the heads' docstrings).
dynamic_conv = dict(type='DynamicConv', num_kernels=4)
model = dict(backbone=dict(dynamic_conv_cfg=dynamic_conv))
custom_hooks = [
    dict(type='SyncBuffersHook'),
    # The paper's schedule (ImageNet): temperature 30 -> 1 over 10 epochs.
    dict(type='TemperatureAnnealingHook', start=30.0, end=1.0, epochs=10)
]
