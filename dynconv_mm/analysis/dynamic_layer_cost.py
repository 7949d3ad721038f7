"""Multiply-accumulates of one call of a dynamic convolution
(:class:`~dynconv_mm.layers.DynamicConv2dBase`): the convolution with the
aggregated kernel and the kernel aggregation, under two conventions.

The layer's attention module is *not* counted here: it is an ordinary
module (pooling, FCs, activations) that the counter meets and counts like
any other, whether the layer runs it or a block shares one attention among
several convs (DyNet).

Notation, per sample: ``nW = C_out * C_in/groups * kh * kw`` elements of
one kernel, ``K`` kernels in the bank, ``a`` the kernel attention
(``[B, K]``, or ``[B, C_out, K]`` for DyNet), and ODConv's spatial
``s`` (``[kh, kw]``), input-channel ``c`` (``[C_in]``) and filter ``f``
(``[C_out]``) attentions, each present or not.

``'paper'`` (:func:`dynamic_conv_macs`) -- the papers' equations evaluated
as written, on the kernel: ``W~ = sum_k a_k (A (.) W_k)`` with
``A = f (x) c (x) s`` the outer product of the ODConv attentions present.

* aggregated convolution: ``C_out*H_out*W_out * C_in/groups*kh*kw``;
* building ``A``: ``C_out*C_in/groups`` for ``f (x) c`` (when ``f``
  exists), plus ``nW`` for ``(x) s`` (when ``s`` exists); nothing when
  ``A`` is the single vector ``c``;
* applying ``A`` to each of the ``K`` kernels: ``K * nW``;
* mixing the kernels: ``K * nW`` (one multiply-add per kernel element per
  kernel) when there is a kernel attention, plus ``K * C_out`` for the
  biases.

For DynamicConv and DyNet ``A`` is absent and this is Chen et al.'s
``K * C_out * C_in * k^2`` aggregation (DyNet: ``g`` kernels fused per
output channel, the same count). For ODConv it is the per-kernel form of
the paper's Eq. (2); it reproduces the ODConv authors' ResNet-18 1x / 4x
MAdds to 0.07 % / 0.01 % (``docs/model_zoo.md``).

``'executed'`` -- what the layer really runs, whichever formulation of
:mod:`dynconv_mm.execution` it picks (at batch-1 inference mostly
``aggregated``, each attention on the kernel or on the activation,
whichever is smaller; a single kernel on a small CPU map stays static):
the counter charges the layer the ATen operators it executes, convolutions
and matrix products (the mixing) as multiply-accumulates and, unlike
elsewhere, every elementwise multiplication (an attention scaling a kernel
or an activation) as one per output element. This follows the execution
floor as it changes, and it is the cost the layer has at run time.

All counts scale with the batch (every sample has its own kernel); count
at batch 1 for the per-image cost.
"""
from typing import Dict, Optional

from torch import Tensor

from ..execution import ConvAttentions

CONVENTIONS = ('paper', 'executed')


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f'complexity: convention must be one of '
                         f'{CONVENTIONS}, got {convention!r}')
    return convention


def dynamic_conv_macs(weight_shape: tuple, has_bias: bool, x: Tensor,
                      y: Tensor, attentions: ConvAttentions) -> Dict[str, int]:
    """Multiply-accumulates of one dynamic convolution call under the
    ``'paper'`` convention, by part.

    Args:
        weight_shape: the bank's shape ``[K, C_out, C_in/groups, kh, kw]``.
        has_bias: whether the layer mixes a bias bank ``[K, C_out]``.
        x: the input ``[B, C_in, H, W]``.
        y: the output ``[B, C_out, H_out, W_out]``.
        attentions: the attentions the call used (which are present).

    Returns:
        ``{'conv': ..., 'aggregation': ...}``.
    """
    num_kernels, out_channels, group_in, kh, kw = weight_shape
    batch = x.shape[0]
    per_filter = group_in * kh * kw
    kernel_numel = out_channels * per_filter
    mixing = 0
    if attentions.kernel is not None:
        mixing = num_kernels * kernel_numel
        if has_bias:
            mixing += num_kernels * out_channels
    build = 0
    if attentions.output is not None:
        build += out_channels * group_in  # f (x) c
    if attentions.spatial is not None:
        build += kernel_numel  # (x) s
    apply = 0
    if any(a is not None
           for a in (attentions.input, attentions.output, attentions.spatial)):
        apply = num_kernels * kernel_numel
    return dict(conv=y.numel() * per_filter,
                aggregation=(mixing + build + apply) * batch)


def attentions_of_call(args: tuple, kwargs: dict) -> Optional[ConvAttentions]:
    """The ``attentions`` argument of ``DynamicConv2dBase.forward(x,
    attentions=None)`` if the caller passed one."""
    if len(args) > 1:
        return args[1]
    return kwargs.get('attentions')
