"""``DynamicConv2dBase.fold_batch_norm``: a layer with an eval-mode
BatchNorm folded in computes what the oracle's layer followed by that norm
computes, on the general path (float64, a batch) and on batch-1 inference
(float32, the compiled ops where they run); DyNet's layer refuses."""
import copy

import pytest
import torch
import torch.nn as nn

from conftest import LAYERS
from oracle import reference_layer_forward

CASES = {
    'ODConv 1x': dict(layer='ODConv', num_kernels=1, bias=False),
    'ODConv 1x, bias': dict(layer='ODConv', num_kernels=1, bias=True),
    'ODConv 4x, bias, 2 groups': dict(layer='ODConv', num_kernels=4,
                                      bias=True, groups=2),
    'DynamicConv K=4': dict(layer='DynamicConv', num_kernels=4, bias=False),
    'DynamicConv K=4, bias': dict(layer='DynamicConv', num_kernels=4,
                                  bias=True),
}


def trained_like_norm(channels: int, affine: bool = True) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.2, 3)
        if affine:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return norm.eval()


def build(case: dict, kernel: int = 3, in_channels: int = 8,
          out_channels: int = 12) -> nn.Module:
    options = dict(case)
    layer = LAYERS[options.pop('layer')](in_channels, out_channels, kernel,
                                        padding=kernel // 2, **options)
    with torch.no_grad():  # non-zero biases, so that folding must scale them
        if layer.bias is not None:
            layer.bias.uniform_(-1, 1)
    return layer.eval()


@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('case', list(CASES))
def test_folded_layer_is_the_layer_then_the_norm(case, affine):
    torch.manual_seed(0)
    layer = build(CASES[case]).double()
    norm = trained_like_norm(layer.out_channels, affine).double()
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = norm(reference_layer_forward(layer, x))
    folded = copy.deepcopy(layer)
    folded.fold_batch_norm(norm)
    assert folded.bias is not None and folded.bias.shape == (
        layer.num_kernels, layer.out_channels)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected)
        # and the oracle agrees with the folded parameters
        torch.testing.assert_close(reference_layer_forward(folded, x),
                                   expected)


@pytest.mark.parametrize('kernel', [1, 3])
@pytest.mark.parametrize('case', list(CASES))
def test_folded_layer_at_batch_one_inference(case, kernel):
    """float32 batch-1 inference (the kept per-shape calls, decided before
    the fold without a bias where the layer had none) after folding."""
    torch.manual_seed(1)
    layer = build(CASES[case], kernel, 16, 24)
    norm = trained_like_norm(layer.out_channels)
    x = torch.randn(1, layer.in_channels, 7, 7)
    with torch.no_grad():
        layer(x)  # decide and keep this shape's call
        expected = norm(layer(x))
        layer.fold_batch_norm(norm)
        got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-5,
                               atol=1e-5 * expected.abs().max().item())


def test_dynet_layer_refuses_to_fold():
    layer = LAYERS['DyNetConv'](8, 12, 3, padding=1).eval()
    before = layer.weight.detach().clone()
    with pytest.raises(ValueError, match='DyNetConv: cannot fold a '
                       'BatchNorm: the bias mixing weights'):
        layer.fold_batch_norm(trained_like_norm(12))
    assert not layer.bias_weights_sum_to_one()
    assert torch.equal(layer.weight, before)  # left as it was


def test_bias_weights_sum_to_one_by_attention():
    assert LAYERS['ODConv'](8, 8, 3, num_kernels=1).bias_weights_sum_to_one()
    assert LAYERS['ODConv'](8, 8, 3, num_kernels=4).bias_weights_sum_to_one()
    assert LAYERS['DynamicConv'](8, 8, 3).bias_weights_sum_to_one()
    assert not LAYERS['DyNetConv'](8, 8, 3, num_kernels=1) \
        .bias_weights_sum_to_one()


@pytest.mark.parametrize('norm, message', [
    (nn.BatchNorm2d(10), 'cannot fold a BatchNorm of 10 channels into '
     'out_channels=12'),
    (nn.GroupNorm(3, 12), 'can only fold a BatchNorm with running '
     'statistics, got GroupNorm'),
    (nn.BatchNorm2d(12, track_running_stats=False),
     'can only fold a BatchNorm with running statistics'),
])
def test_a_norm_that_cannot_be_folded_is_named(norm, message):
    layer = LAYERS['ODConv'](8, 12, 3, padding=1)
    with pytest.raises(ValueError, match='ODConv: ' + message):
        layer.fold_batch_norm(norm)
