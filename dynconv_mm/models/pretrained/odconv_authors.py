"""Import the ODConv authors' released ImageNet checkpoints (Li, Zhou, Yao,
"Omni-Dimensional Dynamic Convolution", ICLR 2022) into our backbones.

Their layout, per dynamic conv ``<conv>``:

* ``<conv>.weight`` ``[K, C_out, C_in/groups, kh, kw]`` (``K = 1`` may also
  come as ``[C_out, C_in/groups, kh, kw]``);
* ``<conv>.attention.fc.weight`` ``[h, C_in, 1, 1]`` (a 1x1 conv without
  bias), ``<conv>.attention.bn.{weight, bias, running_mean, running_var,
  num_batches_tracked}``;
* the heads, 1x1 convs with bias: ``channel_fc`` ``[C_in, h, 1, 1]``,
  ``filter_fc`` ``[C_out, h, 1, 1]`` (absent for a depthwise conv),
  ``spatial_fc`` ``[kh*kw, h, 1, 1]`` (absent for 1x1), ``kernel_fc``
  ``[K, h, 1, 1]`` (absent for ``K = 1``);

the static layers (stem, BNs, downsample projections, classifier) keep
torchvision's names (ResNet ``layer1.0.conv2``; MobileNetV2 ``features.N``,
renamed here to mmdet's). Files come from ``DistributedDataParallel``
(keys may start with ``module.``), the state dict possibly under
``state_dict``. The temperature is not stored: their networks finish
ImageNet training (and fine-tune) at ``tau = 1``, which the converted
checkpoint records in every attention's ``temperature`` buffer.

Their attention is ``avgpool -> fc -> BN -> ReLU -> heads``. Into a layer
built with ``attention_norm_cfg=dict(type='BN')`` (or ``SyncBN``) the BN is
copied as it is. Into our default layer (no norm, FC with bias) the BN's
running statistics are folded into the FC -- ``W' = gamma / sqrt(var +
eps) * W``, ``b' = beta - gamma * mean / sqrt(var + eps)`` -- which is exact
in eval mode (their BN uses batch statistics when training, ours has none
to use). ``eps`` is not stored in a checkpoint: their ``nn.BatchNorm2d``
default, ``1e-5``, unless told otherwise.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ...layers import DynamicConv2dBase, ODConv2d
from .checkpoint_layouts import (CLASSIFIER_PREFIXES, select_model_keys,
                                 to_model_names, unwrap_state_dict)

#: Their head names -> ours.
AUTHORS_HEADS = {
    'channel_fc': 'input',
    'filter_fc': 'output',
    'spatial_fc': 'spatial',
    'kernel_fc': 'kernel'
}
_BN_ENTRIES = ('weight', 'bias', 'running_mean', 'running_var')
_MAX_LISTED = 20


@dataclass
class ConversionReport:
    """What :func:`convert_odconv_authors_state_dict` did."""

    layout: str  # their key names: 'ours' (= torchvision ResNet) or
    # 'torchvision' (MobileNetV2 features.N)
    odconv_layers: List[str] = field(default_factory=list)
    folded_bn: List[str] = field(default_factory=list)
    copied_bn: List[str] = field(default_factory=list)
    not_placed: List[str] = field(default_factory=list)  # their keys

    def summary(self) -> str:
        names = {
            'ours': 'torchvision ResNet names, as ours',
            'torchvision': 'torchvision MobileNet names, renamed'
        }
        text = (f'{len(self.odconv_layers)} ODConv layers converted '
                f'({names.get(self.layout, self.layout)})')
        if self.folded_bn:
            text += (f'; attention BN folded into the FC in '
                     f'{len(self.folded_bn)} (exact in eval mode)')
        if self.copied_bn:
            text += f'; attention BN copied in {len(self.copied_bn)}'
        text += (
            f'; {len(self.not_placed)} of their keys not placed' +
            (': ' + ', '.join(self.not_placed) if self.not_placed else ''))
        return text


def _one_by_one(tensor: Tensor, key: str, rows: int, cols: int) -> Tensor:
    """A 1x1 conv weight ``[rows, cols, 1, 1]`` (or already ``[rows,
    cols]``) as a linear weight."""
    if tuple(tensor.shape) in ((rows, cols, 1, 1), (rows, cols)):
        return tensor.reshape(rows, cols)
    raise ValueError(f'{key}: shape {list(tensor.shape)}, expected '
                     f'[{rows}, {cols}, 1, 1]')


def _take(theirs: Dict[str, Tensor], key: str, used: set) -> Tensor:
    if key not in theirs:
        raise ValueError(f'{key} is missing from the checkpoint')
    used.add(key)
    return theirs[key]


def _convert_odconv(name: str, conv: ODConv2d, theirs: Dict[str, Tensor],
                    own: Dict[str, Tensor], out: Dict[str, Tensor], used: set,
                    bn_eps: float, temperature: float,
                    report: ConversionReport) -> None:
    """Fill ``out`` with ``conv``'s tensors from their keys (``used``
    collects the keys read)."""
    p = f'{name}.' if name else ''  # the model itself may be the conv
    weight = _take(theirs, f'{p}weight', used)
    bank_shape = tuple(conv.weight.shape)
    if tuple(weight.shape) == bank_shape[1:] and conv.num_kernels == 1:
        weight = weight.unsqueeze(0)
    if tuple(weight.shape) != bank_shape:
        raise ValueError(f'{p}weight: shape {list(weight.shape)}, our '
                         f'{conv.layer_type} needs {list(bank_shape)}')
    out[f'{p}weight'] = weight
    if conv.bias is not None:  # their ODConv has none: zero keeps it exact
        out[f'{p}bias'] = torch.zeros_like(own[f'{p}bias'])
    src = dst = f'{p}attention'
    trunk = conv.attention.trunk
    hidden, in_channels = trunk.fc.weight.shape
    fc = _one_by_one(_take(theirs, f'{src}.fc.weight', used),
                     f'{src}.fc.weight', hidden, in_channels).to(torch.float64)
    bn = {e: _take(theirs, f'{src}.bn.{e}', used) for e in _BN_ENTRIES}
    for entry, value in bn.items():
        if tuple(value.shape) != (hidden, ):
            raise ValueError(f'{src}.bn.{entry}: shape {list(value.shape)}, '
                             f'expected [{hidden}]')
    tracked = f'{src}.bn.num_batches_tracked'
    if tracked in theirs:
        used.add(tracked)
    if trunk.norm is None:
        scale = bn['weight'].double() / (bn['running_var'].double() +
                                         bn_eps).sqrt()
        out[f'{dst}.trunk.fc.weight'] = scale[:, None] * fc
        out[f'{dst}.trunk.fc.bias'] = (bn['bias'].double() -
                                       scale * bn['running_mean'].double())
        report.folded_bn.append(name)
    elif isinstance(trunk.norm, _BatchNorm):
        if abs(trunk.norm.eps - bn_eps) > 1e-12:
            raise ValueError(
                f'{dst}.trunk.norm has eps={trunk.norm.eps} but their BN '
                f'eps is {bn_eps}: copying it would change the function')
        out[f'{dst}.trunk.fc.weight'] = fc
        for entry, value in bn.items():
            out[f'{dst}.trunk.norm.{entry}'] = value
        out[f'{dst}.trunk.norm.num_batches_tracked'] = theirs.get(
            tracked, own[f'{dst}.trunk.norm.num_batches_tracked'])
        report.copied_bn.append(name)
    else:
        raise ValueError(
            f'{name}: our attention norm is {type(trunk.norm).__name__}; '
            "their BatchNorm converts into attention_norm_cfg=None (folded) "
            "or dict(type='BN') (copied)")
    ours = conv.attention.head_slices
    weights, biases = {}, {}
    for their_head, our_head in AUTHORS_HEADS.items():
        key = f'{src}.{their_head}'
        present = f'{key}.weight' in theirs
        if present != (our_head in ours):
            raise ValueError(
                f'{name}: their checkpoint {"has" if present else "lacks"} '
                f'{key} but our layer {"lacks" if present else "has"} the '
                f'{our_head} head: the layers differ (kernel size, groups '
                'or num_kernels)')
        if not present:
            continue
        size = ours[our_head].stop - ours[our_head].start
        weights[our_head] = _one_by_one(_take(theirs, f'{key}.weight', used),
                                        f'{key}.weight', size, hidden)
        biases[our_head] = _take(theirs, f'{key}.bias', used)
        if tuple(biases[our_head].shape) != (size, ):
            raise ValueError(f'{key}.bias: shape '
                             f'{list(biases[our_head].shape)}, expected '
                             f'[{size}]')
    # our heads are one Linear, side by side in head_slices' order
    out[f'{dst}.heads.weight'] = torch.cat([weights[n] for n in ours])
    out[f'{dst}.heads.bias'] = torch.cat([biases[n] for n in ours])
    out[f'{dst}.temperature'] = torch.full_like(own[f'{dst}.temperature'],
                                                temperature)
    report.odconv_layers.append(name)


def convert_odconv_authors_state_dict(
    state_dict: Dict[str, Tensor],
    model: nn.Module,
    bn_eps: float = 1e-5,
    temperature: float = 1.0,
    source: str = 'checkpoint'
) -> Tuple[Dict[str, Tensor], 'ConversionReport']:
    """Convert the authors' ``state_dict`` into ``model``'s (a backbone
    with ``ODConv`` layers where their network has them).

    Returns ``(state_dict, report)``: a complete state dict of ``model``
    (every tensor in the model's dtype, loadable with ``strict=True``) and
    a :class:`ConversionReport` listing every key of theirs that could not
    be placed (their classifier, at least). Raises ``ValueError`` naming
    the keys when a tensor of ``model`` cannot be filled.
    """
    own = model.state_dict()
    owner = f'{type(model).__name__} from {source}'
    theirs, left_out = select_model_keys(state_dict, list(own), None, owner)
    layout, theirs = to_model_names(theirs, model, list(own), owner)
    report = ConversionReport(layout=layout)
    out: Dict[str, Tensor] = {}
    used: set = set()
    problems: List[str] = []
    dynamic: List[str] = []  # key prefixes the dynamic layers own
    for name, conv in model.named_modules():
        if not isinstance(conv, DynamicConv2dBase):
            continue
        dynamic.append(f'{name}.' if name else '')
        if not isinstance(conv, ODConv2d):
            problems.append(f'{name} is a {conv.layer_type}; the authors\' '
                            'checkpoints hold ODConv layers')
            continue
        try:
            _convert_odconv(name, conv, theirs, own, out, used, bn_eps,
                            temperature, report)
        except ValueError as error:
            problems.append(f'{name}: {error}')
    missing: List[str] = []
    for key, value in own.items():
        if key.startswith(tuple(dynamic)):
            continue  # converted above, or reported there
        their: Optional[Tensor] = theirs.get(key)
        if their is None:
            if key.endswith('num_batches_tracked'):
                out[key] = value
            else:
                missing.append(key)
            continue
        used.add(key)
        if tuple(their.shape) != tuple(value.shape):
            problems.append(f'{key}: shape {list(their.shape)}, ours '
                            f'{list(value.shape)}')
            continue
        out[key] = their
    problems += [f'{key} is not in the checkpoint' for key in missing]
    if problems:
        shown = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            shown.append(f'... and {len(problems) - _MAX_LISTED} more')
        raise ValueError(f'{owner}: cannot convert the ODConv authors\' '
                         'checkpoint:\n  ' + '\n  '.join(shown))
    report.not_placed = sorted(left_out + [k for k in theirs if k not in used])
    converted = {
        key: out[key].to(dtype=value.dtype, device=value.device)
        for key, value in own.items()
    }
    return converted, report


def _plain(value: object) -> object:
    """Dicts, lists, numbers and strings only (what ``torch.load`` with
    ``weights_only=True`` reads back), e.g. from a ``ConfigDict``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def convert_odconv_authors_checkpoint(
        src: str,
        dst: str,
        backbone_cfg: dict,
        bn_eps: float = 1e-5,
        temperature: float = 1.0) -> ConversionReport:
    """Read the authors' checkpoint ``src`` (a path or URL, read by
    mmengine's ``CheckpointLoader``), convert it into the backbone that
    ``backbone_cfg`` builds (its ``init_cfg`` is ignored) and save
    ``{'state_dict': ..., 'meta': ...}`` to ``dst``, which a config loads
    with ``init_cfg=dict(type='Pretrained', checkpoint=dst)``."""
    state_dict = unwrap_state_dict(
        CheckpointLoader.load_checkpoint(src, map_location='cpu'), src)
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    model = MODELS.build(cfg)
    converted, report = convert_odconv_authors_state_dict(
        state_dict, model, bn_eps, temperature, src)
    model.load_state_dict(converted, strict=True)
    torch.save(
        {
            'state_dict': converted,
            'meta': {
                'converted_from': src,
                'converter': 'dynconv_mm odconv_authors_to_dynconv_mm',
                'backbone': _plain(cfg),
                'bn_eps': bn_eps,
                'temperature': temperature,
                'not_placed': report.not_placed,
            }
        }, dst)
    return report


def classifier_keys(keys: List[str]) -> List[str]:
    """The keys among ``keys`` that belong to an ImageNet classifier."""
    return [k for k in keys if k.startswith(CLASSIFIER_PREFIXES)]
