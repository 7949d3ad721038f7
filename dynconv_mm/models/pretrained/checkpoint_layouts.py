"""Key layouts of the checkpoints our backbones load, and their renaming to
our (mmdet's) module names.

* **ours / mmdet / torchvision ResNet**: ``DynamicResNet`` keeps mmdet's
  names, which are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv2``,
  ``layer2.0.downsample.0``); the ODConv authors' ResNets use them too.
* **MMPretrain**: a classifier's state dict, keys prefixed ``backbone.``
  (the ``head.``/``neck.`` keys are not the backbone's); its ResNet names
  are mmdet's, its MobileNetV2 blocks hold ``conv.0``, ``conv.1``,
  ``conv.2`` (expansion if any, depthwise, projection; ``ConvModule``\\ s).
* **torchvision MobileNetV2** (``features.N``; the ODConv authors'
  OD-MobileNetV2 uses it too): ``features.0`` is the stem, ``features.1``
  .. ``features.17`` the inverted residual blocks in order, whose ``conv``
  sequence holds ``[conv, bn, act]`` for the expansion and the depthwise
  conv, then the projection conv and its BN as two entries; ``features.18``
  the last 1x1; ``classifier.1`` the classifier.
* **torchvision MobileNetV3** (Small/Large, into ``DynamicMobileNetV3``):
  ``features.i.block`` holds ``[expansion, depthwise, SE, projection]``
  (absent ones skipped), ``classifier.*`` the classifier.

A file saved from ``DistributedDataParallel`` prefixes every key with
``module.``; a file may hold the state dict under ``state_dict``.
"""
from typing import Dict, List, Mapping, Optional, Tuple

import torch.nn as nn
from mmdet.models.backbones import MobileNetV2 as MMDetMobileNetV2
from torch import Tensor

#: Key prefixes of the ImageNet classifiers that a backbone does not have:
#: torchvision ResNet ``fc``, torchvision MobileNetV2/V3 ``classifier``,
#: MMPretrain ``head`` (and its ``neck``, outside ``backbone.``).
CLASSIFIER_PREFIXES = ('fc.', 'classifier.', 'head.', 'neck.')


def unwrap_state_dict(checkpoint: object, source: str) -> Dict[str, Tensor]:
    """The ``{name: tensor}`` dict of a loaded checkpoint (its
    ``state_dict`` entry, or the object itself)."""
    state_dict = checkpoint
    if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    if not isinstance(state_dict, Mapping) or not state_dict or not all(
            isinstance(k, str) and hasattr(v, 'shape')
            for k, v in state_dict.items()):
        raise ValueError(
            f'{source}: not a checkpoint with a state dict (expected a '
            'non-empty {name: tensor} dict, or a dict holding one under '
            '"state_dict")')
    return dict(state_dict)


def strip_prefix(state_dict: Mapping[str, Tensor],
                 prefix: str) -> Dict[str, Tensor]:
    """The entries whose keys start with ``prefix``, with it removed."""
    return {
        key[len(prefix):]: value
        for key, value in state_dict.items() if key.startswith(prefix)
    }


def select_model_keys(state_dict: Mapping[str, Tensor], model_keys: List[str],
                      prefix: Optional[str],
                      source: str) -> Tuple[Dict[str, Tensor], List[str]]:
    """Strip ``module.`` (DDP) and the backbone's prefix; returns the
    backbone's entries and the keys left out (other modules of the saved
    model).

    ``prefix`` given (as in mmengine's ``Pretrained`` init): keep only the
    keys that start with it. Otherwise ``backbone.`` is stripped when no
    key names one of the model's own and some key starts with it
    (MMPretrain classifiers, whole detectors).
    """
    if all(key.startswith('module.') for key in state_dict):
        state_dict = strip_prefix(state_dict, 'module.')
    left_out: List[str] = []
    if prefix is None and not set(model_keys) & set(state_dict) and any(
            key.startswith('backbone.') for key in state_dict):
        prefix = 'backbone.'
    if prefix is not None:
        selected = strip_prefix(state_dict, prefix)
        if not selected:
            raise ValueError(f'{source}: no key starts with prefix '
                             f'{prefix!r} (first keys: '
                             f'{sorted(state_dict)[:5]})')
        left_out = sorted(k for k in state_dict if not k.startswith(prefix))
        state_dict = selected
    return dict(state_dict), left_out


def _longest_prefix_rename(key: str, mapping: Mapping[str, str]) -> str:
    parts = key.split('.')
    for end in range(len(parts) - 1, 0, -1):
        module = '.'.join(parts[:end])
        if module in mapping:
            return '.'.join([mapping[module]] + parts[end:])
    return key


def rename_modules(state_dict: Mapping[str, Tensor],
                   mapping: Mapping[str, str]) -> Dict[str, Tensor]:
    """Rename keys by their longest module-path prefix in ``mapping``
    (their module name -> ours); other keys are kept as they are."""
    return {
        _longest_prefix_rename(key, mapping): value
        for key, value in state_dict.items()
    }


def _conv_norm(mapping: Dict[str, str], theirs: str, ours: str,
               module: nn.Module) -> None:
    """torchvision's ``Conv2dNormActivation`` (``.0`` conv, ``.1`` norm)
    -> an mmcv ``ConvModule`` (``.conv``, ``.bn``/its ``norm_name``)."""
    mapping[f'{theirs}.0'] = f'{ours}.conv'
    mapping[f'{theirs}.1'] = f'{ours}.{module.norm_name}'


def mobilenet_v2_renamings(
        model: MMDetMobileNetV2) -> Dict[str, Dict[str, str]]:
    """Module renamings torchvision / MMPretrain -> mmdet for an mmdet
    ``MobileNetV2`` (or a subclass such as ``DynamicMobileNetV2``), read
    from the built model's blocks (with or without expansion conv)."""
    torchvision: Dict[str, str] = {}
    mmpretrain: Dict[str, str] = {}
    _conv_norm(torchvision, 'features.0', 'conv1', model.conv1)
    index = 1
    for layer_name in model.layers[:-1]:
        for j, block in enumerate(getattr(model, layer_name)):
            ours = f'{layer_name}.{j}'
            theirs = f'features.{index}'
            pieces = (['expand_conv'] if block.with_expand_conv else
                      []) + ['depthwise_conv', 'linear_conv']
            for i, piece in enumerate(pieces):
                mmpretrain[f'{ours}.conv.{i}'] = f'{ours}.{piece}'
                module = getattr(block, piece)
                if piece == 'linear_conv':  # conv and BN as two entries
                    torchvision[f'{theirs}.conv.{i}'] = f'{ours}.{piece}.conv'
                    torchvision[f'{theirs}.conv.{i + 1}'] = \
                        f'{ours}.{piece}.{module.norm_name}'
                else:
                    _conv_norm(torchvision, f'{theirs}.conv.{i}',
                               f'{ours}.{piece}', module)
            index += 1
    last = model.layers[-1]
    _conv_norm(torchvision, f'features.{index}', last, getattr(model, last))
    return {'torchvision': torchvision, 'mmpretrain': mmpretrain}


def mobilenet_v3_renamings(model: nn.Module) -> Dict[str, Dict[str, str]]:
    """Module renaming torchvision ``mobilenet_v3_small``/``_large`` ->
    ``DynamicMobileNetV3``: ``features.0`` the stem, ``features.i.block``
    the i-th block's ``[expansion if any, depthwise, SE (fc1, fc2) if any,
    projection]``, the last ``features.N`` the last 1x1."""
    torchvision: Dict[str, str] = {}
    _conv_norm(torchvision, 'features.0', 'conv1', model.conv1)
    for index, layer_name in enumerate(model.layers[:-1], start=1):
        block = getattr(model, layer_name)
        theirs = f'features.{index}.block'
        j = 0
        for piece in ('expand_conv', 'depthwise_conv', 'se', 'linear_conv'):
            if piece == 'expand_conv' and not block.with_expand_conv or \
                    piece == 'se' and not block.with_se:
                continue
            if piece == 'se':
                torchvision[
                    f'{theirs}.{j}.fc1'] = f'{layer_name}.se.conv1.conv'
                torchvision[
                    f'{theirs}.{j}.fc2'] = f'{layer_name}.se.conv2.conv'
            else:
                _conv_norm(torchvision, f'{theirs}.{j}',
                           f'{layer_name}.{piece}', getattr(block, piece))
            j += 1
    last = model.layers[-1]
    _conv_norm(torchvision, f'features.{len(model.layers)}', last,
               getattr(model, last))
    return {'torchvision': torchvision}


def layout_renamings(model: nn.Module) -> Dict[str, Dict[str, str]]:
    """The foreign layouts a model can load, each as a module renaming to
    the model's names; ``ours`` (no renaming) always comes first."""
    # imported here: the backbones import this package for their init
    from ..backbones.dynamic_mobilenet_v3 import DynamicMobileNetV3
    renamings: Dict[str, Dict[str, str]] = {'ours': {}}
    if isinstance(model, MMDetMobileNetV2):
        renamings.update(mobilenet_v2_renamings(model))
    elif isinstance(model, DynamicMobileNetV3):
        renamings.update(mobilenet_v3_renamings(model))
    return renamings


def to_model_names(state_dict: Mapping[str, Tensor], model: nn.Module,
                   model_keys: List[str],
                   source: str) -> Tuple[str, Dict[str, Tensor]]:
    """Pick the layout under which most checkpoint keys name a model key;
    returns its name and the renamed state dict."""
    wanted = set(model_keys)
    best_name, best, best_hits = '', {}, 0
    for name, mapping in layout_renamings(model).items():
        renamed = rename_modules(state_dict, mapping)
        hits = len(wanted & set(renamed))
        if hits > best_hits:
            best_name, best, best_hits = name, renamed, hits
    if not best_hits:
        raise ValueError(
            f'{source}: none of its keys names a parameter or buffer of '
            f'{type(model).__name__} in any known layout (ours/mmdet, '
            'torchvision, MMPretrain); first checkpoint keys: '
            f'{sorted(state_dict)[:5]}, first model keys: '
            f'{model_keys[:5]}')
    return best_name, best
