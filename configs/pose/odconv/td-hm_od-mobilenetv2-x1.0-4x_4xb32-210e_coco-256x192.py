# ODConv (Li, Zhou, Yao, ICLR 2022) 4x in MobileNetV2 x1.0 and in the light
# inverted-residual head: the ODConv paper has no keypoint results; this
# applies its MobileNetV2 placement (expansion, depthwise, projection and
# the last 1x1 dynamic, the stem static) to the backbone and, like
# Dynamic Convolution's "type B" setting, to the head's 1x1 and depthwise
# convs. The authors' attention (BatchNorm after the first FC) and their
# temperature schedule.
_base_ = '../_base_/td-hm_mobilenetv2-x1.0.py'
odconv = dict(type='ODConv', num_kernels=4, attention_norm_cfg=dict(type='BN'))
model = dict(
    backbone=dict(dynamic_conv_cfg=odconv), head=dict(conv_cfg=odconv))
# The attention's BatchNorm normalises one pooled vector per image: a last
# batch of one image cannot train it, so the epoch's remainder is dropped.
train_dataloader = dict(drop_last=True)
custom_hooks = [
    dict(type='SyncBuffersHook'),
    # ODConv's ImageNet schedule: temperature 30 -> 1 over 10 epochs.
    dict(type='TemperatureAnnealingHook', start=30.0, end=1.0, epochs=10)
]
