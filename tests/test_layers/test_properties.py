"""Property-based tests over the layers' geometry and options.

Every valid combination must equal the slow oracle (tests/oracle.py) in
float64; every invalid one must raise a ``ValueError`` naming the layer type,
the option and the value -- at construction, or in ``forward`` for an input
the layer cannot take -- never a raw torch error from deep inside.

Hypothesis runs derandomized (the examples are a fixed function of the
test), so CI sees the same cases on every run; shapes are tiny so the file
stays well under a minute on 2 loaded cores.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LAYERS
from oracle import reference_layer_forward

pytestmark = pytest.mark.filterwarnings(
    # torch notes that 'same' with an even kernel pads a copy of the input
    "ignore:Using padding='same':UserWarning")

PROPERTY_SETTINGS = settings(
    derandomize=True, database=None, deadline=None, max_examples=100,
    suppress_health_check=[HealthCheck.too_slow])

small = st.integers(1, 3)
# an int, or a pair (possibly unequal) of them
pairs = st.one_of(small, st.tuples(small, small))
pairs_up_to_2 = st.one_of(st.integers(1, 2),
                          st.tuples(st.integers(1, 2), st.integers(1, 2)))


def as_pair(value):
    return value if isinstance(value, tuple) else (value, value)


@st.composite
def valid_cases(draw, layer_type):
    """A valid configuration of ``layer_type``, input size, batch, mode."""
    grouping = draw(st.sampled_from(['dense', 'grouped', 'depthwise']))
    if grouping == 'depthwise':
        in_channels = out_channels = groups = draw(st.integers(1, 4))
    else:
        groups = 1 if grouping == 'dense' else draw(st.integers(2, 3))
        in_channels = groups * draw(small)
        out_channels = groups * draw(small)
    kernel_size = draw(pairs)
    dilation = draw(pairs_up_to_2)
    padding_kind = draw(st.sampled_from(['same', 'valid', 'int', 'pair']))
    # padding='same' needs stride 1
    stride = 1 if padding_kind == 'same' else draw(pairs_up_to_2)
    if padding_kind in ('same', 'valid'):
        padding = padding_kind
    elif padding_kind == 'int':
        padding = draw(st.integers(0, 2))
    else:
        padding = draw(st.tuples(st.integers(0, 2), st.integers(0, 2)))
    options = dict(
        num_kernels=draw(st.integers(1, 4)),
        reduction=draw(st.sampled_from([None, 0.5, 1, 4, 16])),
        min_hidden_channels=draw(st.sampled_from([None, 1, 2, 5])),
        temperature=draw(st.sampled_from([0.05, 0.5, 1.0, 7.5, 30.0])),
        attention_norm_cfg=draw(st.sampled_from([None, dict(type='BN')])),
    )
    training = draw(st.booleans())
    # BN over pooled vectors cannot train on one image (an invalid case)
    min_batch = 2 if training and options['attention_norm_cfg'] else 1
    batch = draw(st.integers(min_batch, 3))
    # the smallest input the dilated kernel fits after padding, and a little
    kernel, dil = as_pair(kernel_size), as_pair(dilation)
    pad = (0, 0) if padding in ('valid', 'same') else as_pair(padding)
    size = []
    for i in range(2):
        smallest = max(1, dil[i] * (kernel[i] - 1) + 1 - 2 * pad[i])
        size.append(draw(st.integers(smallest, smallest + 3)))
    geometry = dict(in_channels=in_channels, out_channels=out_channels,
                    kernel_size=kernel_size, stride=stride, padding=padding,
                    dilation=dilation, groups=groups,
                    bias=draw(st.booleans()))
    return dict(layer_type=layer_type, geometry=geometry, options=options,
                training=training, batch=batch, size=tuple(size),
                seed=draw(st.integers(0, 2**16)))


def randomize(layer, generator):
    """Non-trivial attentions, biases and BN statistics, so that a wrong
    attention or a dropped term changes the output."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        for name, buf in layer.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.3)
            elif name.endswith('running_var'):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)


@pytest.mark.parametrize('layer_type', sorted(LAYERS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_valid_combination_matches_oracle(layer_type, data):
    case = data.draw(valid_cases(layer_type), label='case')
    layer = LAYERS[case['layer_type']](**case['geometry'], **case['options'])
    generator = torch.Generator().manual_seed(case['seed'])
    randomize(layer, generator)
    layer = layer.double().train(case['training'])
    x = torch.randn(case['batch'], case['geometry']['in_channels'],
                    *case['size'], generator=generator,
                    dtype=torch.float64).requires_grad_()
    out = layer(x)
    # the oracle reads the parameters, so it runs after the forward (whose
    # BN running-stat update does not affect a training-mode oracle)
    ref = reference_layer_forward(layer, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    cot = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    got, = torch.autograd.grad(out, x, cot)
    want, = torch.autograd.grad(ref, x, cot)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# Per option: values that are invalid whatever the rest of the config.
INVALID_VALUES = {
    'in_channels': [0, -2, 2.5, True, None, '4'],
    'out_channels': [0, -1, 3.0, False, None],
    'kernel_size': [0, (3, 0), (3, ), (1, 2, 3), 1.5, '3', None, (2.0, 2)],
    'stride': [0, (1, 0), -1, (1, 1, 1), 1.5, 'x'],
    'padding': [-1, (0, -1), 'full', 1.5, (1, ), None],
    'dilation': [0, (0, 1), 2.5, (1, 2, 1)],
    'groups': [0, -1, 1.5, None],
    'bias': ['yes', 1, None],
    'padding_mode': ['reflect', 'circular', 'replicate'],
    'num_kernels': [0, -1, 2.5, True],
    'reduction': [0, -4, math.nan, math.inf, 'x'],
    'min_hidden_channels': [0, -1, 2.5],
    'temperature': [0, -1.0, math.nan, math.inf, '1'],
    'attention_norm_cfg': ['BN', dict(type='LN'), dict(type='IN'),
                           dict(type='NoSuchNorm'), dict(norm='BN'),
                           dict(type='GN', num_groups=3)],
    'init_cfg': ['Pretrained', [1], 0],
}


@st.composite
def invalid_options(draw):
    """A valid base config with exactly one option made invalid."""
    layer_type = draw(st.sampled_from(sorted(LAYERS)))
    kwargs = dict(in_channels=4, out_channels=4, kernel_size=draw(pairs),
                  stride=1, padding=draw(st.integers(0, 1)), groups=1,
                  min_hidden_channels=4)  # GN(3) cannot split 4 channels
    kind = draw(st.sampled_from(sorted(INVALID_VALUES) +
                                ['groups_not_dividing', 'same_with_stride']))
    if kind == 'groups_not_dividing':
        option, value = 'groups', draw(st.sampled_from([3, 8]))
    elif kind == 'same_with_stride':
        kwargs['padding'] = 'same'
        option, value = 'stride', draw(st.sampled_from([2, (1, 2)]))
    else:
        option, value = kind, draw(st.sampled_from(INVALID_VALUES[kind]))
    kwargs[option] = value
    return layer_type, kwargs, option, value


@PROPERTY_SETTINGS
@given(invalid_options())
def test_every_invalid_option_names_layer_option_and_value(case):
    layer_type, kwargs, option, value = case
    with pytest.raises(ValueError) as err:
        LAYERS[layer_type](**kwargs)
    message = str(err.value)
    assert message.startswith(f'{layer_type}:'), message
    assert f'{option}={value!r}' in message, message


@st.composite
def invalid_inputs(draw):
    """A valid layer and an input it cannot take."""
    layer_type = draw(st.sampled_from(sorted(LAYERS)))
    kernel_size, dilation = draw(pairs), draw(pairs)
    padding = draw(st.one_of(st.just('valid'), st.integers(0, 1)))
    layer = LAYERS[layer_type](4, 4, kernel_size, padding=padding,
                               dilation=dilation)
    kind = draw(st.sampled_from(['channels', 'dims', 'too_small',
                                 'integer']))
    batch = draw(st.integers(1, 2))
    kernel, dil = as_pair(kernel_size), as_pair(dilation)
    pad = (0, 0) if padding == 'valid' else as_pair(padding)
    fits = [dil[i] * (kernel[i] - 1) + 1 - 2 * pad[i] for i in range(2)]
    hw = [max(1, f) + 1 for f in fits]
    if kind == 'channels':
        shape = (batch, draw(st.sampled_from([1, 3, 5, 8])), *hw)
        expected = ['in_channels=4']
    elif kind == 'dims':
        shape = draw(st.sampled_from([(4, *hw), (batch, 4, hw[0]),
                                      (1, batch, 4, *hw)]))
        expected = ['[B, C, H, W]', str(tuple(shape))]
    elif kind == 'too_small':
        axis = draw(st.sampled_from([i for i in range(2) if fits[i] > 1]
                                    or [None]))
        if axis is None:  # this kernel fits any input: ask for channels
            shape = (batch, 2, *hw)
            expected = ['in_channels=4']
        else:
            hw[axis] = draw(st.integers(1, fits[axis] - 1))
            shape = (batch, 4, *hw)
            shown = padding if padding == 'valid' else as_pair(padding)
            expected = [f'kernel_size={kernel}', f'dilation={dil}',
                        f'padding={shown!r}']
    else:
        shape = (batch, 4, *hw)
        expected = ['floating-point']
    dtype = torch.int64 if kind == 'integer' else torch.float32
    return layer, torch.zeros(shape, dtype=dtype), expected


@PROPERTY_SETTINGS
@given(invalid_inputs())
def test_every_invalid_input_is_refused_by_the_layer(case):
    layer, x, expected = case
    with pytest.raises(ValueError) as err:
        layer(x)
    message = str(err.value)
    assert message.startswith(f'{layer.layer_type}:'), message
    for part in expected:
        assert part in message, (part, message)


def test_batchnorm_attention_refuses_one_training_image(layer_type):
    layer = LAYERS[layer_type](4, 4, 3, attention_norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError) as err:
        layer.train()(torch.randn(1, 4, 5, 5))
    message = str(err.value)
    assert message.startswith(f'{layer_type}:')
    assert 'attention_norm_cfg' in message


def test_non_tensor_input_is_refused(layer_type):
    layer = LAYERS[layer_type](4, 4, 3)
    with pytest.raises(ValueError, match=f'^{layer_type}: input'):
        layer([[1.0]])
