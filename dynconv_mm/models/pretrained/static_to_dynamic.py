"""Start a dynamic convolution at a static convolution's function.

None of the three papers says how to begin a dynamic network from a static
pretrained one; this is our construction, exact where the math allows it.

**The idea.** Set every attention head's weight and bias to zero. Each
head's logits are then 0 for every input and at every temperature ``tau``
(``0 / tau = 0``), so every attention is a constant: a sigmoid attention is
``0.5``, a softmax over ``K`` kernels is ``1/K``. The per-sample kernel is
then one fixed linear combination of the bank, ``c * sum_k W_k`` with a
constant ``c`` per layer type (below), and choosing ``W_k = W / (K c) +
delta_k`` with ``sum_k delta_k = 0`` makes it exactly the static kernel
``W``. The biases, mixed by the kernel attention alone, are ``b_k = b /
(K c_b)``.

**Why the deltas.** ``K`` identical kernels under a uniform attention never
separate: their gradients are equal (``dL/dW_k = pi_k dL/dW_mixed``), and
the kernel attention's logits get zero gradient (``dL/dz_k = pi_k (<G, W_k>
- sum_j pi_j <G, W_j>) = 0`` when all ``W_k`` are equal), so the attention
stays uniform and the kernels stay identical forever (DyNet's ``g`` kernels
per output channel the same way). ``delta_k`` breaks that symmetry while
the mix stays exactly ``W``: each entry of ``delta_k`` is Gaussian with
standard deviation ``perturbation * rms(W / (K c))`` (``perturbation``
defaults to ``1e-2``; a kernel of zeros uses its Kaiming fan-out standard
deviation instead), centred over ``k``, drawn from a generator seeded by
the caller (deterministic, independent of the global RNG). Biases need no
delta: the kernels' deltas already make the kernel attention's gradient
differ between kernels.

**What holds at initialisation** (outputs equal the static conv's for every
input, in train and in eval mode, at any temperature, up to floating-point
rounding in the parameters' dtype -- about 1e-7 relative in float32 where
``K > 1``, since the kernels no longer sum exactly; the attention trunk --
FC, its norm if ``attention_norm_cfg`` is ``BN``/``SyncBN``/``GN``, ReLU --
keeps its random init and cannot change the output while the heads are
zero; a BN trunk still refuses to train on a batch of 1, as always):

* ``ODConv`` (``K`` kernels, ``n`` sigmoid heads: channel always, filter
  unless depthwise, spatial unless 1x1): ``alpha_c = alpha_f = alpha_s =
  0.5``, kernel attention ``1/K`` (none for ``K = 1``); ``c = 0.5**n / K``,
  so ``W_k = W / 0.5**n + delta_k`` (e.g. ``8 W`` for a 3x3 non-depthwise
  conv); biases (if the layer has them) ``b_k = b``, since the bias is added
  after the filter attention.
* ``DynamicConv``: ``pi = 1/K``, ``c = 1/K``: ``W_k = W + delta_k``,
  ``b_k = b``.
* ``DyNetConv`` (its own coefficients, or a residual block's shared
  coefficient module, which must be zeroed too): every coefficient
  ``eta = 0.5``, the fused kernel is ``0.5 * sum_i w_i``: ``w_i = 2 W / g +
  delta_i``, ``b_i = 2 b / g``. Only where the dynamic layer has the static
  conv's shape: DyNet's Dy-ResNet halves the dynamic convs' output channels,
  so a static ResNet's function cannot be kept there and loading refuses.

**What trains from step 1.** The zero heads get non-zero gradients (their
gradient is ``dL/dlogits x hidden``, and the hidden features are not all
zero), so the attentions become input-dependent after the first step; what
the kernel attention learns distinguishes the kernels only through the
deltas (``K = 1`` has no symmetry to break and gets none). The trunk FC gets zero gradient
at the first step (its only consumers are the zero heads) and trains from
the second. At the first step every kernel of a bank gets the same
gradient; the kernels' updates differ from the second step on.

Each kernel of the bank is ``1 / (K c)`` times the static kernel (e.g.
``8 W`` for an ODConv 3x3, any ``K``): weight decay acts on that scale.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ...layers import (DynamicAttention, DynamicConv2d, DynamicConv2dBase,
                       DyNetConv2d, ODConv2d)

#: Default relative size of the symmetry-breaking deltas.
DEFAULT_PERTURBATION = 1e-2


def zero_attention_heads(attention: DynamicAttention) -> None:
    """Zero every head's weight and bias: all logits are 0 for any input,
    at any temperature (the trunk is left as it is)."""
    with torch.no_grad():
        attention.heads.weight.zero_()
        attention.heads.bias.zero_()


def constant_attention_coefficients(
        conv: DynamicConv2dBase) -> Tuple[float, float]:
    """``(c, c_b)``: with zero attention heads, the per-sample kernel is
    ``c * sum_k W_k`` and the bias ``c_b * sum_k b_k`` (see the module
    docstring). Raises for a layer type without a rule."""
    num_kernels = conv.num_kernels
    if isinstance(conv, ODConv2d):
        sigmoid_heads = sum(name in conv.attention.head_slices
                            for name in ('input', 'output', 'spatial'))
        # softmax of K zero logits; K == 1 has no kernel head: weight 1
        return 0.5**sigmoid_heads / num_kernels, 1.0 / num_kernels
    if isinstance(conv, DyNetConv2d):
        return 0.5, 0.5  # sigmoid(0) per output channel and fixed kernel
    if isinstance(conv, DynamicConv2d):
        return 1.0 / num_kernels, 1.0 / num_kernels
    raise ValueError(
        f'{type(conv).__name__}: no static -> dynamic initialisation rule '
        f'for this layer type (known: ODConv, DynamicConv, DyNetConv)')


def static_kernel_to_bank(
        weight: Tensor,
        num_kernels: int,
        coefficient: float,
        perturbation: float = DEFAULT_PERTURBATION,
        generator: Optional[torch.Generator] = None) -> Tensor:
    """A bank ``[K, *weight.shape]`` (float64) whose sum times
    ``coefficient`` is ``weight``: ``W_k = W / (K c) + delta_k`` with
    ``sum_k delta_k = 0`` (see the module docstring for ``delta``)."""
    if not (math.isfinite(perturbation) and perturbation >= 0):
        raise ValueError(f'static_kernel_to_bank: perturbation='
                         f'{perturbation!r} is invalid: it must be a finite '
                         'number >= 0')
    mean = weight.detach().to(torch.float64) / (num_kernels * coefficient)
    bank = mean.expand(num_kernels, *mean.shape).clone()
    if num_kernels == 1 or perturbation == 0:
        return bank
    scale = mean.pow(2).mean().sqrt()
    if scale == 0:  # a zero kernel: the Kaiming (fan-out) scale
        fan_out = mean.shape[0] * math.prod(mean.shape[2:])
        scale = math.sqrt(2.0 / fan_out)
    # drawn in float32 (twice as fast; the deltas' own digits do not
    # matter), centred in float64
    noise = torch.randn(bank.shape, generator=generator,
                        device='cpu').to(bank.device, torch.float64)
    noise -= noise.mean(dim=0, keepdim=True)
    # centring leaves each entry a variance of (K - 1) / K
    noise *= perturbation * scale * math.sqrt(num_kernels / (num_kernels - 1))
    return bank + noise


def static_bias_to_bank(bias: Tensor, num_kernels: int,
                        coefficient: float) -> Tensor:
    """Biases ``[K, C_out]`` (float64) whose sum times ``coefficient`` is
    ``bias``: every ``b_k = b / (K c_b)``."""
    mean = bias.detach().to(torch.float64) / (num_kernels * coefficient)
    return mean.expand(num_kernels, *mean.shape).clone()


def check_static_geometry(conv: DynamicConv2dBase,
                          static: nn.Conv2d,
                          name: str = '') -> None:
    """The static conv must have the dynamic layer's geometry."""
    where = f' {name}' if name else ''
    pairs = {
        'in_channels': (static.in_channels, conv.in_channels),
        'out_channels': (static.out_channels, conv.out_channels),
        'kernel_size': (tuple(static.kernel_size), conv.kernel_size),
        'stride': (tuple(static.stride), conv.stride),
        'padding': (static.padding if isinstance(static.padding, str) else
                    tuple(static.padding), conv.padding),
        'dilation': (tuple(static.dilation), conv.dilation),
        'groups': (static.groups, conv.groups),
    }
    for option, (theirs, ours) in pairs.items():
        if theirs != ours:
            raise ValueError(
                f'{conv.layer_type}{where}: cannot start from the static '
                f'conv: its {option}={theirs!r} differs from the layer\'s '
                f'{option}={ours!r}')


def dynamic_bank_from_static(
        conv: DynamicConv2dBase,
        weight: Tensor,
        bias: Optional[Tensor] = None,
        perturbation: float = DEFAULT_PERTURBATION,
        generator: Optional[torch.Generator] = None,
        name: str = '') -> Tuple[Tensor, Optional[Tensor]]:
    """The bank (and biases) that make ``conv`` compute the static conv
    ``(weight [C_out, C_in/groups, kh, kw], bias [C_out] or None)`` once
    the attention feeding it has zero heads; returned in ``conv.weight``'s
    dtype, nothing is written. ``name`` is used in error messages."""
    owner = f'{conv.layer_type}{" " + name if name else ""}'
    expected = tuple(conv.weight.shape[1:])
    if tuple(weight.shape) != expected:
        hint = ''
        if (isinstance(conv, DyNetConv2d) and weight.dim() == 4
                and weight.shape[0] != expected[0]):
            hint = (' (a DyNet layer with fewer output channels than the '
                    'static conv, as in Dy-ResNet, cannot keep the static '
                    "network's function)")
        raise ValueError(
            f'{owner}: the static kernel has shape {tuple(weight.shape)} but '
            f'each of the layer\'s {conv.num_kernels} kernels is '
            f'{expected}{hint}')
    coefficient, bias_coefficient = constant_attention_coefficients(conv)
    bank = static_kernel_to_bank(weight, conv.num_kernels, coefficient,
                                 perturbation, generator)
    biases = None
    if conv.bias is not None:
        if bias is None:
            bias = weight.new_zeros(conv.out_channels)
        elif tuple(bias.shape) != (conv.out_channels, ):
            raise ValueError(f'{owner}: the static bias has shape '
                             f'{tuple(bias.shape)}, expected '
                             f'({conv.out_channels},)')
        biases = static_bias_to_bank(bias, conv.num_kernels,
                                     bias_coefficient).to(conv.bias.dtype)
    elif bias is not None:
        raise ValueError(
            f'{owner}: the static conv has a bias but the dynamic layer was '
            'built with bias=False, so it cannot compute the static function')
    return bank.to(conv.weight.dtype), biases


def init_dynamic_conv_from_static(
        conv: DynamicConv2dBase,
        static: Union[nn.Conv2d, Tensor],
        bias: Optional[Tensor] = None,
        perturbation: float = DEFAULT_PERTURBATION,
        generator: Optional[torch.Generator] = None) -> None:
    """Make ``conv`` compute the static conv exactly (see the module
    docstring): zero its attention's heads and set its bank and biases.

    Args:
        conv: an ``ODConv``, ``DynamicConv`` or ``DyNetConv`` layer that
            owns its attention. A conv fed by a block's shared coefficient
            module is refused here: zero that module with
            :func:`zero_attention_heads` and use
            :func:`dynamic_bank_from_static` (or load the whole backbone
            with ``init_cfg=dict(type='Pretrained', ...)``).
        static: an ``nn.Conv2d`` of the same geometry, or its weight
            ``[C_out, C_in/groups, kh, kw]``.
        bias: the static bias when ``static`` is a tensor.
        perturbation: relative size of the symmetry-breaking deltas (0
            keeps the ``K`` kernels identical, which never separate).
        generator: RNG of the deltas; ``None``: one seeded with 0.
    """
    if conv.attention is None:
        raise ValueError(
            f'{conv.layer_type}: this conv has no attention of its own (its '
            'block predicts its coefficients); zero the block\'s coefficient '
            'module with zero_attention_heads() and set the bank with '
            'dynamic_bank_from_static()')
    if isinstance(static, nn.Conv2d):
        check_static_geometry(conv, static)
        weight, bias = static.weight, static.bias
    else:
        weight = static
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    bank, biases = dynamic_bank_from_static(conv, weight, bias, perturbation,
                                            generator)
    zero_attention_heads(conv.attention)
    with torch.no_grad():
        conv.weight.copy_(bank)
        if biases is not None:
            conv.bias.copy_(biases)
