"""check_checkpoint_fits: a checkpoint that does not fit the model, or
cannot be read, is refused with one line naming the file and the keys."""
import logging
import os
from collections import OrderedDict

import pytest
import torch
from mmengine.runner.checkpoint import save_checkpoint
from torch import nn

from dynconv_mm.engine.checkpoint_fit import (CheckpointError,
                                              CheckpointMismatchError,
                                              check_checkpoint_fits,
                                              read_checkpoint_shapes,
                                              state_dict_mismatch)


def model(width=4):
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, width, 3), bn=nn.BatchNorm2d(width),
                    head=nn.Linear(width, 2)))


def write(path, state_dict, **extra):
    save_checkpoint(dict(state_dict=state_dict, meta={}, **extra), str(path))
    return str(path)


def test_fitting_checkpoint_passes(tmp_path):
    net = model()
    path = write(tmp_path / 'a.pth', net.state_dict())
    assert not check_checkpoint_fits(model(), path)


def test_runner_key_conventions(tmp_path):
    """As Runner.load_checkpoint reads: a bare state dict works, a
    ``module.`` prefix (a DDP-wrapped save) is dropped, and a missing BN
    ``num_batches_tracked`` (older checkpoints) is not counted."""
    state = model().state_dict()
    del state['bn.num_batches_tracked']
    prefixed = OrderedDict(('module.' + k, v) for k, v in state.items())
    torch.save(prefixed, tmp_path / 'bare.pth')
    assert not check_checkpoint_fits(model(), str(tmp_path / 'bare.pth'))


def test_mismatch_names_the_first_keys_of_each_kind(tmp_path):
    state = model(width=8).state_dict()  # every shape but head.bias differs
    del state['head.bias']
    state['extra.weight'] = torch.zeros(1)
    path = write(tmp_path / 'wide.pth', state)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(model(width=4), path)
    message = str(info.value)
    assert path in message and '\n' not in message
    assert ('conv.weight: checkpoint [8, 3, 3, 3], model [4, 3, 3, 3]'
            in message)
    assert '1 key missing from the checkpoint (head.bias)' in message
    assert '1 key the model does not have (extra.weight)' in message
    mismatch = info.value.mismatch
    assert [key for key, _, _ in mismatch.shapes] == [
        'conv.weight', 'conv.bias', 'bn.weight', 'bn.bias', 'bn.running_mean',
        'bn.running_var', 'head.weight'
    ]
    # only the first three of the seven are named
    assert '... 4 more' in message and 'bn.running_var' not in message


def test_partial_load_is_a_warning_when_asked_for(tmp_path):
    path = write(tmp_path / 'wide.pth', model(width=8).state_dict())
    records = []
    logger = logging.getLogger('test_checkpoint_fit')
    logger.addHandler(_ListHandler(records))
    mismatch = check_checkpoint_fits(model(), path, allow_partial=True,
                                     logger=logger)
    assert len(mismatch.shapes) == 7
    assert [(r.levelno, 'partially' in r.getMessage()) for r in records] \
        == [(logging.WARNING, True)]


class _ListHandler(logging.Handler):

    def __init__(self, records):
        super().__init__()
        self.records = records

    def emit(self, record):
        self.records.append(record)


def test_same_shapes_are_read_without_the_model(tmp_path):
    path = write(tmp_path / 'a.pth', model().state_dict())
    shapes = read_checkpoint_shapes(path)
    assert shapes['conv.weight'] == (4, 3, 3, 3)
    assert not state_dict_mismatch(model(), shapes)


class _RunsCode:

    def __reduce__(self):
        return os.system, ('echo pwned', )


@pytest.mark.parametrize('kind,expected', [
    ('missing', 'can not be found'),
    ('truncated', 'failed finding central directory'),
    ('garbage', 'refused it'),
    ('unsafe', 'GLOBAL posix.system'),
    ('tensor', 'holds a Tensor, not a state dict'),
])
def test_unreadable_file_is_one_line_naming_it(tmp_path, kind, expected):
    path = str(tmp_path / f'{kind}.pth')
    good = write(tmp_path / 'good.pth', model().state_dict())
    if kind == 'truncated':
        with open(good, 'rb') as f:
            data = f.read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
    elif kind == 'garbage':
        with open(path, 'w') as f:
            f.write('not a checkpoint\n')
    elif kind == 'unsafe':
        torch.save(dict(state_dict=model().state_dict(), x=_RunsCode()), path)
    elif kind == 'tensor':
        torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_fits(model(), path)
    message = str(info.value)
    assert path in message and expected in message and '\n' not in message
    assert not isinstance(info.value, CheckpointMismatchError)
