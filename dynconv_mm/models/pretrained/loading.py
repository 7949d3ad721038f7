"""Strict loading of pretrained weights into our dynamic backbones.

``init_cfg=dict(type='Pretrained', checkpoint=...)`` on a backbone that
mixes in :class:`PretrainedInitMixin` loads through :func:`load_pretrained`
instead of mmengine's ``load_checkpoint(strict=False)``, which only warns
"size mismatch" and skips a static checkpoint's 4-D kernels where the model
holds ``[K, C_out, C_in/groups, kh, kw]`` banks -- and ``frozen_stages``
then freezes random weights. Here every tensor of the model is accounted
for, or loading fails with an error naming the keys:

* **our layout** (a checkpoint of the same backbone: ours, or one written
  by ``tools/model_converters/odconv_authors_to_dynconv_mm.py``): every key
  with its shape, strictly;
* **a static network** (torchvision or MMPretrain ResNet / MobileNetV2,
  torchvision MobileNetV3, or our backbone built without dynamic convs;
  see :mod:`.checkpoint_layouts` for the names): where the model has a
  dynamic conv and the checkpoint the static conv's 4-D kernel, the
  static -> dynamic initialiser of :mod:`.static_to_dynamic` makes the
  dynamic conv compute the static one exactly (its attention's heads are
  zeroed, its trunk keeps its random init, its temperature the model's);
  everything else (stem, BNs, downsample projections, static stages) is
  copied with its exact shape;
* a checkpoint that mixes both per conv (e.g. a backbone trained with
  some stages static) loads each conv by its own rule;
* anything else -- a missing tensor, a shape that fits neither, a key the
  model does not have -- is refused. The only keys ignored are a
  classifier's (``fc.``, ``classifier.``, ``head.``, ``neck.``) and, when
  the backbone is taken from a larger model by a prefix, the other
  modules' keys; ``num_batches_tracked`` may be missing (older torchvision
  files lack it).

Checkpoint names resolve through mmengine's ``CheckpointLoader`` as usual
(paths, URLs, ``torchvision://resnet50``, ``open-mmlab://``, ``mmcls://``).
"""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from ...layers import (DynamicAttention, DynamicConv2dBase, concat_head_tensors,
                       merge_model_per_head_entries)
from .checkpoint_layouts import (CLASSIFIER_PREFIXES, select_model_keys,
                                 to_model_names, unwrap_state_dict)
from .static_to_dynamic import DEFAULT_PERTURBATION, dynamic_bank_from_static

_MAX_LISTED = 20


@dataclass
class PretrainedLoadReport:
    """What :func:`load_pretrained_state_dict` did."""

    layout: str  # 'ours', 'torchvision' or 'mmpretrain' key names
    loaded: List[str] = field(default_factory=list)  # copied as they are
    from_static: List[str] = field(default_factory=list)  # dynamic convs
    zeroed_attentions: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)  # classifier/others

    def summary(self) -> str:
        names = {
            'ours': "keys named as the model's",
            'torchvision': 'torchvision MobileNet keys renamed',
            'mmpretrain': 'MMPretrain MobileNetV2 keys renamed'
        }
        text = (f'{len(self.loaded)} tensors loaded as they are '
                f'({names.get(self.layout, self.layout)})')
        if self.from_static:
            text += (f', {len(self.from_static)} dynamic convs started from '
                     'the static kernels (attention heads zeroed: exactly '
                     'the static function)')
        if self.ignored:
            text += (f', {len(self.ignored)} keys ignored (not the '
                     f'backbone\'s): {", ".join(self.ignored[:_MAX_LISTED])}' +
                     (' ...' if len(self.ignored) > _MAX_LISTED else ''))
        return text


def _listing(keys: List[str]) -> str:
    """Up to ``_MAX_LISTED`` items, one per line."""
    more = len(keys) - _MAX_LISTED
    return ''.join(f'\n    {key}' for key in keys[:_MAX_LISTED]) + (
        f'\n    ... and {more} more' if more > 0 else '')


def _shape(tensor: Tensor) -> Tuple[int, ...]:
    return tuple(tensor.shape)


def _feeding_attention(
        model: nn.Module, name: str,
        conv: DynamicConv2dBase) -> Tuple[str, DynamicAttention]:
    """The attention module whose output this conv consumes: its own, or
    (DyNet's Dy-ResNet) its residual block's ``coefficients`` module."""
    if conv.attention is not None:
        return f'{name}.attention' if name else 'attention', conv.attention
    parent_name = name.rpartition('.')[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    attention = getattr(parent, 'coefficients', None)
    if not isinstance(attention, DynamicAttention):
        raise ValueError(
            f'{type(model).__name__}: cannot find the module that predicts '
            f'the attention of {name} ({conv.layer_type} without an '
            'attention of its own)')
    prefix = f'{parent_name}.coefficients' if parent_name else 'coefficients'
    return prefix, attention


def load_pretrained_state_dict(
        model: nn.Module,
        state_dict: Dict[str, Tensor],
        prefix: Optional[str] = None,
        perturbation: float = DEFAULT_PERTURBATION,
        seed: int = 0,
        source: str = 'checkpoint') -> PretrainedLoadReport:
    """Load ``state_dict`` into ``model`` by the rules of the module
    docstring, or raise a ``ValueError`` naming every key that does not
    fit (nothing is written then).

    Args:
        model: the backbone.
        state_dict: the checkpoint's tensors, or a dict holding them under
            ``state_dict`` (``module.`` and, when no key fits without it,
            ``backbone.`` are stripped).
        prefix: take only the keys starting with it, stripped (mmengine's
            ``Pretrained`` ``prefix``).
        perturbation, seed: of the static -> dynamic initialiser's
            symmetry-breaking deltas (see :mod:`.static_to_dynamic`).
        source: the checkpoint's name, for messages.
    """
    owner = f'{type(model).__name__} from {source}'
    own = model.state_dict()
    model_keys = list(own)
    state_dict = unwrap_state_dict(state_dict, owner)
    state_dict, left_out = select_model_keys(state_dict, model_keys, prefix,
                                             owner)
    layout, state_dict = to_model_names(state_dict, model, model_keys, owner)
    # checkpoints from when each attention head was a Linear of its own
    merge_model_per_head_entries(model, state_dict, concat_head_tensors)
    report = PretrainedLoadReport(layout=layout, ignored=list(left_out))
    target: Dict[str, Tensor] = {}
    handled: set = set()  # model keys decided below
    consumed: set = set()  # checkpoint keys used
    problems: List[str] = []
    generator = torch.Generator().manual_seed(seed)

    # 1. Dynamic convs given a static kernel, and the attentions to zero.
    zero: Dict[str, DynamicAttention] = {}
    keep: Dict[str, str] = {}  # attention -> conv loaded as it is
    for name, conv in model.named_modules():
        if not isinstance(conv, DynamicConv2dBase):
            continue
        p = f'{name}.' if name else ''  # the model itself may be the conv
        key = f'{p}weight'
        attention_name, attention = _feeding_attention(model, name, conv)
        weight = state_dict.get(key)
        if weight is None or weight.dim() != 4:  # banks are 5-D
            keep[attention_name] = name  # loads by the generic rules
            continue
        bias = state_dict.get(f'{p}bias')
        try:
            bank, biases = dynamic_bank_from_static(conv, weight, bias,
                                                    perturbation, generator,
                                                    name)
        except ValueError as error:
            problems.append(str(error))
            continue
        target[key] = bank
        handled.add(key)
        consumed.add(key)
        if conv.bias is not None:
            target[f'{p}bias'] = biases
            handled.add(f'{p}bias')
        if bias is not None:
            consumed.add(f'{p}bias')
        zero[attention_name] = attention
        report.from_static.append(name)
    for attention_name, attention in zero.items():
        if attention_name in keep:
            problems.append(
                f'{attention_name} feeds {keep[attention_name]}, whose '
                'kernels load as they are, and convs started from static '
                'kernels: it cannot be both loaded and zeroed')
            continue
        for local_name in attention.state_dict():
            key = f'{attention_name}.{local_name}'
            if key in state_dict:
                problems.append(
                    f'{key} is in the checkpoint, but the conv it feeds '
                    'gets a static kernel: a dynamic checkpoint with static '
                    'kernels fits neither layout')
            if local_name.startswith('heads.'):
                target[key] = torch.zeros_like(own[key])
            else:
                # The trunk keeps its init (it cannot change the output
                # while the heads are zero), the temperature the model's.
                target[key] = own[key]
            handled.add(key)
        report.zeroed_attentions.append(attention_name)

    # 2. Every other tensor of the model: by name, with its exact shape.
    missing, mismatched = [], []
    for key in model_keys:
        if key in handled:
            continue
        if key not in state_dict:
            if key.endswith('num_batches_tracked'):
                target[key] = own[key]
            else:
                missing.append(key)
            continue
        consumed.add(key)
        if _shape(state_dict[key]) != _shape(own[key]):
            mismatched.append(f'{key}: checkpoint '
                              f'{list(state_dict[key].shape)}, model '
                              f'{list(own[key].shape)}')
            continue
        target[key] = state_dict[key]
        report.loaded.append(key)
    unexpected = []
    for key in sorted(set(state_dict) - consumed):
        if key.startswith(CLASSIFIER_PREFIXES):
            report.ignored.append(key)
        else:
            unexpected.append(key)
    if missing:
        problems.append(f'{len(missing)} model tensors are not in the '
                        f'checkpoint:{_listing(missing)}')
    if mismatched:
        problems.append(f'{len(mismatched)} shapes fit neither our layout '
                        f'nor a static conv\'s kernel:{_listing(mismatched)}')
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint keys name nothing in '
                        f'the model:{_listing(unexpected)}')
    if problems:
        raise ValueError(f'{owner} ({layout} layout): cannot load:\n  ' +
                         '\n  '.join(problems))
    model.load_state_dict(target, strict=True)
    return report


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    prefix: Optional[str] = None,
                    map_location: Union[str, torch.device, None] = 'cpu',
                    perturbation: float = DEFAULT_PERTURBATION,
                    seed: int = 0,
                    logger: str = 'current') -> PretrainedLoadReport:
    """Read ``checkpoint`` with mmengine's ``CheckpointLoader`` (paths,
    URLs, ``torchvision://``, ``open-mmlab://``, ``mmcls://``) and load it
    with :func:`load_pretrained_state_dict`; logs what it did."""
    print_log(f'load model from: {checkpoint}', logger=logger)
    loaded = CheckpointLoader.load_checkpoint(checkpoint,
                                              map_location=map_location,
                                              logger=logger)
    state_dict = unwrap_state_dict(loaded, str(checkpoint))
    report = load_pretrained_state_dict(model, state_dict, prefix,
                                        perturbation, seed, str(checkpoint))
    print_log(f'{type(model).__name__}: {report.summary()}', logger=logger)
    return report


_PRETRAINED_OPTIONS = ('checkpoint', 'prefix', 'map_location', 'perturbation',
                       'seed')


def _is_pretrained(cfg: dict) -> bool:
    return cfg.get('type') in ('Pretrained', PretrainedInit)


class PretrainedInitMixin:
    """For backbones (``BaseModule``\\ s): a ``Pretrained`` ``init_cfg`` is
    applied by :func:`load_pretrained` (strict, static -> dynamic where
    the checkpoint is static) instead of mmengine's non-strict loading.

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=None,
    map_location='cpu', perturbation=0.01, seed=0)``; other ``init_cfg``
    entries apply first, as mmengine does, then the checkpoint.
    """

    def init_weights(self) -> None:
        cfgs = self.init_cfg
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        pretrained = [c for c in cfgs or [] if _is_pretrained(c)]
        if not pretrained or getattr(self, '_is_init', False):
            super().init_weights()
            return
        owner = type(self).__name__
        if len(pretrained) > 1:
            raise ValueError(f'{owner}: init_cfg names {len(pretrained)} '
                             'Pretrained checkpoints; give one')
        options = {k: v for k, v in pretrained[0].items() if k != 'type'}
        unknown = sorted(set(options) - set(_PRETRAINED_OPTIONS))
        if unknown or 'checkpoint' not in options:
            raise ValueError(
                f'{owner}: init_cfg={pretrained[0]!r} is invalid: a '
                f'Pretrained init takes {", ".join(_PRETRAINED_OPTIONS)} '
                '(checkpoint required)' +
                (f'; unknown: {", ".join(unknown)}' if unknown else ''))
        saved = self.init_cfg
        top_level = not hasattr(self, '_params_init_info')
        if top_level:
            # What mmengine's top-level init_weights records, so that the
            # init log it dumps is written after loading, not before.
            info = defaultdict(dict)
            for param in self.parameters():
                info[param]['init_info'] = (
                    'The value is the same before and after calling '
                    f'`init_weights` of {owner} ')
                info[param]['tmp_mean_value'] = param.data.mean().cpu()
            for module in self.modules():
                module._params_init_info = info
        self.init_cfg = [c for c in cfgs if not _is_pretrained(c)] or None
        try:
            super().init_weights()
            load_pretrained(self, **options)
            update_init_info(
                self,
                init_info=f'Pretrained (strict, static -> dynamic where '
                f'static): load from {options["checkpoint"]}')
            if top_level:
                self._dump_init_info()
        finally:
            self.init_cfg = saved
            if top_level:
                for module in self.modules():
                    del module._params_init_info
