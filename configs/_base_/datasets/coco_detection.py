# Real COCO boxes (MMDetection's own dataset config, data/coco/ layout) and
# what the detection configs take from the dataset choice: the class count
# and the ImageNet weights their backbones start from.
_base_ = 'mmdet::_base_/datasets/coco_detection.py'
num_classes = 80
imagenet_init = dict(
    resnet50=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
    mobilenet_v2=dict(
        type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
