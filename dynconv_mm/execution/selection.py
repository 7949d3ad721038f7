"""Which formulation ``'auto'`` runs, from shapes, device and grad mode."""
from typing import Sequence

from torch import Tensor

from .attentions import ConvAttentions

FORMULATIONS = ('batch_folded', 'aggregated', 'kernel_branches', 'im2col')


def valid_methods(attentions: ConvAttentions,
                  allowed: Sequence[str] = FORMULATIONS) -> tuple:
    """The formulations in ``allowed`` that can compute these attentions."""
    return tuple(m for m in allowed if not (
        m == 'kernel_branches' and attentions.spatial is not None))


def select_method(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                  allowed: Sequence[str] = FORMULATIONS) -> str:
    """The fastest valid formulation in ``allowed`` for this call."""
    candidates = valid_methods(attentions, allowed)
    if not candidates:
        raise ValueError(
            f'dynamic_conv2d: none of the allowed methods {tuple(allowed)} '
            'can apply a spatial attention')
    for method in _preference(x, weight, attentions):
        if method in candidates:
            return method
    return candidates[0]


def _preference(x: Tensor, weight: Tensor,
                attentions: ConvAttentions) -> Sequence[str]:
    if attentions.spatial is None and weight.shape[0] == 1:
        return ('kernel_branches', 'batch_folded')
    return ('batch_folded', )
