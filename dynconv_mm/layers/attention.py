"""Pieces every attention of the three papers shares: the temperature, the
pooled-MLP trunk, and running both in full precision under autocast."""
import contextlib
from typing import Dict, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..execution import ConvAttentions
from ..execution.selection import triton_runnable
from .options import check_int, check_positive


def hidden_channels(owner: str, in_channels: int, reduction: float,
                    min_hidden_channels: int) -> int:
    """Width of the attention MLP: ``max(int(C_in / reduction), min)``."""
    check_positive(owner, 'reduction', reduction)
    check_int(owner, 'min_hidden_channels', min_hidden_channels, 1)
    return max(int(in_channels / reduction), min_hidden_channels)


def build_vector_norm(owner: str, norm_cfg: dict,
                      num_features: int) -> nn.Module:
    """The trunk's norm from an mmcv norm config, over ``[B, C, 1, 1]``.

    Only norms that normalise pooled vectors meaningfully are accepted:
    batch norms (``BN``, ``SyncBN``) and ``GN``. ``LN`` would normalise the
    trailing 1x1 and ``IN`` a single spatial element.
    """
    try:
        norm = build_norm_layer(norm_cfg, num_features)[1]
    except (TypeError, KeyError, AssertionError, ValueError) as error:
        raise ValueError(f'{owner}: option attention_norm_cfg={norm_cfg!r} '
                         f'is invalid: {error}') from error
    if not isinstance(norm, (_BatchNorm, nn.GroupNorm)):
        raise ValueError(
            f'{owner}: option attention_norm_cfg={norm_cfg!r} is invalid: '
            f'{type(norm).__name__} cannot normalise the pooled [B, C] '
            "vectors; use dict(type='BN'), dict(type='SyncBN') or "
            "dict(type='GN', num_groups=...)")
    return norm


@contextlib.contextmanager
def full_precision(x: Tensor) -> Iterator[None]:
    """Autocast off on ``x``'s device: the attention's logits, softmax and
    sigmoid run in its parameters' dtype. Under fp16 autocast a logit over
    65504 (e.g. 700 at temperature 0.01) would be inf and the softmax NaN."""
    device = x.device.type
    # Only where autocast is on: entering the context costs more than the
    # small ops it wraps (batch-1 inference runs ~100 of them per network).
    if (torch.amp.is_autocast_available(device)
            and torch.is_autocast_enabled(device)):
        with torch.autocast(device_type=device, enabled=False):
            yield
    else:
        yield


def _syncs_across_processes(norm: nn.Module) -> bool:
    """Whether ``norm`` is a SyncBatchNorm whose process group has more
    than one process: its statistics then cover every process's batch, so
    one sample per process is enough."""
    if not (isinstance(norm, nn.SyncBatchNorm)
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        return False
    group = (torch.distributed.group.WORLD if norm.process_group is None
             else norm.process_group)
    return torch.distributed.get_world_size(group) > 1


class AttentionTrunk(nn.Module):
    """Global average pooling, then FC -> [norm] -> ReLU.

    Shape: ``[B, C_in, H, W] -> [B, hidden]``. The FC has a bias only when
    no norm follows it (a norm's shift makes a bias redundant).

    Args:
        owner: layer type name, used in error messages.
        in_channels: ``C_in``.
        hidden_channels: width of the hidden layer.
        norm_cfg: mmcv norm config applied to ``[B, hidden, 1, 1]``
            (``BN``, ``SyncBN``, ``GN``), or ``None``.
    """

    def __init__(self,
                 owner: str,
                 in_channels: int,
                 hidden_channels: int,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.owner = owner
        self.fc = nn.Linear(in_channels, hidden_channels,
                            bias=norm_cfg is None)
        self.norm = None if norm_cfg is None else build_vector_norm(
            owner, norm_cfg, hidden_channels)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(
            self.fc.weight, mode='fan_out', nonlinearity='relu')
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        # Pool straight into the FC's dtype (float32 under autocast).
        hidden = self.fc(x.mean(dim=(2, 3), dtype=self.fc.weight.dtype))
        if self.norm is not None:
            # The norm's own mode: a backbone's norm_eval puts it in eval
            # mode (running statistics) inside a training model.
            if (self.norm.training and hidden.shape[0] == 1
                    and isinstance(self.norm, _BatchNorm)
                    and not _syncs_across_processes(self.norm)):
                raise ValueError(
                    f'{self.owner}: attention_norm_cfg={self.norm_cfg_type} '
                    'cannot train on a batch of 1 (BatchNorm over pooled '
                    'vectors sees one value per channel); use '
                    'attention_norm_cfg=None, a larger batch, or SyncBN '
                    'across several processes')
            hidden = self.norm(hidden[:, :, None, None]).flatten(1)
        return F.relu(hidden, inplace=True)

    @property
    def norm_cfg_type(self) -> str:
        return type(self.norm).__name__


class DynamicAttention(nn.Module):
    """Base of the attention modules: a trunk, named linear heads on it, and
    the temperature ``tau`` that divides every head's logits before its
    softmax/sigmoid.

    Everything from the pooling to the softmax/sigmoid runs with autocast
    off, in the dtype of the attention's parameters (float32 in a model
    trained under fp16/bf16 autocast): the attentions are float32 and the
    execution floor casts them to the convolution's dtype. A model converted
    with ``.half()`` computes its attention in half precision like the rest.

    The temperature is a persistent buffer, so a checkpoint evaluates at the
    temperature it was trained at; ``TemperatureAnnealingHook`` sets it
    during training.

    Args:
        owner: layer type name, used in error messages.
        in_channels: channels of the pooled input.
        hidden_channels: width of the trunk.
        head_sizes: output width of each head, by name.
        temperature: initial ``tau > 0``.
        norm_cfg: the trunk's norm (see :class:`AttentionTrunk`).
    """

    def __init__(self,
                 owner: str,
                 in_channels: int,
                 hidden_channels: int,
                 head_sizes: Dict[str, int],
                 temperature: float,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.owner = owner
        self.register_buffer(
            'temperature',
            torch.tensor(check_positive(owner, 'temperature', temperature)))
        self.trunk = AttentionTrunk(owner, in_channels, hidden_channels,
                                    norm_cfg)
        self.heads = nn.ModuleDict({
            name: nn.Linear(hidden_channels, size)
            for name, size in head_sizes.items()
        })
        self.reset_parameters()

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(check_positive(self.owner, 'temperature',
                                              value))

    def reset_parameters(self) -> None:
        """Kaiming normal (fan_out) heads with zero bias, as the ODConv
        authors initialise theirs."""
        self.trunk.reset_parameters()
        for head in self.heads.values():
            nn.init.kaiming_normal_(
                head.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(head.bias)

    def logits(self, x: Tensor) -> Dict[str, Tensor]:
        """Every head's output divided by the temperature, ``[B, size]``,
        in the parameters' dtype (see the class docstring)."""
        with full_precision(x):
            hidden = self.trunk(x)
            temperature = self.temperature.to(hidden.dtype)
            return {
                name: head(hidden) / temperature
                for name, head in self.heads.items()
            }

    def forward(self, x: Tensor, fused: bool = False) -> ConvAttentions:
        """``[B, C_in, H, W]`` -> the paper's attentions.

        With ``fused`` (a layer forced to ``execution='triton'``), the MLP
        from the pooled input to the activated heads runs as one Triton
        kernel where it can: no trunk norm, and a CUDA tensor (or the
        interpreter); the same function either way.
        """
        with full_precision(x):
            if fused and self.trunk.norm is None and triton_runnable(x):
                return self.arrange(self._fused_heads(x))
            return self.activate(self.logits(x))

    def _fused_heads(self, x: Tensor) -> Dict[str, Tensor]:
        from ..execution.triton_attention import Head, fused_attention_mlp
        fc = self.trunk.fc
        outputs = fused_attention_mlp(
            x.mean(dim=(2, 3), dtype=fc.weight.dtype), fc.weight, fc.bias,
            self.temperature, [
                Head(head.weight, head.bias, self.head_activation(name))
                for name, head in self.heads.items()
            ])
        return dict(zip(self.heads, outputs))

    def activate(self, logits: Dict[str, Tensor]) -> ConvAttentions:
        """The paper's softmax/sigmoid of each head's logits."""
        return self.arrange({
            name: value.softmax(-1)
            if self.head_activation(name) == 'softmax' else value.sigmoid()
            for name, value in logits.items()
        })

    def head_activation(self, name: str) -> str:
        """``'softmax'`` (over the head's outputs) or ``'sigmoid'``: the
        paper's activation of head ``name``."""
        raise NotImplementedError

    def arrange(self, activated: Dict[str, Tensor]) -> ConvAttentions:
        """The activated heads ``[B, size]`` as :class:`ConvAttentions`."""
        raise NotImplementedError
