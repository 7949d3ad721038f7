# Dynamic Convolution (Chen et al.), K=4, in the paper's placement.
_base_ = './_base_/mask-rcnn_mv2_fpn_1x.py'
model = dict(
    backbone=dict(dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=4)))
