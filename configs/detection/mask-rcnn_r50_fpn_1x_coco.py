# Static baseline of the ODConv paper's detection table.
_base_ = './_base_/mask-rcnn_r50_fpn_1x.py'
