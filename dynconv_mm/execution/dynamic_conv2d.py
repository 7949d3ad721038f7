"""Convolution with per-sample kernels, as plain functions on tensors.

All three papers' layers reduce to one computation. With a bank of ``K``
static kernels ``W_k`` of shape ``[O, I/groups, kh, kw]`` and, per sample
``b``, optional attentions:

* ``kernel``  ``a``: ``[B, K]`` (one weight per kernel, DynamicConv/ODConv) or
  ``[B, O, K]`` (one weight per output channel and kernel, DyNet);
* ``spatial`` ``s``: ``[B, kh, kw]`` (ODConv);
* ``input``   ``c``: ``[B, C_in]`` (ODConv channel attention);
* ``output``  ``f``: ``[B, C_out]`` (ODConv filter attention);

the output is::

    y_b = f_b * conv(c_b * x_b,  sum_k a_bk * s_b * W_k)  +  sum_k a_bk * bias_k

Two exact formulations are provided; :func:`select_method` picks one:

* ``'batch_folded'``: mix the bank into one kernel per sample and run a single
  grouped convolution with the batch folded into the groups. Always valid;
  costs one static convolution of FLOPs plus materialising ``B`` kernels.
* ``'kernel_branches'``: convolve with all ``K`` kernels at once (one static
  convolution ``K`` times as wide) and mix the ``K`` outputs. Valid when there
  is no spatial attention (which acts inside the kernel window). Costs ``K``
  times the FLOPs but runs a plain static convolution; with ``K == 1`` it *is*
  the static convolution plus channel scalings.
"""
from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]

METHODS = ('auto', 'batch_folded', 'kernel_branches')


class ConvAttentions(NamedTuple):
    """Per-sample attentions of a dynamic convolution; ``None`` = not used."""

    kernel: Optional[Tensor] = None  # [B, K] or [B, C_out, K]
    spatial: Optional[Tensor] = None  # [B, kh, kw]
    input: Optional[Tensor] = None  # [B, C_in]
    output: Optional[Tensor] = None  # [B, C_out]


def _check_shapes(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                  bias: Optional[Tensor], groups: int) -> None:
    if x.dim() != 4:
        raise ValueError(f'dynamic_conv2d: input must be [B, C, H, W], '
                         f'got shape {tuple(x.shape)}')
    if weight.dim() != 5:
        raise ValueError(f'dynamic_conv2d: weight must be [K, C_out, '
                         f'C_in/groups, kh, kw], got {tuple(weight.shape)}')
    batch, in_channels = x.shape[:2]
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    if group_in * groups != in_channels:
        raise ValueError(
            f'dynamic_conv2d: input has {in_channels} channels but weight '
            f'expects {group_in} x groups={groups}')
    expected = {
        'kernel': ((batch, num_kernels), (batch, out_channels, num_kernels)),
        'spatial': ((batch, kh, kw), ),
        'input': ((batch, in_channels), ),
        'output': ((batch, out_channels), ),
    }
    for name, shapes in expected.items():
        value = getattr(attentions, name)
        if value is not None and tuple(value.shape) not in shapes:
            raise ValueError(
                f'dynamic_conv2d: {name} attention must have shape '
                f'{" or ".join(map(str, shapes))}, got {tuple(value.shape)}')
    if attentions.kernel is None and num_kernels != 1:
        raise ValueError(f'dynamic_conv2d: a bank of {num_kernels} kernels '
                         'needs a kernel attention to mix them')
    if bias is not None and tuple(bias.shape) != (num_kernels, out_channels):
        raise ValueError(f'dynamic_conv2d: bias must be [K, C_out] = '
                         f'{(num_kernels, out_channels)}, got '
                         f'{tuple(bias.shape)}')


def mix_kernels(weight: Tensor, kernel_attention: Optional[Tensor],
                batch: int) -> Tensor:
    """Mix a bank ``[K, O, I, kh, kw]`` into per-sample kernels
    ``[B, O, I, kh, kw]`` with ``[B, K]`` or ``[B, O, K]`` weights."""
    num_kernels = weight.shape[0]
    if kernel_attention is None:
        return weight.expand(batch, *weight.shape[1:])
    if kernel_attention.dim() == 2:
        # One matrix product: [B, K] x [K, O*I*kh*kw].
        mixed = kernel_attention.to(weight.dtype) @ weight.reshape(
            num_kernels, -1)
        return mixed.view(batch, *weight.shape[1:])
    return torch.einsum('bok,koihw->boihw',
                        kernel_attention.to(weight.dtype), weight)


def mix_bias(bias: Tensor, kernel_attention: Optional[Tensor]) -> Tensor:
    """Mix biases ``[K, O]`` into ``[B, O]`` (or ``[1, O]`` without
    attention, i.e. ``K == 1``)."""
    if kernel_attention is None:
        return bias
    if kernel_attention.dim() == 2:
        return kernel_attention.to(bias.dtype) @ bias
    return (kernel_attention.to(bias.dtype) * bias.t()).sum(-1)


def _scale_channels(x: Tensor, scale: Optional[Tensor]) -> Tensor:
    return x if scale is None else x * scale[:, :, None, None].to(x.dtype)


def _finish(y: Tensor, attentions: ConvAttentions,
            bias: Optional[Tensor]) -> Tensor:
    y = _scale_channels(y, attentions.output)
    if bias is not None:
        y = y + mix_bias(bias, attentions.kernel)[:, :, None, None].to(
            y.dtype)
    return y


def batch_folded_conv2d(x: Tensor, weight: Tensor,
                        attentions: ConvAttentions, bias: Optional[Tensor],
                        stride: IntPair, padding: Padding, dilation: IntPair,
                        groups: int) -> Tensor:
    """Per-sample kernels run as one grouped conv with ``groups * B``."""
    batch, in_channels, height, width = x.shape
    kernels = mix_kernels(weight, attentions.kernel, batch)
    if attentions.spatial is not None:
        kernels = kernels * attentions.spatial[:, None, None].to(
            kernels.dtype)
    x = _scale_channels(x, attentions.input)
    y = F.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        kernels.reshape(-1, *kernels.shape[2:]), None, stride, padding,
        dilation, groups * batch)
    y = y.view(batch, -1, *y.shape[2:])
    return _finish(y, attentions, bias)


def kernel_branches_conv2d(x: Tensor, weight: Tensor,
                           attentions: ConvAttentions, bias: Optional[Tensor],
                           stride: IntPair, padding: Padding,
                           dilation: IntPair, groups: int) -> Tensor:
    """All ``K`` kernels as one static conv, outputs mixed afterwards."""
    if attentions.spatial is not None:
        raise ValueError("dynamic_conv2d: method 'kernel_branches' cannot "
                         'apply a spatial attention; use batch_folded')
    num_kernels, out_channels = weight.shape[:2]
    group_out = out_channels // groups
    x = _scale_channels(x, attentions.input)
    if attentions.kernel is None:  # a single kernel: the static conv
        y = F.conv2d(x, weight[0], None, stride, padding, dilation, groups)
        return _finish(y, attentions, bias)
    # Reorder the bank so every conv group holds its K sub-banks together:
    # [K, g, O/g, ...] -> [g, K, O/g, ...].
    bank = weight.view(num_kernels, groups, group_out, *weight.shape[2:])
    bank = bank.transpose(0, 1).reshape(-1, *weight.shape[2:])
    y = F.conv2d(x, bank, None, stride, padding, dilation, groups)
    y = y.view(x.shape[0], groups, num_kernels, group_out, *y.shape[2:])
    mixing = attentions.kernel
    if mixing.dim() == 2:  # [B, K] -> [B, 1, K, 1]
        mixing = mixing[:, None, :, None]
    else:  # [B, O, K] -> [B, g, K, O/g]
        mixing = mixing.view(-1, groups, group_out,
                             num_kernels).transpose(2, 3)
    y = (y * mixing[..., None, None].to(y.dtype)).sum(2)
    return _finish(y.flatten(1, 2), attentions, bias)


def select_method(x: Tensor, weight: Tensor,
                  attentions: ConvAttentions) -> str:
    """The formulation ``'auto'`` runs, from shapes alone.

    Without spatial attention and with one kernel, ``kernel_branches`` is the
    static convolution itself. Otherwise ``batch_folded`` keeps the FLOPs of
    one static conv (``kernel_branches`` would cost ``K`` times as many).
    """
    if attentions.spatial is None and weight.shape[0] == 1:
        return 'kernel_branches'
    return 'batch_folded'


def dynamic_conv2d(x: Tensor,
                   weight: Tensor,
                   attentions: ConvAttentions,
                   bias: Optional[Tensor] = None,
                   stride: IntPair = 1,
                   padding: Padding = 0,
                   dilation: IntPair = 1,
                   groups: int = 1,
                   method: str = 'auto') -> Tensor:
    """Convolve each sample with its own kernel formed from a bank.

    Args:
        x: input ``[B, C_in, H, W]``.
        weight: kernel bank ``[K, C_out, C_in/groups, kh, kw]``.
        attentions: per-sample attentions (see :class:`ConvAttentions`).
        bias: per-kernel biases ``[K, C_out]``, mixed by the kernel
            attention and added after the output attention, or ``None``.
        stride, padding, dilation, groups: as in :func:`F.conv2d`.
        method: ``'auto'``, ``'batch_folded'`` or ``'kernel_branches'``.

    Returns:
        ``[B, C_out, H_out, W_out]``; every method gives the same values.
    """
    _check_shapes(x, weight, attentions, bias, groups)
    if method == 'auto':
        method = select_method(x, weight, attentions)
    if method == 'batch_folded':
        run = batch_folded_conv2d
    elif method == 'kernel_branches':
        run = kernel_branches_conv2d
    else:
        raise ValueError(f'dynamic_conv2d: method must be one of {METHODS}, '
                         f'got {method!r}')
    return run(x, weight, attentions, bias, stride, padding, dilation, groups)
