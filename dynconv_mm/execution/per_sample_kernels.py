"""Per-sample kernels, run as one convolution with the batch folded into
the groups: the ``batch_folded`` and ``aggregated`` formulations.

Each sample's kernel is mixed from the bank by one matrix product
(``[B, K] x [K, O*I*kh*kw]``), never through the ``[B, K, O, I, kh, kw]``
product. The batch then becomes the groups of a single ``F.conv2d``: input
``[1, B*C_in, H, W]``, kernels ``[B*C_out, C_in/groups, kh, kw]``,
``groups * B`` groups. At batch 1 this is one plain convolution.

* ``batch_folded`` folds the kernel and spatial attentions into the kernel
  and applies the channel (input) and filter (output) attentions to the
  activations, which is cheaper where the kernel is larger than the
  activations (deep layers).
* ``aggregated`` folds all four attentions, and the mixed bias, into the
  per-sample kernel: no pass over the activations at all, which is cheaper
  where the kernel is smaller than the activations (early layers, batch 1
  inference). It is built from plain tensor ops with static shapes, so it
  traces into ``torch.compile`` and CUDA graphs.
"""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, accepts_empty_batch,
                         finish, mix_bias, mix_kernels, scale_channels)


def per_sample_kernels(weight: Tensor, attentions: ConvAttentions,
                       batch: int, groups: int, fold_all: bool) -> Tensor:
    """Sample kernels ``[B, O, I/groups, kh, kw]``: the bank mixed by the
    kernel attention, scaled by the spatial attention and, with
    ``fold_all``, by the channel and filter attentions too."""
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    kernels = mix_kernels(weight, attentions.kernel, batch)
    # Build the small outer product of the factors first, then touch the
    # large kernel tensor once per factor group.
    factor: Optional[Tensor] = None  # broadcasts to [B, g, O/g, I/g, kh, kw]
    if attentions.spatial is not None:
        factor = attentions.spatial.reshape(batch, 1, 1, 1, kh, kw)
    if fold_all and attentions.input is not None:
        channel = attentions.input.reshape(batch, groups, 1, group_in, 1, 1)
        factor = channel if factor is None else channel * factor
    shape6 = (batch, groups, out_channels // groups, group_in, kh, kw)
    if factor is not None:
        kernels = kernels.reshape(shape6) * factor.to(kernels.dtype)
    if fold_all and attentions.output is not None:
        kernels = kernels.reshape(shape6) * attentions.output.reshape(
            batch, groups, -1, 1, 1, 1).to(kernels.dtype)
    return kernels.reshape(batch, out_channels, group_in, kh, kw)


def _grouped_conv(x: Tensor, kernels: Tensor, bias: Optional[Tensor],
                  stride: IntPair, padding: Padding, dilation: IntPair,
                  groups: int) -> Tensor:
    """Convolve sample ``b`` with ``kernels[b]`` (and ``bias[b]``)."""
    batch, in_channels, height, width = x.shape
    if batch == 1:
        return F.conv2d(x, kernels[0], None if bias is None else bias[0],
                        stride, padding, dilation, groups)
    y = F.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        kernels.reshape(-1, *kernels.shape[2:]),
        None if bias is None else bias.reshape(-1), stride, padding,
        dilation, groups * batch)
    return y.view(batch, -1, *y.shape[2:])


@accepts_empty_batch
def batch_folded_conv2d(x: Tensor, weight: Tensor,
                        attentions: ConvAttentions, bias: Optional[Tensor],
                        stride: IntPair, padding: Padding, dilation: IntPair,
                        groups: int) -> Tensor:
    """Kernel and spatial attentions in the per-sample kernel; channel and
    filter attentions on the activations."""
    kernels = per_sample_kernels(weight, attentions, x.shape[0], groups,
                                 fold_all=False)
    y = _grouped_conv(scale_channels(x, attentions.input), kernels, None,
                      stride, padding, dilation, groups)
    return finish(y, attentions, bias)


@accepts_empty_batch
def aggregated_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                      bias: Optional[Tensor], stride: IntPair,
                      padding: Padding, dilation: IntPair,
                      groups: int) -> Tensor:
    """All four attentions and the mixed bias aggregated once into each
    sample's kernel; the activations are only convolved."""
    batch = x.shape[0]
    kernels = per_sample_kernels(weight, attentions, batch, groups,
                                 fold_all=True)
    if bias is not None:
        bias = mix_bias(bias, attentions.kernel).expand(batch, -1)
    return _grouped_conv(x, kernels, bias, stride, padding, dilation, groups)
