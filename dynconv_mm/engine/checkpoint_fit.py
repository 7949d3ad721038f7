"""Whether a checkpoint fits a model, before anything is evaluated with it.

mmengine's ``Runner.load_checkpoint`` loads with ``strict=False``: a
checkpoint whose keys or shapes differ from the model (``num_kernels=4`` in
the file, 2 in the config) only logs "size mismatch", leaves those
parameters as initialised, and the metrics come from a partly random model.
:func:`read_checkpoint_shapes` reads a file the way the Runner will (mmengine's
loader, so URLs and ``open-mmlab://`` names work, and the ``state_dict``
key and ``module.`` prefix are handled as it does), turning any failure into
one line naming the file; :func:`state_dict_mismatch` compares it with a
model; :func:`check_checkpoint_fits` does both and refuses a mismatch unless
partial loading is asked for.
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from ..layers import concat_head_shapes, merge_model_per_head_entries

# Runner.load_checkpoint's default revise_keys
_REVISE_KEYS = [(r'^module.', '')]
Shape = Optional[Tuple[int, ...]]


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or does not fit the model. The
    message is one line that names the file."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that does not fit the model."""

    def __init__(self, message: str, mismatch: 'StateDictMismatch'):
        super().__init__(message)
        self.mismatch = mismatch


@dataclass
class StateDictMismatch:
    """Keys of a checkpoint's state dict that do not fit a model, each in
    the order the model (or, for unexpected keys, the file) lists them."""
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    # (key, shape in the checkpoint, shape in the model)
    shapes: List[Tuple[str, Shape, Shape]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def summary(self, limit: int = 3) -> str:
        """One line naming the first ``limit`` keys of each kind."""

        def part(items: List[str], noun: str, plural: str) -> str:
            shown = '; '.join(items[:limit])
            more = f'; ... {len(items) - limit} more' \
                if len(items) > limit else ''
            return (f'{len(items)} {noun if len(items) == 1 else plural} '
                    f'({shown}{more})')

        parts = []
        if self.shapes:
            parts.append(part(
                [f'{key}: checkpoint {_fmt(a)}, model {_fmt(b)}'
                 for key, a, b in self.shapes],
                'shape mismatch', 'shape mismatches'))
        if self.missing:
            parts.append(part(self.missing, 'key missing from the checkpoint',
                              'keys missing from the checkpoint'))
        if self.unexpected:
            parts.append(part(self.unexpected,
                              'key the model does not have',
                              'keys the model does not have'))
        return ', '.join(parts)


def _fmt(shape: Shape) -> str:
    return 'non-tensor' if shape is None else str(list(shape))


def _shape(value: object) -> Shape:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _one_line(error: BaseException) -> str:
    """The informative line of a load error. torch.load wraps what its
    weights-only unpickler refused (a global, an opcode of a file that is
    no pickle) in a page of advice; the refusal is what matters."""
    text = str(error)
    prefix, marker = 'Weights only load failed.', 'WeightsUnpickler error:'
    if text.startswith(prefix):
        body = text.split('Check the documentation of torch.load')[0]
        if marker in body:  # '... error: MESSAGE' or '... error: \n\nMESSAGE'
            lines = body.split(marker, 1)[1].strip().splitlines()
        else:  # 'PREFIX ADVICE\n\nMESSAGE' or 'PREFIX MESSAGE\n ADVICE'
            paragraphs = [p for p in body.split('\n\n') if p.strip()]
            lines = (paragraphs[-1].strip() if len(paragraphs) > 1 else
                     body[len(prefix):].strip()).splitlines()
        detail = lines[0].split('. Please use')[0] if lines else '?'
        return f'torch.load(weights_only=True) refused it: {detail}'
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f'{type(error).__name__}: {lines[0] if lines else repr(error)}'


def read_checkpoint_shapes(filename: str) -> Dict[str, Shape]:
    """``{key: shape}`` of the model weights in checkpoint ``filename``
    (``None`` for a non-tensor entry), keys revised as the Runner does.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, refused by
            ``torch.load(weights_only=True)``, or holds no state dict.
    """
    try:
        checkpoint = _load_checkpoint(filename, map_location='cpu')
    except Exception as error:  # any failure to read is the file's fault
        raise CheckpointError(f'cannot load checkpoint {filename}: '
                              f'{_one_line(error)}') from error
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f'checkpoint {filename} holds a {type(state_dict).__name__}, '
            'not a state dict')
    shapes = {}
    for key, value in state_dict.items():
        for pattern, replacement in _REVISE_KEYS:
            key = re.sub(pattern, replacement, key)
        shapes[key] = _shape(value)
    return shapes


def _unwrap(model: nn.Module) -> nn.Module:
    # what mmengine's load_state_dict looks through
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def state_dict_mismatch(model: nn.Module,
                        shapes: Dict[str, Shape]) -> StateDictMismatch:
    """Compare checkpoint ``shapes`` (from :func:`read_checkpoint_shapes`)
    with ``model``'s state dict. Like mmengine, a missing BN
    ``num_batches_tracked`` is not counted (old checkpoints lack it)."""
    model = _unwrap(model)
    expected = {key: _shape(value)
                for key, value in model.state_dict().items()}
    # per-head attention tensors load into the joined heads (see
    # DynamicAttention.merge_per_head_entries); compare what will load
    shapes = dict(shapes)
    merge_model_per_head_entries(model, shapes, concat_head_shapes)
    mismatch = StateDictMismatch()
    for key, shape in expected.items():
        if key not in shapes:
            if 'num_batches_tracked' not in key:
                mismatch.missing.append(key)
        elif shapes[key] != shape:
            mismatch.shapes.append((key, shapes[key], shape))
    mismatch.unexpected = [key for key in shapes if key not in expected]
    return mismatch


def check_checkpoint_fits(
        model: nn.Module,
        filename: str,
        allow_partial: bool = False,
        shapes: Optional[Dict[str, Shape]] = None,
        logger: Union[str, logging.Logger] = 'current') -> StateDictMismatch:
    """Refuse checkpoint ``filename`` if it does not fit ``model``; with
    ``allow_partial`` log a warning instead (what fits is then loaded, the
    rest keeps its initial values). ``shapes`` saves reading the file again
    when :func:`read_checkpoint_shapes` already has; ``logger`` is
    mmengine's ``print_log`` argument.

    Raises:
        CheckpointError: unreadable; CheckpointMismatchError: a mismatch
            without ``allow_partial``.
    """
    if shapes is None:
        shapes = read_checkpoint_shapes(filename)
    mismatch = state_dict_mismatch(model, shapes)
    if mismatch and not allow_partial:
        raise CheckpointMismatchError(
            f'checkpoint {filename} does not fit the model: '
            f'{mismatch.summary()}', mismatch)
    if mismatch:
        print_log(f'loading checkpoint {filename} partially: '
                  f'{mismatch.summary()}; those parameters keep their '
                  'initial values', logger=logger, level=logging.WARNING)
    return mismatch
