# Faster R-CNN + FPN with a ResNet-50 whose residual blocks take a dynamic
# conv (none by default: the static baseline), COCO 1x schedule, as in the ODConv
# paper's detection table: ImageNet-pretrained backbone, frozen first
# stage, BatchNorm in eval mode (attention BNs included).
#
# Dataset switch: DYNCONV_MM_DATA=synthetic_coco runs every config that
# inherits this on the offline synthetic dataset (4 classes, small images,
# no ImageNet download); unset, it is real COCO under data/coco/.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/datasets/{{$DYNCONV_MM_DATA:coco}}_detection.py',
]
custom_imports = dict(imports=['dynconv_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='DynamicResNet',
        init_cfg={{_base_.imagenet_init.resnet50}}),
    roi_head=dict(bbox_head=dict(num_classes={{_base_.num_classes}})))
