# The demo: Faster R-CNN with a slim ResNet-18 + FPN whose convolutions are
# all ODConv (4x), trained from scratch on the synthetic COCO-format dataset
# (tools/generate_synthetic_coco.py) on CPU. Widths, proposal counts and the
# image scale are cut so that it trains in minutes on 2 cores; the structure
# is MMDetection's own Faster R-CNN.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/datasets/synthetic_coco_detection.py',
]
custom_imports = dict(imports=['dynconv_mm'], allow_failed_imports=False)

base_channels = 16  # ResNet-18 stages: 16, 32, 64, 128 channels
fpn_channels = 64
model = dict(
    backbone=dict(
        depth=18,
        base_channels=base_channels,
        conv_cfg=dict(type='ODConv'),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        frozen_stages=-1,
        init_cfg=None),
    neck=dict(
        in_channels=[base_channels * 2**i for i in range(4)],
        out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(
            in_channels=fpn_channels, fc_out_channels=256, num_classes=4)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=600, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))

# Dynamic convolution trains with its attention temperature annealed from
# 30 to 1 (Chen et al. 2020; Li et al. 2022), here over the first 4 epochs.
custom_hooks = [dict(type='TemperatureAnnealingHook', start=30., end=1.,
                     epochs=4)]

max_epochs = 18
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[14, 17], gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs))
# 4 images per batch on one process (the mmdet default assumes 8 GPUs x 2).
auto_scale_lr = dict(enable=False, base_batch_size=4)
randomness = dict(seed=0)
