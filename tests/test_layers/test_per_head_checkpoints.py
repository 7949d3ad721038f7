"""Checkpoints written when each attention head was a ``Linear`` of its own
(``attention.heads.<name>.weight`` / ``.bias``, dynconv_mm 0.1.0) load into
the joined heads: through ``load_state_dict``, mmengine's loader, the
checkpoint-fit check of ``tools/test.py`` and the strict pretrained loader.
The per-head layout is built here from the papers' head order and sizes,
not from the layer's own bookkeeping."""
from collections import OrderedDict

import pytest
import torch
from mmcv.cnn import build_conv_layer
from mmengine.runner.checkpoint import load_state_dict, save_checkpoint
from torch import nn

from dynconv_mm.engine.checkpoint_fit import (CheckpointMismatchError,
                                              check_checkpoint_fits)
from dynconv_mm.models.pretrained import load_pretrained_state_dict

# (cfg, the heads of a 16 -> 32 3x3 conv in the 0.1.0 order, their sizes)
LAYERS = {
    'ODConv 4x': (dict(type='ODConv', num_kernels=4),
                  [('input', 16), ('output', 32), ('spatial', 9),
                   ('kernel', 4)]),
    'ODConv 1x': (dict(type='ODConv', num_kernels=1),
                  [('input', 16), ('output', 32), ('spatial', 9)]),
    'DynamicConv': (dict(type='DynamicConv', num_kernels=4),
                    [('kernel', 4)]),
    'DyNetConv': (dict(type='DyNetConv', num_kernels=6), [('kernel', 192)]),
}


def build(name, seed):
    torch.manual_seed(seed)
    cfg, _ = LAYERS[name]
    return build_conv_layer(cfg, 16, 32, 3, padding=1).double().eval()


def per_head_layout(state_dict, heads, prefix='attention.'):
    """The 0.1.0 state dict: ``heads.weight`` cut into one entry per head."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if key in (f'{prefix}heads.weight', f'{prefix}heads.bias'):
            kind = key.rsplit('.', 1)[1]
            parts = value.split([size for _, size in heads])
            for (head, _), part in zip(heads, parts):
                out[f'{prefix}heads.{head}.{kind}'] = part.clone()
        else:
            out[key] = value
    return out


@pytest.mark.parametrize('name', list(LAYERS))
def test_per_head_state_dict_loads_into_joined_heads(name):
    source, target = build(name, 0), build(name, 1)
    old = per_head_layout(source.state_dict(), LAYERS[name][1])
    assert 'attention.heads.weight' not in old
    target.load_state_dict(old)  # strict
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    # mmengine's loader (the Runner's) goes through the same hook
    third = build(name, 2)
    load_state_dict(third, per_head_layout(source.state_dict(),
                                           LAYERS[name][1]), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(third(x), source(x), rtol=0, atol=0)


def test_incomplete_per_head_state_dict_is_refused_naming_keys():
    source, target = build('ODConv 4x', 0), build('ODConv 4x', 1)
    old = per_head_layout(source.state_dict(), LAYERS['ODConv 4x'][1])
    del old['attention.heads.spatial.weight']
    with pytest.raises(RuntimeError) as info:
        target.load_state_dict(old)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "attention.heads.weight"' in message
    assert 'attention.heads.input.weight' in message  # left unexpected


def test_per_head_state_dict_of_other_sizes_is_a_size_mismatch():
    source = build('ODConv 4x', 0)
    old = per_head_layout(source.state_dict(), LAYERS['ODConv 4x'][1])
    # a checkpoint of a layer with 31 output channels
    old['attention.heads.output.weight'] = old[
        'attention.heads.output.weight'][:31]
    with pytest.raises(RuntimeError, match=r'size mismatch for attention\.'
                       r'heads\.weight: copying a param with shape '
                       r'torch\.Size\(\[60, 16\]\)'):
        build('ODConv 4x', 1).load_state_dict(old)


def backbone(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(conv=build_conv_layer(
            dict(type='ODConv', num_kernels=4), 16, 32, 3, padding=1),
                    bn=nn.BatchNorm2d(32)))


def test_fit_check_and_pretrained_loader_accept_per_head_checkpoints(
        tmp_path):
    source = backbone(0)
    old = per_head_layout(source.state_dict(), LAYERS['ODConv 4x'][1],
                          prefix='conv.attention.')
    path = str(tmp_path / 'old.pth')
    save_checkpoint(dict(state_dict=old, meta={}), path)
    assert not check_checkpoint_fits(backbone(1), path)

    target = backbone(1)
    report = load_pretrained_state_dict(target, old)
    assert 'conv.attention.heads.weight' in report.loaded
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

    del old['conv.attention.heads.kernel.bias']
    save_checkpoint(dict(state_dict=old, meta={}), path)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(backbone(1), path)
    assert 'conv.attention.heads.bias' in str(info.value)  # missing
