# The synthetic COCO-format detection dataset written by
# tools/generate_synthetic_coco.py, at a small image scale so CPU training
# is fast. Same layout as real COCO: switching to `data/coco/` and mmdet's
# `coco_detection.py` changes nothing else.
dataset_type = 'CocoDataset'
data_root = 'data/synthetic_coco/'
# = dynconv_mm.datasets.SYNTHETIC_COCO_METAINFO (checked by a test)
metainfo = dict(
    classes=('person', 'rectangle', 'ellipse', 'triangle'),
    palette=[(220, 20, 60), (0, 130, 230), (30, 170, 60), (250, 170, 30)])
image_scale = (256, 192)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# What the detection configs take from the dataset choice (see
# coco_detection.py): 4 classes, and no ImageNet weights, so that the
# synthetic runs need no download (backbones start from scratch).
num_classes = len(metainfo['classes'])
imagenet_init = dict(resnet50=None, mobilenet_v2=None)
