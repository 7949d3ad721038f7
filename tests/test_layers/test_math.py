"""Each layer against the slow oracle (tests/oracle.py): outputs and the
gradients of the input, the kernels and every attention parameter."""
import pytest
import torch
import torch.nn.functional as F

from conftest import LAYERS
from dynconv_mm.execution import ConvAttentions
from oracle import assert_layer_matches_oracle, reference_attentions

# (batch, c_in, c_out, kernel, stride, padding, dilation, groups, hw)
GEOMETRIES = {
    'stride2': (3, 8, 6, 3, 2, 1, 1, 1, (9, 9)),
    'dilation2': (2, 6, 8, 3, 1, 2, 2, 1, (8, 8)),
    'groups2': (2, 8, 6, 3, 1, 1, 1, 2, (7, 7)),
    'depthwise': (3, 8, 8, 3, 1, 1, 1, 8, (6, 6)),
    '1x1': (2, 8, 5, 1, 1, 0, 1, 1, (6, 6)),
    'nonsquare_input': (2, 6, 4, 3, 1, 1, 1, 1, (5, 11)),
    'tuple_kernel': (2, 6, 4, (3, 1), (2, 1), (1, 0), 1, 1, (7, 6)),
    'batch1': (1, 8, 6, 3, 1, 1, 1, 1, (7, 7)),
}


def build(layer_type, geometry, bias=True, **options):
    _, c_in, c_out, k, stride, padding, dilation, groups, _ = \
        GEOMETRIES[geometry]
    torch.manual_seed(0)
    layer = LAYERS[layer_type](c_in, c_out, k, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, bias=bias,
                               min_hidden_channels=4, **options)
    with torch.no_grad():  # non-trivial attentions and biases
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer.double()


def input_for(geometry):
    batch, c_in, *_, hw = GEOMETRIES[geometry]
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, c_in, *hw, generator=g,
                       dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_layer_matches_oracle(layer_type, geometry, mode):
    layer = build(layer_type, geometry, num_kernels=3, temperature=2.0)
    layer.train(mode == 'train')
    assert_layer_matches_oracle(layer, input_for(geometry))


@pytest.mark.parametrize('layer_type_k1', ['DynamicConv', 'ODConv'])
@pytest.mark.parametrize('geometry', ['stride2', '1x1', 'depthwise'])
def test_single_kernel_matches_oracle(layer_type_k1, geometry):
    assert_layer_matches_oracle(
        build(layer_type_k1, geometry, num_kernels=1), input_for(geometry))


def test_odconv_with_authors_batchnorm_matches_oracle():
    layer = build('ODConv', 'stride2', attention_norm_cfg=dict(type='BN'))
    assert_layer_matches_oracle(layer, input_for('stride2'))
    layer.eval()
    assert_layer_matches_oracle(layer, input_for('stride2'))


def test_dynet_training_and_eval_paths_agree():
    layer = build('DyNetConv', 'groups2')
    x = input_for('groups2')
    train_out = layer.train()(x)
    eval_out = layer.eval()(x)
    torch.testing.assert_close(train_out, eval_out)
    # the paper's feature-map fusion and kernel fusion, forced
    layer.execution = 'kernel_branches'
    feature_fusion = layer(x)
    layer.execution = 'aggregated'
    torch.testing.assert_close(feature_fusion, layer(x))


@pytest.mark.parametrize('geometry', ['stride2', 'depthwise', 'groups2'])
def test_identity_attentions_single_kernel_is_static_conv(layer_type,
                                                          geometry):
    batch, c_in, c_out, k, stride, padding, dilation, groups, hw = \
        GEOMETRIES[geometry]
    layer = build(layer_type, geometry, num_kernels=1)
    x = input_for(geometry)
    # the layer's own attentions, each replaced by ones
    ones = ConvAttentions(*(None if a is None else torch.ones_like(a)
                            for a in layer.attention(x)))
    static = F.conv2d(x, layer.weight[0], layer.bias[0], stride, padding,
                      dilation, groups)
    torch.testing.assert_close(layer(x, ones), static)


def test_dynamic_conv_single_kernel_is_static_conv():
    """With K = 1 the softmax is identically 1: no forcing needed."""
    layer = build('DynamicConv', 'stride2', num_kernels=1)
    x = input_for('stride2')
    torch.testing.assert_close(
        layer(x), F.conv2d(x, layer.weight[0], layer.bias[0], 2, 1))


@pytest.mark.parametrize('geometry', ['stride2', 'depthwise'])
def test_eval_output_independent_of_batch(layer_type, geometry):
    layer = build(layer_type, geometry).eval()
    x = torch.randn(4, *input_for(geometry).shape[1:], dtype=torch.float64)
    full = layer(x)
    for i in range(4):
        torch.testing.assert_close(full[i:i + 1], layer(x[i:i + 1]))


def test_temperature_scales_logits(layer_type):
    layer = build(layer_type, 'stride2')
    x = input_for('stride2').detach()
    layer.temperature = 1.0
    att1 = reference_attentions(layer, x)
    logits1 = {k: v.detach() for k, v in layer.attention.logits(x).items()}
    layer.temperature = 7.5
    assert layer.temperature == 7.5
    got = layer.attention(x)
    for name, value in logits1.items():
        tensor = getattr(got, name)
        scaled = value / 7.5
        want = scaled.softmax(-1) if (
            name == 'kernel' and layer_type != 'DyNetConv') else \
            scaled.sigmoid()
        torch.testing.assert_close(tensor.reshape(want.shape), want)
        # and the temperature really changed something
        assert not torch.allclose(tensor.reshape(want.shape),
                                  att1[name].reshape(want.shape))


@pytest.mark.parametrize('layer_type_sm', ['DynamicConv', 'ODConv'])
def test_high_temperature_flattens_kernel_softmax(layer_type_sm):
    layer = build(layer_type_sm, 'stride2', num_kernels=4)
    x = input_for('stride2').detach()
    layer.temperature = 1.0
    sharp = layer.attention(x).kernel
    layer.temperature = 1e4
    flat = layer.attention(x).kernel
    torch.testing.assert_close(flat, torch.full_like(flat, 0.25),
                               atol=1e-3, rtol=0)
    assert (sharp.max(-1).values > 0.3).all()
    torch.testing.assert_close(sharp.sum(-1),
                               torch.ones(sharp.shape[0],
                                          dtype=sharp.dtype))


def test_batchnorm_trunk_records_no_copy_of_its_output(layer_type):
    """The trunk's ReLU runs on the norm's output before it is flattened:
    in place on the flattened view, autograd would record a copy of the
    whole (``CopySlices``, nine more ops in every training step)."""
    layer = LAYERS[layer_type](8, 8, 3, attention_norm_cfg=dict(type='BN'))
    hidden = layer.attention.trunk(torch.randn(2, 8, 5, 5,
                                               requires_grad=True))
    seen, pending = set(), [hidden.grad_fn]
    while pending:
        node = pending.pop()
        if node is not None and node not in seen:
            seen.add(node)
            pending.extend(next_node for next_node, _ in node.next_functions)
    recorded = {type(node).__name__ for node in seen}
    assert 'NativeBatchNormBackward0' in recorded
    assert 'CopySlices' not in recorded
