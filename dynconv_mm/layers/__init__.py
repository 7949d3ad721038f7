"""Layers floor: the papers' modules, registered in MMCV's conv registry
(the root ``mmengine.registry.MODELS``) as ``DynamicConv``, ``ODConv`` and
``DyNetConv``."""
from .attention import (AttentionTrunk, DynamicAttention, concat_head_shapes,
                        concat_head_tensors, hidden_channels,
                        merge_model_per_head_entries)
from .dynamic_conv import DynamicConv2d, KernelAttention
from .dynamic_conv_base import DynamicConv2dBase
from .dynet_conv import DyNetConv2d, KernelFusionCoefficients
from .odconv import ODConv2d, OmniDimensionalAttention

__all__ = [
    'AttentionTrunk', 'DynamicAttention', 'concat_head_shapes',
    'concat_head_tensors', 'hidden_channels', 'merge_model_per_head_entries',
    'DynamicConv2d', 'KernelAttention', 'DynamicConv2dBase', 'DyNetConv2d',
    'KernelFusionCoefficients', 'ODConv2d', 'OmniDimensionalAttention'
]
