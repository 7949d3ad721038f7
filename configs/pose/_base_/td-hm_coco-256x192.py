# What every top-down heatmap config here shares: MMPose's runtime, the
# dataset (COCO keypoints, 256x192 crops; DYNCONV_MM_DATA=synthetic_coco
# switches to the synthetic keypoint dataset with ground-truth boxes), and
# SimpleBaseline's 210-epoch recipe as Dynamic Convolution (Chen et al.,
# CVPR 2020) reports it for COCO keypoints: Adam, lr 1e-3 divided by 10
# at epochs 170 and 200, flip test. MMPose's own configs run the same
# schedule at lr 5e-4 for 8 x 64 images; here 4 x 32 = 128 images per
# step as in SimpleBaseline, whose recipe this lr belongs to
# (`--auto-scale-lr` rescales it for other batch sizes).
#
# Backbones are trained from scratch: there are no ImageNet weights for
# the dynamic ones. Add model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint=...) where you have them.
_base_ = [
    'mmpose::_base_/default_runtime.py',
    '../../_base_/datasets/{{$DYNCONV_MM_DATA:coco}}_keypoints.py',
]
custom_imports = dict(imports=['dynconv_mm'], allow_failed_imports=False)

train_cfg = dict(max_epochs=210, val_interval=10)
optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-3))
param_scheduler = [
    dict(
        type='LinearLR', begin=0, end=500, start_factor=0.001,
        by_epoch=False),  # warm-up, as MMPose's recipe
    dict(
        type='MultiStepLR',
        begin=0,
        end=210,
        milestones=[170, 200],
        gamma=0.1,
        by_epoch=True)
]
auto_scale_lr = dict(base_batch_size=128)
default_hooks = dict(checkpoint=dict(save_best='coco/AP', rule='greater'))

model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    head=dict(
        out_channels=17,
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder={{_base_.codec}}),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))
