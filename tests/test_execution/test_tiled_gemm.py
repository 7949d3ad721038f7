"""tiled_gemm across several tiles: the oracle grid of test_dynamic_conv2d
runs its small layers in one tile, so here the tile budget is shrunk to
split them into several, of unequal size, and one row each."""
import importlib

import pytest
import torch

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from oracle import reference_dynamic_conv2d
from test_dynamic_conv2d import grads, inputs_of, make_case

tiled = importlib.import_module('dynconv_mm.execution.tiled_gemm_conv2d')


@pytest.mark.parametrize('samples,rows,row_size,budget_rows', [
    (8, 512, 4608, 56), (3, 6, 36, 4), (3, 7, 36, 1), (2, 5, 9, 100),
    (1, 1, 1, 1)])
def test_tiles_cover_every_row_once_within_budget(samples, rows, row_size,
                                                  budget_rows, monkeypatch):
    monkeypatch.setattr(tiled, 'TILE_BYTES',
                        budget_rows * samples * row_size * 4)
    bounds = tiled.tiles(samples, rows, row_size, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1 and max(sizes) <= budget_rows
    assert max(sizes) - min(sizes) <= 1
    # as few tiles as the budget allows
    assert len(bounds) == -(-rows // min(budget_rows, rows))


@pytest.mark.parametrize('geometry', ['plain3x3', 'groups2', 'stride2',
                                      '1x1'])
@pytest.mark.parametrize('attention', ['dynamic_conv', 'dynet',
                                       'odconv_4x'])
@pytest.mark.parametrize('budget_rows', [1, 2])
def test_several_tiles_match_oracle(geometry, attention, budget_rows,
                                    monkeypatch):
    """Tiles of one row, and of at most two (over three output channels
    per group: tiles of one and two), forward and every gradient."""
    x, weight, bias, att, conv = make_case(geometry, attention, True)
    group_out = weight.shape[1] // conv['groups']
    row = x.shape[0] * conv['groups'] * weight[0, 0].numel() * 8
    monkeypatch.setattr(tiled, 'TILE_BYTES', budget_rows * row)
    assert len(tiled.tiles(x.shape[0] * conv['groups'], group_out,
                           weight[0, 0].numel(), 8)) > 1
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    torch.testing.assert_close(out, ref)
    tensors = inputs_of(x, weight, bias, att)
    for got, want in zip(grads(out, tensors), grads(ref, tensors)):
        torch.testing.assert_close(got, want)


def test_backward_is_tiled_and_whole_layer_alike(monkeypatch):
    """The tiled backward (no graph) and the whole-layer one (create_graph)
    give the same first derivatives."""
    monkeypatch.setattr(tiled, 'TILE_BYTES', 1)  # one row a tile
    x, weight, bias, att, conv = make_case('plain3x3', 'odconv_4x', True)
    tensors = inputs_of(x, weight, bias, att)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    cot = torch.randn(out.shape, dtype=out.dtype)
    plain = torch.autograd.grad(out, tensors, cot, retain_graph=True)
    graphed = torch.autograd.grad(out, tensors, cot, create_graph=True)
    for a, b in zip(plain, graphed):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('frozen', ['input', 'weights'])
@pytest.mark.parametrize('attention', ['dynamic_conv', 'dynet'])
def test_only_the_asked_gradients(frozen, attention, monkeypatch):
    """A frozen layer (bank and attentions without grad) skips the weight
    gradient, an input without grad its gradient; what is asked for still
    matches the oracle, over several tiles."""
    monkeypatch.setattr(tiled, 'TILE_BYTES', 1)
    x, weight, bias, att, conv = make_case('plain3x3', attention, True)
    weights = [weight, bias] + list(att.values())
    for tensor in ([x] if frozen == 'input' else weights):
        tensor.requires_grad_(False)
    asked = weights if frozen == 'input' else [x]
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    for got, want in zip(grads(out, asked), grads(ref, asked)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('attention', ['dynamic_conv', 'dynet'])
def test_expanded_output_gradient_reaches_the_products_dense(attention,
                                                             monkeypatch):
    """The gradient of a sum is expanded (every stride 0); the batched
    products in backward must get it dense (on such strides they take a
    matrix-by-matrix path, over twice as slow at 512 channels 7x7), and
    the gradients still match the oracle's."""
    monkeypatch.setattr(tiled, 'TILE_BYTES', 1)
    seen = []
    tiled_backward = tiled._tiled_backward

    def spy(grad_y, *args):
        seen.append(grad_y.is_contiguous())
        return tiled_backward(grad_y, *args)

    monkeypatch.setattr(tiled, '_tiled_backward', spy)
    x, weight, bias, att, conv = make_case('plain3x3', attention, True)
    tensors = inputs_of(x, weight, bias, att)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    got = torch.autograd.grad(out.sum(), tensors)
    assert seen == [True]
    for a, b in zip(got, torch.autograd.grad(ref.sum(), tensors)):
        torch.testing.assert_close(a, b)
