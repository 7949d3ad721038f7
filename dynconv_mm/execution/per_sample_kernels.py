"""Per-sample kernels, run as one convolution with the batch folded into
the groups: the ``batch_folded`` and ``aggregated`` formulations.

Each sample's kernel is mixed from the bank by one matrix product
(``[B, K] x [K, O*I*kh*kw]``), never through the ``[B, K, O, I, kh, kw]``
product. The batch then becomes the groups of a single ``F.conv2d``: input
``[1, B*C_in, H, W]``, kernels ``[B*C_out, C_in/groups, kh, kw]``,
``groups * B`` groups. At batch 1 this is one plain convolution.

* ``batch_folded`` folds the kernel and spatial attentions into the kernel
  and applies the channel (input) and filter (output) attentions to the
  activations.
* ``aggregated`` aggregates once: every attention goes into the per-sample
  kernel where that costs less than a pass over the activation it would
  scale (see :func:`aggregation_plan`), and the mixed bias rides in the
  convolution. In early layers, where kernels are small and activations
  large, all four attentions end up in the kernel and the activations are
  only convolved; in deep layers the filter attention stays on the small
  output. Plain tensor ops with static shapes, so it traces into
  ``torch.compile`` and CUDA graphs. It is the batch-1 inference path.
"""
from typing import NamedTuple, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, accepts_empty_batch,
                         finish, mix_bias, mix_kernels, output_size,
                         scale_channels)


class AggregationPlan(NamedTuple):
    """Which attentions :func:`aggregated_conv2d` folds into the kernel."""

    input: bool
    output: bool


def aggregation_plan(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                     out_size: Tuple[int, int]) -> AggregationPlan:
    """Fold an attention into the kernel when one pass over the kernel
    (``C_out * C_in/groups * kh * kw`` per sample) costs no more than one
    over the activation it would scale, or costs nothing extra: the channel
    attention joins the spatial one in a small ``[C_in, kh, kw]`` factor
    that scales the kernel in the same pass."""
    _, out_channels, group_in, kh, kw = weight.shape
    kernel = out_channels * group_in * kh * kw
    in_channels, height, width = x.shape[1:]
    fold_input = attentions.input is not None and (
        attentions.spatial is not None or in_channels * height * width
        >= kernel)
    fold_output = attentions.output is not None and (
        out_channels * out_size[0] * out_size[1] >= kernel)
    return AggregationPlan(fold_input, fold_output)


def per_sample_kernels(weight: Tensor, attentions: ConvAttentions,
                       batch: int, groups: int,
                       plan: AggregationPlan = AggregationPlan(False, False)
                       ) -> Tensor:
    """Sample kernels ``[B, O, I/groups, kh, kw]``: the bank mixed by the
    kernel attention, scaled by the spatial attention and, as ``plan``
    says, by the channel and filter attentions."""
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    kernels = mix_kernels(weight, attentions.kernel, batch)
    # Build the small outer product of the factors first, then touch the
    # large kernel tensor once per factor group.
    factor: Optional[Tensor] = None  # broadcasts to [B, g, O/g, I/g, kh, kw]
    if attentions.spatial is not None:
        factor = attentions.spatial.reshape(batch, 1, 1, 1, kh, kw)
    if plan.input and attentions.input is not None:
        channel = attentions.input.reshape(batch, groups, 1, group_in, 1, 1)
        factor = channel if factor is None else channel * factor
    shape6 = (batch, groups, out_channels // groups, group_in, kh, kw)
    if factor is not None:
        kernels = kernels.reshape(shape6) * factor.to(kernels.dtype)
    if plan.output and attentions.output is not None:
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
    kernels = per_sample_kernels(weight, attentions, x.shape[0], groups)
    y = _grouped_conv(scale_channels(x, attentions.input), kernels, None,
                      stride, padding, dilation, groups)
    return finish(y, attentions, bias)


@accepts_empty_batch
def aggregated_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                      bias: Optional[Tensor], stride: IntPair,
                      padding: Padding, dilation: IntPair,
                      groups: int) -> Tensor:
    """Attentions aggregated once into each sample's kernel where that is
    cheaper (:func:`aggregation_plan`), the rest on the activations."""
    batch = x.shape[0]
    plan = aggregation_plan(
        x, weight, attentions,
        output_size(x, weight.shape[3:], stride, padding, dilation))
    per_sample = (attentions.kernel is not None
                  or attentions.spatial is not None
                  or (plan.input and attentions.input is not None)
                  or (plan.output and attentions.output is not None))
    if not plan.input:
        x = scale_channels(x, attentions.input)
    # The bias joins the conv unless a filter attention still follows it.
    bias_in_conv = attentions.output is None or plan.output
    mixed_bias = None
    if bias is not None and bias_in_conv:
        mixed_bias = mix_bias(bias, attentions.kernel).expand(batch, -1)
    if per_sample:
        kernels = per_sample_kernels(weight, attentions, batch, groups, plan)
        y = _grouped_conv(x, kernels, mixed_bias, stride, padding, dilation,
                          groups)
    else:  # one kernel shared by the batch: the static convolution
        y = F.conv2d(x, weight[0], None if mixed_bias is None else
                     mixed_bias[0], stride, padding, dilation, groups)
    if not plan.output:
        y = scale_channels(y, attentions.output)
    if bias is not None and not bias_in_conv:
        y = y + mix_bias(bias, attentions.kernel)[:, :, None, None].to(
            y.dtype)
    return y
