# DyNet's Dy-ResNet-50 (g=6, one coefficient module per block, every stage
# half as wide): beyond the DyNet paper, which has no detection results.
# No ImageNet weights fit its halved widths, so it trains from scratch:
# nothing frozen, BatchNorm trained (SyncBN across GPUs; one process falls
# back to BN). Give a Dy-ResNet-50 ImageNet checkpoint of your own with
# --cfg-options model.backbone.init_cfg.type=Pretrained
#               model.backbone.init_cfg.checkpoint=PATH
_base_ = './_base_/faster-rcnn_r50_fpn_1x.py'
model = dict(
    backbone=dict(
        stem_channels=64,
        base_channels=32,
        dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=6),
        dynet_shared_coefficients=True,
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512, 1024]))
