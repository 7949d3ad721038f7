"""Dynamic Convolution (Chen et al., "Dynamic Convolution: Attention over
Convolution Kernels", CVPR 2020)."""
from typing import Dict, Optional

from mmengine.registry import MODELS
from torch import Tensor

from ..execution import ConvAttentions
from .attention import DynamicAttention
from .dynamic_conv_base import DynamicConv2dBase


class KernelAttention(DynamicAttention):
    """Softmax attention over ``K`` kernels (Chen et al. 2020).

    ``[B, C_in, H, W]`` -> global average pool -> FC -> ReLU -> FC ->
    ``softmax(z / tau)`` -> ``kernel`` ``[B, K]`` (each row sums to 1).
    """

    def __init__(self,
                 owner: str,
                 in_channels: int,
                 num_kernels: int,
                 hidden_channels: int,
                 temperature: float = 1.0,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__(owner, in_channels, hidden_channels,
                         dict(kernel=num_kernels), temperature, norm_cfg)

    def head_activation(self, name: str) -> str:
        return 'softmax'

    def arrange(self, activated: Dict[str, Tensor]) -> ConvAttentions:
        return ConvAttentions(kernel=activated['kernel'])


@MODELS.register_module('DynamicConv')
class DynamicConv2d(DynamicConv2dBase):
    """Dynamic convolution: ``K`` kernels and biases mixed per sample.

    ``W(x) = sum_k pi_k(x) W_k``, ``b(x) = sum_k pi_k(x) b_k`` with
    ``pi = softmax(z / tau)`` from :class:`KernelAttention` (Chen et al.,
    CVPR 2020). Used like ``nn.Conv2d``; in a config:
    ``conv_cfg=dict(type='DynamicConv', num_kernels=4)``.

    Shapes: input ``[B, C_in, H, W]``, output ``[B, C_out, H_out, W_out]``;
    ``weight`` ``[K, C_out, C_in/groups, kh, kw]``, ``bias`` ``[K, C_out]``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias, padding_mode: as in ``nn.Conv2d`` (``padding_mode``
            'zeros' only).
        num_kernels: ``K``, the paper's 4.
        reduction: attention MLP width is ``C_in / reduction`` (paper: 4) ...
        min_hidden_channels: ... but at least this many (ours: 4, so a
            3-channel stem still gets a usable attention).
        temperature: initial softmax temperature ``tau`` (the paper anneals
            30 -> 1 with ``TemperatureAnnealingHook``).
        attention_norm_cfg: norm after the first FC; ``None`` (the paper's
            FC -> ReLU).
        init_cfg: OpenMMLab init config that ``init_weights()`` applies
            (e.g. ``Pretrained``); without one the layer keeps its
            construction-time init.
    """

    layer_type = 'DynamicConv'
    default_num_kernels = 4
    default_reduction = 4
    default_min_hidden_channels = 4

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> KernelAttention:
        return KernelAttention(self.layer_type, self.in_channels,
                               self.num_kernels, hidden_channels, temperature,
                               norm_cfg)
