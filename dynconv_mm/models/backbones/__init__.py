"""Backbones whose convolutions follow each paper's placement of dynamic
convolutions (one class per base network, the dynamic conv an option),
registered in the root ``MODELS`` registry so that MMDetection and MMPose
configs both find them (``type='DynamicResNet'``, ...)."""
from .dynamic_res_blocks import DynamicBasicBlock, DynamicBottleneck
from .dynamic_mobilenet_v2 import DynamicMobileNetV2
from .dynamic_mobilenet_v3 import DynamicMobileNetV3
from .dynamic_resnet import DynamicResNet
from .dynet_block_coefficients import (BlockFedDyNetConv2d,
                                       BlockKernelFusionCoefficients)
from .paper_presets import PAPER_BACKBONES, paper_backbone

__all__ = [
    'DynamicResNet', 'DynamicMobileNetV2', 'DynamicMobileNetV3',
    'DynamicBasicBlock', 'DynamicBottleneck',
    'BlockFedDyNetConv2d', 'BlockKernelFusionCoefficients',
    'PAPER_BACKBONES', 'paper_backbone'
]
