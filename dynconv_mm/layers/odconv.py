"""Omni-Dimensional Dynamic Convolution (Li, Zhou, Yao, ICLR 2022)."""
from typing import Dict, Optional, Tuple

from mmengine.registry import MODELS
from torch import Tensor

from ..execution import ConvAttentions
from .attention import DynamicAttention
from .dynamic_conv_base import DynamicConv2dBase


class OmniDimensionalAttention(DynamicAttention):
    """ODConv's four attentions from one pooled trunk (Li et al. 2022).

    ``[B, C_in, H, W]`` -> global average pool -> FC -> [norm] -> ReLU, then
    heads whose logits are divided by ``tau``:

    * ``input`` (channel attention, sigmoid) ``[B, C_in]`` -- always;
    * ``output`` (filter attention, sigmoid) ``[B, C_out]`` -- skipped for a
      depthwise conv (``C_in == groups == C_out``);
    * ``spatial`` (sigmoid) ``[B, kh, kw]`` -- skipped for a 1x1 kernel;
    * ``kernel`` (softmax) ``[B, K]`` -- skipped when ``K == 1``.
    """

    def __init__(self,
                 owner: str,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: Tuple[int, int],
                 groups: int,
                 num_kernels: int,
                 hidden_channels: int,
                 temperature: float = 1.0,
                 norm_cfg: Optional[dict] = None) -> None:
        head_sizes = dict(input=in_channels)
        if not in_channels == groups == out_channels:
            head_sizes['output'] = out_channels
        if kernel_size != (1, 1):
            head_sizes['spatial'] = kernel_size[0] * kernel_size[1]
        if num_kernels > 1:
            head_sizes['kernel'] = num_kernels
        super().__init__(owner, in_channels, hidden_channels, head_sizes,
                         temperature, norm_cfg)
        self.kernel_size = kernel_size

    def head_activation(self, name: str) -> str:
        return 'softmax' if name == 'kernel' else 'sigmoid'

    def arrange(self, activated: Dict[str, Tensor]) -> ConvAttentions:
        spatial = activated.get('spatial')
        return ConvAttentions(
            kernel=activated.get('kernel'),
            spatial=None if spatial is None else spatial.view(
                -1, *self.kernel_size),
            input=activated['input'],
            output=activated.get('output'))


@MODELS.register_module('ODConv')
class ODConv2d(DynamicConv2dBase):
    """Omni-dimensional dynamic convolution (Li, Zhou, Yao, ICLR 2022).

    ``y = a_f * ((sum_k a_wk * a_s * W_k) conv (a_c * x))`` with the four
    attentions of :class:`OmniDimensionalAttention`; the channel attention
    scales the input and the filter attention the output, which is
    equivalent to scaling the kernel and cheaper. ``num_kernels=1`` is the
    paper's "ODConv 1x", 4 its "4x". A bias, if asked for, is a bank of
    ``K`` biases mixed by the kernel attention and added last.

    Shapes: input ``[B, C_in, H, W]``, output ``[B, C_out, H_out, W_out]``;
    ``weight`` ``[K, C_out, C_in/groups, kh, kw]``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias, padding_mode: as in ``nn.Conv2d`` (``padding_mode``
            'zeros' only).
        num_kernels: ``K`` (authors' default 4).
        reduction: attention width ``C_in / reduction`` (authors: 1/16, i.e.
            16 here) ...
        min_hidden_channels: ... but at least this many (authors: 16).
        temperature: initial ``tau`` (ImageNet training anneals 30 -> 1;
            detection fine-tuning runs at 1).
        attention_norm_cfg: norm after the trunk FC. The authors use
            BatchNorm; we default to ``None`` (FC with bias) because BN over
            per-image pooled vectors cannot train on a batch of 1 and
            degenerates at the 1-2 images per GPU of detection training
            (two values per channel normalise to +-1). Pass
            ``dict(type='BN')`` for the authors' exact layer.
        init_cfg: OpenMMLab init config that ``init_weights()`` applies
            (e.g. ``Pretrained``); without one the layer keeps its
            construction-time init.
    """

    layer_type = 'ODConv'
    default_num_kernels = 4
    default_reduction = 16
    default_min_hidden_channels = 16

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> OmniDimensionalAttention:
        return OmniDimensionalAttention(self.layer_type, self.in_channels,
                                        self.out_channels, self.kernel_size,
                                        self.groups, self.num_kernels,
                                        hidden_channels, temperature,
                                        norm_cfg)
