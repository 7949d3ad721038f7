"""Layers floor: the papers' modules, registered in MMCV's conv registry
(the root ``mmengine.registry.MODELS``) as ``DynamicConv``, ``ODConv`` and
``DyNetConv``."""
from .attention import AttentionTrunk, DynamicAttention, hidden_channels
from .dynamic_conv import DynamicConv2d, KernelAttention
from .dynamic_conv_base import DynamicConv2dBase
from .dynet_conv import DyNetConv2d, KernelFusionCoefficients
from .odconv import ODConv2d, OmniDimensionalAttention

__all__ = [
    'AttentionTrunk', 'DynamicAttention', 'hidden_channels',
    'DynamicConv2d', 'KernelAttention', 'DynamicConv2dBase', 'DyNetConv2d',
    'KernelFusionCoefficients', 'ODConv2d', 'OmniDimensionalAttention'
]
