"""DyNet (Zhang et al., "DyNet: Dynamic Convolution for Accelerating
Convolutional Neural Networks", 2020)."""
from typing import Dict, Optional

from mmengine.registry import MODELS
from torch import Tensor

from ..execution import ConvAttentions
from .attention import DynamicAttention
from .dynamic_conv_base import DynamicConv2dBase


class KernelFusionCoefficients(DynamicAttention):
    """DyNet's coefficient prediction: one sigmoid coefficient per output
    channel and fixed kernel.

    ``[B, C_in, H, W]`` -> global average pool -> FC -> ReLU -> FC ->
    ``sigmoid(z / tau)`` -> ``kernel`` ``[B, C_out, g]`` (two FCs with hidden
    ``C_in/4`` as in Dy-ResNet; the paper has no temperature, i.e. tau = 1).
    """

    def __init__(self,
                 owner: str,
                 in_channels: int,
                 out_channels: int,
                 num_kernels: int,
                 hidden_channels: int,
                 temperature: float = 1.0,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__(owner, in_channels, hidden_channels,
                         dict(kernel=out_channels * num_kernels),
                         temperature, norm_cfg)
        self.out_channels = out_channels
        self.num_kernels = num_kernels

    def head_activation(self, name: str) -> str:
        return 'sigmoid'

    def arrange(self, activated: Dict[str, Tensor]) -> ConvAttentions:
        return ConvAttentions(kernel=activated['kernel'].view(
            -1, self.out_channels, self.num_kernels))


@MODELS.register_module('DyNetConv')
class DyNetConv2d(DynamicConv2dBase):
    """DyNet dynamic convolution (Zhang et al. 2020).

    Holds ``C_out * g`` fixed kernels; output channel ``o`` of sample ``b``
    uses ``w_bo = sum_i eta_boi * w_io`` with coefficients from
    :class:`KernelFusionCoefficients`. The paper fuses feature maps in
    training (one ``g``-times wide static conv, outputs weighted and summed:
    ``execution='kernel_branches'``) and kernels per sample at inference
    (one conv's FLOPs: ``'aggregated'``/``'batch_folded'``); both compute
    the same function, and ``execution='auto'`` picks whichever is faster
    for the shape, device and grad mode. A bias is fused with the same
    coefficients.

    Shapes: input ``[B, C_in, H, W]``, output ``[B, C_out, H_out, W_out]``;
    ``weight`` ``[g, C_out, C_in/groups, kh, kw]``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias, padding_mode: as in ``nn.Conv2d`` (``padding_mode``
            'zeros' only).
        num_kernels: ``g``, fixed kernels per output kernel (paper: 6).
        reduction: coefficient MLP width ``C_in / reduction`` (Dy-ResNet:
            4) ...
        min_hidden_channels: ... but at least this many (ours: 4).
        temperature: divides the coefficient logits (paper: none, i.e. 1).
        attention_norm_cfg: norm after the first FC (paper: none).
        init_cfg: OpenMMLab init config that ``init_weights()`` applies
            (e.g. ``Pretrained``); without one the layer keeps its
            construction-time init.
    """

    layer_type = 'DyNetConv'
    default_num_kernels = 6
    default_reduction = 4
    default_min_hidden_channels = 4

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> KernelFusionCoefficients:
        return KernelFusionCoefficients(self.layer_type, self.in_channels,
                                        self.out_channels, self.num_kernels,
                                        hidden_channels, temperature,
                                        norm_cfg)
