# ODConv 1x (K=1), the authors' attention (BN after its first FC).
_base_ = './_base_/mask-rcnn_mv2_fpn_1x.py'
model = dict(
    backbone=dict(
        dynamic_conv_cfg=dict(
            type='ODConv',
            num_kernels=1,
            attention_norm_cfg=dict(type='BN'))))
