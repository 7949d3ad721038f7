"""Pieces every attention of the three papers shares: the temperature, the
pooled-MLP trunk, and running both in full precision under autocast."""
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..execution import ConvAttentions
from ..execution.attentions import (autocast_enabled, channel_view,
                                    global_average_pool)
from ..execution.cpu_ops import cpu_attention_applies, cpu_attention_heads
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


def in_full_precision(x: Tensor, run: Callable[..., Any], *args: Any) -> Any:
    """``run(*args)`` with autocast off on ``x``'s device: the attention's
    logits, softmax and sigmoid run in its parameters' dtype. Under fp16
    autocast a logit over 65504 (e.g. 700 at temperature 0.01) would be
    inf and the softmax NaN."""
    # A context only where autocast is on: at batch-1 inference every
    # Python call around the attention's handful of small ops counts
    # (is_cpu first: building x.device costs ~0.4 us).
    device = 'cpu' if x.is_cpu else x.device.type
    if autocast_enabled(device):
        with torch.autocast(device_type=device, enabled=False):
            return run(*args)
    return run(*args)


def module_entry(module: nn.Module, name: str) -> Any:
    """``getattr(module, name)`` for a parameter, buffer or submodule, read
    from the module's own tables: ~0.08 us where ``nn.Module.__getattr__``
    takes ~0.9. At batch-1 inference a layer reads a dozen, in a forward of
    a few tens of microseconds. (``getattr`` where the name is in none of
    them, e.g. a parametrized weight, which is a property.)"""
    for table in (module._parameters, module._buffers, module._modules):
        if name in table:
            return table[name]
    return getattr(module, name)


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
        # Pool straight into the FC's dtype (float32 under autocast). The
        # FC by its parameters, not its module call: at batch 1 each call's
        # Python costs about as much as the product.
        fc = self.fc
        hidden = F.linear(global_average_pool(x, fc.weight.dtype),
                          fc.weight, fc.bias)
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
            # [B, Hd, 1, 1] by a view (indexing with None: two ops), and
            # the ReLU on the norm's output before it is flattened: in place
            # on a view of it, autograd would copy the whole for backward
            # (CopySlices: nine more ops in a training step)
            return self.norm(channel_view(hidden)).relu_().flatten(1)
        return torch.relu_(hidden)

    def eval_batch_norm(self) -> Optional[tuple]:
        """The trunk's norm as the compiled CPU attention takes it:
        ``(None, 0.0)`` without one; ``((running_mean, running_var,
        weight, bias), eps)`` for a BatchNorm that normalises by its
        running statistics (eval mode); ``None`` for any other norm or
        mode (the attention then runs in PyTorch)."""
        norm = module_entry(self, 'norm')
        if norm is None:
            return None, 0.0
        if not isinstance(norm, _BatchNorm) or norm.training:
            return None
        mean = module_entry(norm, 'running_mean')
        if mean is None:
            return None
        return (mean, module_entry(norm, 'running_var'),
                module_entry(norm, 'weight'),
                module_entry(norm, 'bias')), norm.eps

    @property
    def norm_cfg_type(self) -> str:
        return type(self.norm).__name__


class DynamicAttention(nn.Module):
    """Base of the attention modules: a trunk, linear heads on it, and the
    temperature ``tau`` that divides every head's logits before its
    softmax/sigmoid.

    The heads are one ``nn.Linear`` (``heads``) whose output rows are the
    heads side by side, the sigmoid heads first (:attr:`head_slices` says
    where each is): one matrix product, one division by ``tau`` and one
    sigmoid for all of them, and a softmax per softmax head. At batch-1
    inference a layer's attention is a handful of small ops, so their
    number, not their arithmetic, is the cost (on a GPU, one launch each).
    Checkpoints written when each head was a ``Linear`` of its own
    (``heads.<name>.weight``) load unchanged (:meth:`merge_per_head_entries`).

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
        self.head_sizes = dict(head_sizes)
        # sigmoid heads first: one sigmoid call covers them all
        order = sorted(head_sizes,
                       key=lambda name: self.head_activation(name) != 'sigmoid')
        self.head_slices: Dict[str, slice] = {}
        start = 0
        for name in order:
            self.head_slices[name] = slice(start, start + head_sizes[name])
            start += head_sizes[name]
        self.num_sigmoid_outputs = sum(
            size for name, size in head_sizes.items()
            if self.head_activation(name) == 'sigmoid')
        self.head_widths = [rows.stop - rows.start
                            for rows in self.head_slices.values()]
        self.heads = nn.Linear(hidden_channels, start)
        self._register_load_state_dict_pre_hook(_merge_per_head_tensors,
                                                with_module=True)
        self.reset_parameters()

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(check_positive(self.owner, 'temperature',
                                              value))

    def head_parameters(self, name: str) -> Tuple[Tensor, Tensor]:
        """Head ``name``'s ``weight [size, hidden]`` and ``bias [size]``:
        views of :attr:`heads`' parameters."""
        rows = self.head_slices[name]
        return self.heads.weight[rows], self.heads.bias[rows]

    def reset_parameters(self) -> None:
        """Kaiming normal (fan_out, i.e. each head's own width) heads with
        zero bias, as the ODConv authors initialise theirs."""
        self.trunk.reset_parameters()
        with torch.no_grad():
            for name in self.head_sizes:  # the papers' order of the heads
                weight, bias = self.head_parameters(name)
                nn.init.kaiming_normal_(
                    weight, mode='fan_out', nonlinearity='relu')
                bias.zero_()

    def merge_per_head_entries(self, entries: Dict[str, Any], prefix: str,
                               merge: Callable[[List[Any]], Any]) -> None:
        """Replace, in ``entries`` (a state dict, or a map of its keys to
        shapes), the per-head ``{prefix}heads.<name>.weight`` / ``.bias``
        of checkpoints written when each head was a ``Linear`` of its own
        by the one ``{prefix}heads.weight`` / ``.bias``. ``merge`` joins a
        list of entries in :attr:`head_slices`' order, or returns ``None``
        when they cannot be joined (then they are left as they are, and
        loading reports them)."""
        for kind in ('weight', 'bias'):
            merged_key = f'{prefix}heads.{kind}'
            keys = [f'{prefix}heads.{name}.{kind}' for name in self.head_slices]
            if merged_key in entries or not all(k in entries for k in keys):
                continue
            merged = merge([entries[k] for k in keys])
            if merged is not None:
                for key in keys:
                    del entries[key]
                entries[merged_key] = merged

    def logits(self, x: Tensor) -> Dict[str, Tensor]:
        """Every head's output divided by the temperature, ``[B, size]``,
        in the parameters' dtype (see the class docstring)."""
        return self.split_heads(in_full_precision(x, self._logits, x))

    def _logits(self, x: Tensor) -> Tensor:
        """All heads' logits over ``tau``, side by side: ``[B, total]``."""
        hidden = self.trunk(x)
        heads = self.heads
        return F.linear(hidden, heads.weight, heads.bias).div_(
            self.temperature.to(hidden.dtype))

    def forward(self, x: Tensor, fused: bool = False) -> ConvAttentions:
        """``[B, C_in, H, W]`` -> the paper's attentions.

        With ``fused`` (a layer forced to ``execution='triton'``), the MLP
        from the pooled input to the activated heads runs as one Triton
        kernel where it can: no trunk norm, and a CUDA tensor (or the
        interpreter); the same function either way.
        """
        if fused and self.trunk.norm is None and triton_runnable(x):
            return self.arrange(in_full_precision(x, self._fused_heads, x))
        attentions = self.compiled_attentions(x)
        if attentions is not None:
            return attentions
        return self.arrange(in_full_precision(x, self._activated, x))

    def compiled_attentions(self, x: Tensor) -> Optional[ConvAttentions]:
        """The attentions by the compiled CPU op
        (:func:`~dynconv_mm.execution.cpu_ops.cpu_attention_heads`, the
        same function) where it runs them: not in training mode (see
        ``cpu_ops`` on a reentrant checkpoint), autograd off, ``x`` as the
        op takes it, no trunk norm or an eval-mode BatchNorm; ``None``
        otherwise."""
        if self.training:
            return None
        trunk = module_entry(self, 'trunk')
        fc = module_entry(trunk, 'fc')
        trunk_weight = module_entry(fc, 'weight')
        if not cpu_attention_applies(x, trunk_weight):
            return None
        norm = trunk.eval_batch_norm()
        if norm is None:
            return None
        heads = module_entry(self, 'heads')
        return self.arrange(dict(zip(
            self.head_slices,
            cpu_attention_heads(x, trunk_weight, module_entry(fc, 'bias'),
                                *norm, module_entry(heads, 'weight'),
                                module_entry(heads, 'bias'),
                                module_entry(self, 'temperature'),
                                self.num_sigmoid_outputs,
                                self.head_widths))))

    def _activated(self, x: Tensor) -> Dict[str, Tensor]:
        return self.activate(self._logits(x))

    def _fused_heads(self, x: Tensor) -> Dict[str, Tensor]:
        from ..execution.triton_attention import Head, fused_attention_mlp
        fc = self.trunk.fc
        outputs = fused_attention_mlp(
            global_average_pool(x, fc.weight.dtype), fc.weight, fc.bias,
            self.temperature, [
                Head(*self.head_parameters(name), self.head_activation(name))
                for name in self.head_slices
            ])
        return dict(zip(self.head_slices, outputs))

    def activate(self, logits: Tensor) -> Dict[str, Tensor]:
        """The paper's activation of each head, from all heads' logits
        ``[B, total]``: one sigmoid over the sigmoid heads, a softmax over
        each softmax head."""
        sigmoid = self.num_sigmoid_outputs
        if sigmoid == logits.shape[1]:  # every head a sigmoid: one op
            # in place at inference only: under autograd, AOTAutograd's
            # partitioner (torch 2.14) fails on a split of an in-place
            # sigmoid inside a checkpointed region (DyNet's shared
            # coefficients, compiled)
            return self.split_heads(logits.sigmoid() if logits.requires_grad
                                    else logits.sigmoid_())
        activated = logits[:, :sigmoid].sigmoid() if sigmoid else None
        return {
            name: activated[:, rows] if rows.stop <= sigmoid else
            logits[:, rows].softmax(-1)
            for name, rows in self.head_slices.items()
        }

    def split_heads(self, outputs: Tensor) -> Dict[str, Tensor]:
        """All heads' outputs ``[B, total]`` as views ``[B, size]``, by
        name (one split, not a slice per head)."""
        return dict(zip(self.head_slices,
                        outputs.split_with_sizes(self.head_widths, 1)))

    def head_activation(self, name: str) -> str:
        """``'softmax'`` (over the head's outputs) or ``'sigmoid'``: the
        paper's activation of head ``name``."""
        raise NotImplementedError

    def arrange(self, activated: Dict[str, Tensor]) -> ConvAttentions:
        """The activated heads ``[B, size]`` as :class:`ConvAttentions`."""
        raise NotImplementedError


def concat_head_shapes(shapes: List[Any]) -> Optional[Tuple[int, ...]]:
    """The shape of per-head entries joined along the output rows, or
    ``None`` if they do not line up (see
    :meth:`DynamicAttention.merge_per_head_entries`)."""
    if not all(isinstance(s, tuple) and len(s) >= 1 for s in shapes) or \
            len({s[1:] for s in shapes}) != 1:
        return None
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def concat_head_tensors(tensors: List[Any]) -> Optional[Tensor]:
    """Per-head tensors joined along the output rows, or ``None`` where
    :func:`concat_head_shapes` says they do not line up."""
    if not all(isinstance(t, Tensor) for t in tensors) or concat_head_shapes(
            [tuple(t.shape) for t in tensors]) is None:
        return None
    return torch.cat(tensors)


def merge_model_per_head_entries(model: nn.Module, entries: Dict[str, Any],
                                 merge: Callable[[List[Any]], Any]) -> None:
    """:meth:`DynamicAttention.merge_per_head_entries` for every attention
    of ``model``, ``entries`` keyed by the model's state-dict names."""
    for name, module in model.named_modules():
        if isinstance(module, DynamicAttention):
            module.merge_per_head_entries(entries,
                                          f'{name}.' if name else '', merge)


def _merge_per_head_tensors(module: DynamicAttention, state_dict: dict,
                            prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: per-head checkpoint tensors -> ``heads``."""
    module.merge_per_head_entries(state_dict, prefix, concat_head_tensors)
