"""What the three papers' layers share: the geometry of an ``nn.Conv2d``,
a bank of ``K`` kernels, an attention module, and the temperature."""
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..execution import ConvAttentions, dynamic_conv2d
from .attention import DynamicAttention, hidden_channels
from .options import check_int, reject_unknown_options

IntPair = Union[int, Tuple[int, int]]


class DynamicConv2dBase(nn.Module):
    """A convolution whose kernel is formed per sample from a bank.

    It carries the attributes mmcv's ``ConvModule`` and mmdet/mmpose read from
    a conv (``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``transposed``,
    ``output_padding``, ``weight``, ``bias``), but it is deliberately not an
    ``nn.Conv2d`` subclass: OpenMMLab's Kaiming ``init_cfg`` for
    ``Conv2d`` would re-initialise the 5-D bank with the wrong fan.

    Subclasses set :attr:`layer_type` (the registry name) and the paper's
    option defaults, and build the paper's attention in
    :meth:`build_attention`; the options are documented on each subclass.

    Shapes: ``weight`` ``[K, C_out, C_in/groups, kh, kw]``; ``bias``
    ``[K, C_out]`` (mixed like the kernels) or ``None``.
    """

    layer_type = 'DynamicConv2dBase'
    # Per-paper defaults of the options left as None in __init__.
    default_num_kernels: int = 4
    default_reduction: float = 4
    default_min_hidden_channels: int = 4

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair,
                 stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 num_kernels: Optional[int] = None,
                 reduction: Optional[float] = None,
                 min_hidden_channels: Optional[int] = None,
                 temperature: float = 1.0,
                 attention_norm_cfg: Optional[dict] = None,
                 **unknown_options: Any) -> None:
        super().__init__()
        owner = self.layer_type
        reject_unknown_options(owner, type(self), unknown_options)
        if num_kernels is None:
            num_kernels = self.default_num_kernels
        check_int(owner, 'in_channels', in_channels, 1)
        check_int(owner, 'out_channels', out_channels, 1)
        check_int(owner, 'groups', groups, 1)
        check_int(owner, 'num_kernels', num_kernels, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f'{owner}: option groups={groups} is invalid: it must divide '
                f'in_channels={in_channels} and out_channels={out_channels}')
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        for name in ('kernel_size', 'stride', 'dilation'):
            for value in getattr(self, name):
                check_int(owner, name, value, 1)
        if isinstance(padding, str):
            if padding not in ('same', 'valid'):
                raise ValueError(f"{owner}: option padding={padding!r} is "
                                 "invalid: use an int, a pair, 'same' or "
                                 "'valid'")
            if padding == 'same' and self.stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' needs stride 1, "
                                 f'got stride={stride!r}')
            self.padding = padding
        else:
            self.padding = _pair(padding)
            for value in self.padding:
                check_int(owner, 'padding', value, 0)
        if padding_mode != 'zeros':
            # ConvModule pads explicitly for other modes before the conv.
            raise ValueError(f'{owner}: option padding_mode={padding_mode!r} '
                             "is not supported; only 'zeros'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.padding_mode = padding_mode
        self.num_kernels = num_kernels
        self.transposed = False
        self.output_padding = (0, 0)
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups,
                        *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_channels))
        else:
            self.register_parameter('bias', None)
        self.attention = self.build_attention(
            hidden_channels(
                owner, in_channels,
                self.default_reduction if reduction is None else reduction,
                self.default_min_hidden_channels
                if min_hidden_channels is None else min_hidden_channels),
            temperature, attention_norm_cfg)
        self._reset_kernels()  # the attention initialised itself

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> DynamicAttention:
        """The paper's attention for this layer's geometry."""
        raise NotImplementedError

    def _reset_kernels(self) -> None:
        """Each kernel Kaiming normal (fan_out), as the ODConv authors and
        mmdet's conv init do; zero biases."""
        for kernel in self.weight.data:
            nn.init.kaiming_normal_(kernel, mode='fan_out',
                                    nonlinearity='relu')
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def reset_parameters(self) -> None:
        """Re-initialise the kernel bank and the attention."""
        self._reset_kernels()
        self.attention.reset_parameters()

    def init_weights(self) -> None:
        # OpenMMLab calls init_weights() on children; ConvModule would
        # otherwise Kaiming-initialise `weight` as if it were 4-D.
        self.reset_parameters()

    @property
    def temperature(self) -> float:
        """The attention's softmax/sigmoid temperature ``tau``."""
        return float(self.attention.temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.attention.set_temperature(value)

    def execution_method(self) -> str:
        """Which formulation of :func:`dynamic_conv2d` to run."""
        return 'auto'

    def forward(self,
                x: Tensor,
                attentions: Optional[ConvAttentions] = None) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H_out, W_out]``.

        ``attentions`` may be given by a module that owns the attention for
        several convs; by default the layer computes its own from ``x``.
        """
        if attentions is None:
            attentions = self.attention(x)
        return dynamic_conv2d(x, self.weight, attentions, self.bias,
                              self.stride, self.padding, self.dilation,
                              self.groups, self.execution_method())

    def extra_repr(self) -> str:
        text = (f'{self.in_channels}, {self.out_channels}, '
                f'kernel_size={self.kernel_size}, stride={self.stride}, '
                f'num_kernels={self.num_kernels}')
        if self.padding != (0, 0):
            text += f', padding={self.padding}'
        if self.dilation != (1, 1):
            text += f', dilation={self.dilation}'
        if self.groups != 1:
            text += f', groups={self.groups}'
        if self.bias is None:
            text += ', bias=False'
        return text
