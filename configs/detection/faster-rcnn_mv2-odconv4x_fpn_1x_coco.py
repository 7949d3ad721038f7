# ODConv 4x (K=4), the authors' attention (BN after its first FC).
_base_ = './_base_/faster-rcnn_mv2_fpn_1x.py'
model = dict(
    backbone=dict(
        dynamic_conv_cfg=dict(
            type='ODConv',
            num_kernels=4,
            attention_norm_cfg=dict(type='BN'))))
