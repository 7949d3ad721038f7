"""The static bank as one convolution ``K`` times as wide, its ``K`` outputs
mixed per sample: the ``kernel_branches`` formulation, which is DyNet's
feature-map fusion (Zhang et al. 2020, Sec. 3: fusing the feature maps of
the ``g`` fixed kernels is equivalent to fusing the kernels).

The convolution's weight is the persistent bank itself (a view of it when
``groups == 1``), so the backend keeps its fast static-weight path; the
price is ``K`` times the multiply-adds. With ``K == 1`` it *is* the static
convolution plus the channel scalings. A spatial attention acts inside the
kernel window and cannot be moved onto the outputs, so it is refused here
(the ``im2col`` formulation applies it to the unfolded input instead).
"""
from typing import List, Optional

import torch
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, finish,
                         scale_channels, shared_kernel_conv2d)
from .recompute import scaled_input_conv2d


def branch_bank(weight: Tensor, groups: int) -> Tensor:
    """The bank ``[K, O, I/g, kh, kw]`` as one conv weight
    ``[g*K*O/g, I/g, kh, kw]`` whose groups each hold their ``K``
    sub-banks together. A free view when ``groups == 1`` or ``K == 1``."""
    num_kernels, out_channels = weight.shape[:2]
    if groups == 1 or num_kernels == 1:
        return weight.reshape(-1, *weight.shape[2:])
    bank = weight.view(num_kernels, groups, out_channels // groups,
                       *weight.shape[2:])
    return bank.transpose(0, 1).reshape(-1, *weight.shape[2:])


def mix_branches(y: Tensor, kernel_attention: Optional[Tensor],
                 num_kernels: int, groups: int) -> Tensor:
    """Mix the ``K`` branch outputs ``[B, g*K*O/g, H, W]`` of
    :func:`branch_bank` into ``[B, O, H, W]``."""
    if kernel_attention is None:  # a single kernel
        return y
    batch, channels, height, width = y.shape
    group_out = channels // (groups * num_kernels)
    mixing = kernel_attention.to(y.dtype)
    # Matrix products rather than a broadcast product summed over K: no
    # K-times larger temporary, and a cheap backward.
    if mixing.dim() == 2:  # [B, 1, 1, K] @ [B, g, K, O/g*H*W]
        y = torch.matmul(mixing[:, None, None, :],
                         y.view(batch, groups, num_kernels, -1))
    else:  # DyNet's [B, O, K]: one K-vector per output channel
        y = torch.einsum('bgkop,bgok->bgop',
                         y.view(batch, groups, num_kernels, group_out, -1),
                         mixing.view(batch, groups, group_out, num_kernels))
    return y.reshape(batch, groups * group_out, height, width)


def kernel_branches_conv2d(x: Tensor, weight: Tensor,
                           attentions: ConvAttentions, bias: Optional[Tensor],
                           stride: IntPair, padding: Padding,
                           dilation: IntPair, groups: int) -> Tensor:
    """All ``K`` kernels as one static conv, outputs mixed afterwards."""
    if attentions.spatial is not None:
        raise ValueError("dynamic_conv2d: method 'kernel_branches' cannot "
                         'apply a spatial attention; use batch_folded, '
                         'im2col or aggregated')
    bank = branch_bank(weight, groups)

    def form(stages: Optional[List[Tensor]]) -> Tensor:
        scaled = scale_channels(x, attentions.input)
        if stages is not None and scaled is not x:
            stages.append(scaled)
        return scaled

    y = scaled_input_conv2d(
        x, weight, form, lambda scaled: shared_kernel_conv2d(
            scaled, bank, None, stride, padding, dilation, groups),
        attentions, x.numel())
    y = mix_branches(y, attentions.kernel, weight.shape[0], groups)
    return finish(y, attentions, bias)
