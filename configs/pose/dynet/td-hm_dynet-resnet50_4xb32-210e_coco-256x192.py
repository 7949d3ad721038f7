# DyNet's Dy-ResNet50 (Zhang et al. 2020: every stage half as wide, the
# convs of each block fused from g = 6 fixed kernels by one coefficient
# module per block) with SimpleBaseline's head. DyNet reports no keypoint
# (or detection) results: a variant beyond the paper. Its coefficients are
# sigmoids without temperature, so no annealing hook. The last stage has
# 1024 channels (half of ResNet-50's 2048).
_base_ = '../_base_/td-hm_resnet50.py'
model = dict(
    backbone=dict(
        stem_channels=64,
        base_channels=32,
        dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=6),
        dynet_shared_coefficients=True),
    head=dict(in_channels=1024))
