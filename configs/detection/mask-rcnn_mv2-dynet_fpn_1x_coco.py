# DyNet convs (g=6) in MobileNetV2's ODConv placement: beyond the DyNet
# paper (its Dy-mobile is another network). Starts from ImageNet MobileNetV2
# through the static-to-dynamic initialiser, like the other rows.
_base_ = './_base_/mask-rcnn_mv2_fpn_1x.py'
model = dict(
    backbone=dict(dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=6)))
