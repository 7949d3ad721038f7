"""The compiled CPU attention op (``dynconv_mm/execution/csrc``): every
layer's attentions and outputs through it against the by-hand oracle, where
it runs and where it must not, and its refusals of bad arguments."""
import pytest
import torch

import dynconv_mm.execution.cpu_ops as cpu_ops
from conftest import LAYERS
from cpu_ops_spy import count_cpu_op_calls
from oracle import reference_attentions, reference_layer_forward

# (c_in, c_out, kernel, padding, groups, hw)
GEOMETRIES = {
    '3x3': (12, 10, 3, 1, 1, (7, 5)),
    '1x1': (16, 24, 1, 0, 1, (6, 6)),
    'groups2': (8, 6, 3, 1, 2, (5, 5)),
    'depthwise': (8, 8, 3, 1, 8, (6, 6)),
}


@pytest.fixture
def counting_ops(monkeypatch):
    return count_cpu_op_calls(monkeypatch)


def build(layer_type, geometry, num_kernels=3, temperature=1.0,
          norm_cfg=None):
    c_in, c_out, k, padding, groups, _ = GEOMETRIES[geometry]
    torch.manual_seed(0)
    layer = LAYERS[layer_type](c_in, c_out, k, padding=padding, groups=groups,
                               bias=True, num_kernels=num_kernels,
                               temperature=temperature, min_hidden_channels=5,
                               attention_norm_cfg=norm_cfg)
    with torch.no_grad():  # attentions far from uniform, non-zero biases
        for p in layer.parameters():
            p.normal_(0, 0.5)
        norm = layer.attention.trunk.norm
        if getattr(norm, 'running_mean', None) is not None:
            norm.running_mean.normal_(0, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    return layer.eval()


def input_for(geometry, batch):
    c_in, *_, hw = GEOMETRIES[geometry]
    return torch.randn(batch, c_in, *hw,
                       generator=torch.Generator().manual_seed(1))


def assert_attentions_match(layer, x):
    got = layer.attention(x)._asdict()
    want = reference_attentions(layer, x)
    assert {k for k, v in got.items() if v is not None} == set(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, msg=name)


@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('num_kernels', [1, 3])
def test_attentions_and_outputs_match_oracle(counting_ops, layer_type,
                                             geometry, batch, num_kernels):
    if layer_type == 'DyNetConv' and num_kernels == 1:
        num_kernels = 2  # DyNet fuses at least two kernels
    layer = build(layer_type, geometry, num_kernels, temperature=0.7)
    x = input_for(geometry, batch)
    with torch.no_grad():
        assert_attentions_match(layer, x)
        torch.testing.assert_close(layer(x), reference_layer_forward(layer, x))
    assert counting_ops.calls['attention_heads'] == 2


@pytest.mark.parametrize('affine', [True, False])
def test_eval_batchnorm_in_the_trunk_matches_oracle(counting_ops, layer_type,
                                                    affine):
    layer = build(layer_type, '3x3', temperature=2.0,
                  norm_cfg=dict(type='BN', affine=affine))
    x = input_for('3x3', 2)
    with torch.no_grad():
        assert_attentions_match(layer, x)
    assert counting_ops.calls['attention_heads'] == 1


def test_low_temperature_softmax_stays_finite(counting_ops, layer_type):
    # logits of several hundred: exp() overflows unless the max is taken out
    layer = build(layer_type, '3x3', temperature=0.01)
    x = input_for('3x3', 2) * 10
    with torch.no_grad():
        attentions = layer.attention(x)
        assert_attentions_match(layer, x)
    assert all(torch.isfinite(a).all() for a in attentions if a is not None)
    assert counting_ops.calls['attention_heads'] == 2


def test_a_changed_temperature_is_read_on_every_call(counting_ops):
    layer = build('ODConv', '3x3')
    x = input_for('3x3', 1)
    with torch.no_grad():
        before = layer.attention(x).kernel.clone()
        layer.temperature = 5.0
        assert_attentions_match(layer, x)
        assert not torch.allclose(before, layer.attention(x).kernel)


class _Doubled(torch.nn.Module):

    def forward(self, weight):
        return weight * 2


def test_parametrized_weights_are_read_through_their_parametrization(
        counting_ops, layer_type):
    """A weight under ``torch.nn.utils.parametrize`` is a property, in none
    of its module's tables: the attention reads it as any attribute."""
    from torch.nn.utils import parametrize
    layer = build(layer_type, '3x3')
    for module in (layer.attention.trunk.fc, layer.attention.heads):
        parametrize.register_parametrization(module, 'weight', _Doubled())
    x = input_for('3x3', 1)
    with torch.no_grad():
        assert_attentions_match(layer, x)
        torch.testing.assert_close(layer(x), reference_layer_forward(layer, x))
    assert counting_ops.calls['attention_heads'] == 2


def _no_grad(layer, x):
    with torch.no_grad():
        return layer.attention(x)


def _with_grad(layer, x):
    return layer.attention(x)


def _counted(layer, x):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer.attention(x)
    assert counter.get_total_flops() > 0


def _traced(layer, x):
    layer.requires_grad_(False)  # parameters become the trace's constants
    with torch.no_grad():
        return torch.jit.trace(lambda t: layer.attention(t).input, x,
                               check_trace=False)(x)


CASES_IN_PYTORCH = {
    'autograd on': (dict(), lambda x: x, _with_grad),
    'float64': (dict(), lambda x: x.double(), _no_grad),
    'bfloat16 input': (dict(), lambda x: x.bfloat16(), _no_grad),
    'channels_last input': (dict(), lambda x: x.contiguous(
        memory_format=torch.channels_last), _no_grad),
    'GroupNorm trunk': (dict(norm_cfg=dict(type='GN', num_groups=5)),
                        lambda x: x, _no_grad),
    'BatchNorm in train mode': (dict(norm_cfg=dict(type='BN')), lambda x: x,
                                _no_grad),
    'BatchNorm without running statistics': (dict(norm_cfg=dict(
        type='BN', track_running_stats=False)), lambda x: x, _no_grad),
    'traced': (dict(), lambda x: x, _traced),
    'FLOPs counted': (dict(), lambda x: x, _counted),
    'empty batch': (dict(), lambda x: x[:0], _no_grad),
    # called by a module that owns it for several convs (DyNet's shared
    # coefficients), in a reentrant checkpoint's first pass
    'attention in training mode': (dict(), lambda x: x, _no_grad),
}


@pytest.mark.parametrize('case', CASES_IN_PYTORCH)
def test_where_the_op_does_not_apply_the_attention_runs_in_pytorch(
        counting_ops, case):
    options, convert, run = CASES_IN_PYTORCH[case]
    layer = build('ODConv', '3x3', **options)
    if case == 'float64':
        layer.double()
    if case == 'BatchNorm in train mode':
        layer.attention.trunk.norm.train()
    if case == 'attention in training mode':
        layer.attention.train()
    x = convert(input_for('3x3', 2))
    run(layer, x)
    assert counting_ops.calls['attention_heads'] == 0


@pytest.mark.parametrize('training', [False, True])
def test_a_training_forward_without_autograd_runs_in_pytorch(counting_ops,
                                                             training):
    # a reentrant checkpoint's first pass (with_cp) runs the forward without
    # autograd, and its recomputation with it: both must give the same
    # values, so in training mode neither op runs
    layer = build('ODConv', '3x3', num_kernels=3).train(training)
    x = input_for('3x3', 1)
    with torch.no_grad():
        layer(x)
    used = 0 if training else 1
    assert counting_ops.calls['attention_heads'] == used
    # (the kernel ops need AVX2 and FMA, the attention's does not; with
    # AVX-512 the kernel may be mixed in the convolution's tiles instead)
    kernel_op = cpu_ops._avx2_fma_supported()
    assert (counting_ops.calls['sample_kernel']
            + counting_ops.calls['sample_conv']) == (used if kernel_op else 0)


def test_without_the_op_the_attention_is_the_same(monkeypatch):
    layer = build('ODConv', '3x3', norm_cfg=dict(type='BN'))
    x = input_for('3x3', 2)
    with torch.no_grad():
        fused = layer.attention(x)
        monkeypatch.setattr(cpu_ops, '_CPU_OPS', None)
        plain = layer.attention(x)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)


def _op_arguments(**changes):
    hidden, channels, widths = 5, 6, [6, 4, 3]
    args = dict(x=torch.randn(1, channels, 4, 4),
                trunk_weight=torch.randn(hidden, channels),
                trunk_bias=torch.randn(hidden), norm=None, norm_eps=1e-5,
                heads_weight=torch.randn(sum(widths), hidden),
                heads_bias=torch.randn(sum(widths)),
                temperature=torch.tensor(1.0), num_sigmoid=10, widths=widths)
    args.update(changes)
    return args


@pytest.mark.parametrize('change, message', [
    (dict(x=torch.randn(1, 6, 4, 4, dtype=torch.float64)), 'x must be'),
    (dict(x=torch.randn(6, 4, 4)), 'x must be'),
    (dict(trunk_weight=torch.randn(5, 7)), 'trunk_weight must be'),
    (dict(trunk_bias=torch.randn(4)), 'trunk_bias must be'),
    (dict(heads_weight=torch.randn(12, 5)), 'heads_weight must be'),
    (dict(heads_bias=torch.randn(13, 1)), 'heads_bias must be'),
    (dict(norm=(torch.zeros(5), None, None, None)), 'norm_mean and norm_var'),
    (dict(norm=(torch.zeros(5), torch.ones(4), None, None)), 'norm_var must'),
    (dict(temperature=torch.tensor(0.0)), 'temperature must be > 0'),
    (dict(temperature=torch.ones(2)), 'temperature must be a float32'),
    (dict(num_sigmoid=14), 'num_sigmoid=14'),
    (dict(widths=[6, 4, 3, 0], num_sigmoid=0), 'widths must be positive'),
    (dict(x=torch.randn(1, 6, 0, 4)), 'no pixels to pool'),
])
def test_the_op_names_the_bad_argument(counting_ops, change, message):
    with pytest.raises(RuntimeError, match=message):
        cpu_ops.cpu_attention_heads(**_op_arguments(**change))


def test_the_op_takes_an_empty_batch(counting_ops):
    outs = cpu_ops.cpu_attention_heads(
        **_op_arguments(x=torch.randn(0, 6, 4, 4)))
    assert [tuple(o.shape) for o in outs] == [(0, 6), (0, 4), (0, 3)]
