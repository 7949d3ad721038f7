"""OpenMMLab glue: backbones and heads with the papers' placement of
dynamic convolutions, registered so that MMDetection and MMPose configs can
name them (``type='DynamicResNet'``, ...)."""
from . import backbones, heads  # noqa: F401
