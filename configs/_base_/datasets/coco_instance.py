# Real COCO boxes and masks (MMDetection's own dataset config); see
# coco_detection.py for the two extra variables.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
num_classes = 80
imagenet_init = dict(
    resnet50=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
    mobilenet_v2=dict(
        type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
