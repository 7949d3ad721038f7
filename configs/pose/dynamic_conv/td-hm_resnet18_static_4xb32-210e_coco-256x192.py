# ResNet-18, static backbone and head: the baseline:
# one of the four settings of Dynamic Convolution's keypoint study
# (Chen et al., CVPR 2020) for this backbone.
_base_ = '../_base_/td-hm_resnet18.py'
