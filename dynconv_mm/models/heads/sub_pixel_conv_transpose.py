"""A size-doubling transposed convolution computed as four ordinary convs,
so that its kernel can be a dynamic convolution."""
import copy
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmengine.registry import MODELS
from torch import Tensor


def _phase_taps(kernel_size: int, padding: int, phase: int) -> List[int]:
    """Kernel taps that reach output phase ``phase`` (0 even, 1 odd), in
    the order of increasing input offset.

    A stride-2 transposed conv adds ``x[i] * w[k]`` to output ``o = 2 i -
    padding + k``; for ``o = 2 m + phase`` that is input ``i = m + d`` with
    ``d = (phase + padding - k) / 2``, so the taps with ``k = phase +
    padding (mod 2)`` form an ordinary conv over ``x[m + d]``.
    """
    taps = [k for k in range(kernel_size) if (k - phase - padding) % 2 == 0]
    return sorted(taps, key=lambda k: (phase + padding - k) // 2)


@MODELS.register_module()
class SubPixelConvTranspose2d(nn.Module):
    """``nn.ConvTranspose2d(C_in, C_out, k, stride=2, padding=p,
    output_padding=q)`` with ``p = (k - 1) // 2``, ``q = 2p + 2 - k``
    (the output is exactly twice the input: SimpleBaseline's deconvs, and
    mmpose's ``HeatmapHead`` table for k = 4, 3, 2), computed as its four
    stride phases ("sub-pixel convolution", Shi et al., CVPR 2016).

    Output pixel ``(2m + a, 2n + b)`` only meets the kernel taps of one
    parity; those taps form an ordinary ``ceil(k/2) x ceil(k/2)`` (or
    smaller) conv over the input. Each of the four phases is one conv built
    from ``conv_cfg`` (``nn.Conv2d`` when ``None``), and the four outputs
    are interleaved. With static convs this *is* the transposed conv: the
    same parameters (the four phase kernels partition the ``k x k`` kernel,
    :meth:`load_conv_transpose_weight`), the same multiply-adds, the same
    output (tested against ``F.conv_transpose2d``), and a checkpoint of an
    ``nn.ConvTranspose2d`` (``weight [C_in, C_out, k, k]``) loads into it.

    With a dynamic ``conv_cfg`` (e.g. ``dict(type='DynamicConv')``) each
    phase mixes its own K kernels with its own attention, computed from the
    same (padded) input, so the upsampling path is dynamic at the cost of
    the deconvolution it replaces, not of an upsample followed by a
    full-resolution conv (2.25 x the multiply-adds for a 3x3 conv).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``k >= 2`` (square).
        bias: One bias per output channel, shared by the four phases (as a
            transposed conv's).
        conv_cfg: Conv config of the phase convs; ``None``: ``nn.Conv2d``.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, 2H, 2W]``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 4,
                 bias: bool = False,
                 conv_cfg: Optional[dict] = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value, low in (('in_channels', in_channels, 1),
                                ('out_channels', out_channels, 1),
                                ('kernel_size', kernel_size, 2)):
            if not isinstance(value, int) or isinstance(value, bool) \
                    or value < low:
                raise ValueError(f'{name}: option {key}={value!r} is '
                                 f'invalid: it must be an integer >= {low}')
        if conv_cfg is not None and not (isinstance(conv_cfg, dict)
                                         and 'type' in conv_cfg):
            raise ValueError(f'{name}: option conv_cfg={conv_cfg!r} is '
                             'invalid: it must be a conv config with a type '
                             'or None')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.padding = (kernel_size - 1) // 2
        self.output_padding = 2 * self.padding + 2 - kernel_size
        self.conv_cfg = copy.deepcopy(conv_cfg)
        self.taps = tuple(
            _phase_taps(kernel_size, self.padding, a) for a in (0, 1))
        # Input offset of each phase's first tap, and the padding all need.
        self.first_offset = tuple((a + self.padding - taps[0]) // 2
                                  for a, taps in enumerate(self.taps))
        self.pad = max(
            max(abs((a + self.padding - k) // 2) for k in taps)
            for a, taps in enumerate(self.taps))
        self.phases = nn.ModuleList(
            build_conv_layer(
                self.conv_cfg,
                in_channels,
                out_channels,
                (len(self.taps[a]), len(self.taps[b])),
                stride=1,
                padding=0,
                bias=False) for a in (0, 1) for b in (0, 1))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter('bias', None)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__}: expected input [B, '
                f'{self.in_channels}, H, W], got {list(x.shape)}')
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (self.pad, ) * 4)
        outs = []
        for index, conv in enumerate(self.phases):
            a, b = divmod(index, 2)
            top = self.pad + self.first_offset[a]
            left = self.pad + self.first_offset[b]
            window = padded[:, :, top:top + height + len(self.taps[a]) - 1,
                            left:left + width + len(self.taps[b]) - 1]
            outs.append(conv(window))
        # outs[2a + b][..., m, n] is output pixel (2m + a, 2n + b).
        rows = [torch.stack(outs[2 * a:2 * a + 2], dim=-1) for a in (0, 1)]
        out = torch.stack(rows, dim=3).reshape(x.shape[0], self.out_channels,
                                               2 * height, 2 * width)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def phase_kernels(self, weight: Tensor) -> Tuple[Tensor, ...]:
        """Split a transposed conv's ``weight [C_in, C_out, k, k]`` into the
        four phase kernels ``[C_out, C_in, ka, kb]`` (phase order 00, 01,
        10, 11)."""
        expected = (self.in_channels, self.out_channels, self.kernel_size,
                    self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f'{type(self).__name__}: a transposed conv '
                             f'weight of shape {list(expected)} is needed, '
                             f'got {list(weight.shape)}')
        kernels = []
        for a in (0, 1):
            for b in (0, 1):
                rows = weight[:, :, list(self.taps[a])]
                kernels.append(rows[:, :, :, list(self.taps[b])].transpose(
                    0, 1).contiguous())
        return tuple(kernels)

    @torch.no_grad()
    def load_conv_transpose_weight(self, weight: Tensor) -> None:
        """Copy a transposed conv's ``weight`` into the (static) phases."""
        for conv, kernel in zip(self.phases, self.phase_kernels(weight)):
            if type(conv) is not nn.Conv2d:
                raise ValueError(
                    f'{type(self).__name__}: a transposed conv weight loads '
                    f'into static phases only, not {type(conv).__name__}')
            conv.weight.copy_(kernel)

    def _load_from_state_dict(self, state_dict, prefix, *args,
                              **kwargs) -> None:
        # A checkpoint of the nn.ConvTranspose2d this replaces (mmpose's
        # HeatmapHead): split its weight into the phase kernels.
        key = prefix + 'weight'
        if key in state_dict and all(
                type(conv) is nn.Conv2d for conv in self.phases):
            for index, kernel in enumerate(
                    self.phase_kernels(state_dict.pop(key))):
                state_dict[f'{prefix}phases.{index}.weight'] = kernel
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size='
                f'{self.kernel_size}, stride=2, padding={self.padding}, '
                f'output_padding={self.output_padding}, '
                f'bias={self.bias is not None}')
