"""Batch-1 CPU inference with what it decides from shapes kept per input
shape (``DynamicConv2dBase._repeated_inference``): the same output as the
layer's general forward and the by-hand oracle, decided once per shape, and
the general forward wherever a condition it relies on does not hold."""
import copy as copy_module
import gc
import io
import weakref

import pytest
import torch
import torch.nn.modules.module as torch_module
from torch.utils._python_dispatch import TorchDispatchMode

import dynconv_mm.execution.cpu_ops as cpu_ops
import dynconv_mm.layers.dynamic_conv_base as dynamic_conv_base
from conftest import LAYERS
from cpu_ops_spy import skip_without_avx2_fma
from dynconv_mm.layers.dynamic_conv_base import DynamicConv2dBase
from oracle import reference_layer_forward

# (c_in, c_out, kernel, stride, padding, hw): on an Intel CPU with AVX-512
# the first three run in the GEMM's tiles (unfolded, pointwise, strided),
# the last forms the kernel; elsewhere every one forms it.
GEOMETRIES = {
    '3x3 7x7': (12, 10, 3, 1, 1, (7, 7)),
    '1x1': (16, 24, 1, 1, 0, (6, 6)),
    '3x3 stride 2': (8, 12, 3, 2, 1, (13, 11)),
    '3x3 15x15': (8, 10, 3, 1, 1, (15, 15)),
}


@pytest.fixture(autouse=True)
def compiled_ops():
    if not cpu_ops.cpu_ops_available():
        pytest.skip('the compiled CPU ops are not available: '
                    f'{cpu_ops.CPU_OPS_ERROR}')
    skip_without_avx2_fma('sample-kernel')


def build(layer_type, geometry, num_kernels=3, bias=True):
    c_in, c_out, k, stride, padding, _ = GEOMETRIES[geometry]
    if layer_type == 'DyNetConv':
        num_kernels = max(num_kernels, 2)  # DyNet fuses at least two
    torch.manual_seed(0)
    layer = LAYERS[layer_type](c_in, c_out, k, stride=stride,
                               padding=padding, bias=bias,
                               num_kernels=num_kernels, temperature=0.7,
                               min_hidden_channels=5)
    with torch.no_grad():  # attentions far from uniform, non-zero biases
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer.eval()


def input_for(geometry, seed=1, size=None):
    c_in, *_, hw = GEOMETRIES[geometry]
    return torch.randn(1, c_in, *(size or hw),
                       generator=torch.Generator().manual_seed(seed))


def general_forward(layer, x, monkeypatch):
    """``layer(x)`` with the kept decisions out of the way."""
    with monkeypatch.context() as patch:
        patch.setattr(DynamicConv2dBase, '_repeated_inference',
                      lambda self, x: None)
        return layer(x)


def kept_calls(layer):
    return [c for c in layer.__dict__.get('_inference_calls', {}).values()
            if c is not None]


@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('num_kernels', [1, 3])
@pytest.mark.parametrize('bias', [True, False])
def test_matches_general_forward_and_oracle(monkeypatch, layer_type,
                                            geometry, num_kernels, bias):
    layer = build(layer_type, geometry, num_kernels, bias)
    first, second = input_for(geometry, 1), input_for(geometry, 2)
    with torch.no_grad():
        decided = layer(first)  # decides and runs
        # several kernels: the compiled ops on any CPU with AVX2 and FMA; a
        # single kernel on a small map runs from the static bank (im2col,
        # kernel_branches) unless the AVX-512 op mixes it in its tiles
        several = layer.num_kernels > 1
        assert len(kept_calls(layer)) == 1 if several else \
            len(kept_calls(layer)) <= 1
        kept = layer(second)  # the kept call
        general = general_forward(layer, second, monkeypatch)
        torch.testing.assert_close(decided, reference_layer_forward(
            layer, first))
        torch.testing.assert_close(kept, reference_layer_forward(
            layer, second))
    # the same ops in the same order: the same bits
    assert torch.equal(kept, general)


def test_decided_once_per_shape(monkeypatch, layer_type):
    decisions = []
    route = dynamic_conv_base.one_sample_inference_route
    monkeypatch.setattr(
        dynamic_conv_base, 'one_sample_inference_route',
        lambda *args: decisions.append(args[0].shape) or route(*args))
    layer = build(layer_type, '3x3 7x7')
    with torch.no_grad():
        for seed in range(3):
            layer(input_for('3x3 7x7', seed))
        assert decisions == [(1, 12, 7, 7)]
        bigger = input_for('3x3 7x7', size=(9, 9))
        torch.testing.assert_close(layer(bigger),
                                   reference_layer_forward(layer, bigger))
        assert decisions == [(1, 12, 7, 7), (1, 12, 9, 9)]


def test_a_layer_with_kept_calls_pickles_and_copies(layer_type):
    layer = build(layer_type, '3x3 7x7')
    x = input_for('3x3 7x7')
    with torch.no_grad():
        want = layer(x)
        assert kept_calls(layer)
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        for copy in (torch.load(buffer, weights_only=False),
                     copy_module.deepcopy(layer)):
            assert not kept_calls(copy)
            assert torch.equal(copy(x), want)
            assert kept_calls(copy)


@pytest.mark.parametrize('geometry', ['3x3 7x7', '3x3 15x15'])
@pytest.mark.parametrize('bias', [True, False])
def test_a_kept_call_holds_no_tensor_of_its_first_call(layer_type,
                                                       geometry, bias):
    layer = build(layer_type, geometry, bias=bias)
    x = input_for(geometry)
    with torch.no_grad():
        y = layer(x)
    assert kept_calls(layer)
    refs = [weakref.ref(t) for t in (x, y)]
    del x, y
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_kept_calls_are_bounded(monkeypatch):
    monkeypatch.setattr(dynamic_conv_base, 'MAX_INFERENCE_CALLS', 2)
    layer = build('ODConv', '3x3 7x7')
    with torch.no_grad():
        for size in (5, 6, 7):
            layer(input_for('3x3 7x7', size=(size, size)))
    assert len(layer._inference_calls) <= 2


class PassThrough(TorchDispatchMode):

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _hooked_attention(layer, x):
    seen = []
    layer.attention.register_forward_hook(
        lambda module, args, out: seen.append(out))
    out = layer(x)
    assert len(seen) == 1
    return out


def _global_hook(layer, x):
    seen = []
    handle = torch_module.register_module_forward_hook(
        lambda module, args, out: seen.append(type(module).__name__))
    try:
        out = layer(x)
    finally:
        handle.remove()
    assert type(layer.attention).__name__ in seen
    return out


def _training(layer, x):
    return layer.train()(x)


def _suspended(layer, x):
    with cpu_ops.cpu_ops_suspended():
        return layer(x)


def _float64(layer, x):
    return layer.double()(x.double())


def _channels_last(layer, x):
    return layer(x.to(memory_format=torch.channels_last))


def _watched(layer, x):
    with PassThrough():
        return layer(x)


def _autograd(layer, x):
    with torch.enable_grad():
        out = layer(x)
    assert out.requires_grad
    return out.detach()


def _strided_bank(layer, x):
    layer.weight.data = layer.weight.data.permute(0, 1, 3, 4, 2).contiguous(
    ).permute(0, 1, 4, 2, 3)
    return layer(x)


def _autocast(layer, x):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    return out.float()


def _other_formulation(layer, x):
    layer.execution = 'im2col'
    return layer(x)


@pytest.mark.parametrize('change', [
    _hooked_attention, _global_hook, _training, _suspended, _float64,
    _channels_last, _watched, _autograd, _strided_bank, _autocast,
    _other_formulation
], ids=lambda change: change.__name__.strip('_'))
def test_general_forward_where_a_condition_fails(layer_type, change):
    layer = build(layer_type, '3x3 7x7')
    x = input_for('3x3 7x7')
    with torch.no_grad():
        layer(x)
        calls = layer._inference_calls
        assert kept_calls(layer)

        def refused(*args):
            raise AssertionError('the kept call ran')

        for key in calls:
            calls[key] = refused
        out = change(layer, x)
        want = reference_layer_forward(layer, x.to(out.dtype))
    # bfloat16 products under autocast: ~3 significant digits
    tolerance = dict(rtol=0.05, atol=0.05) if change is _autocast else {}
    torch.testing.assert_close(out, want, **tolerance)


def test_a_bad_input_is_refused_by_name(layer_type):
    layer = build(layer_type, '3x3 7x7')
    with torch.no_grad(), pytest.raises(ValueError,
                                        match=f'{layer_type}: input of shape'):
        layer(torch.randn(1, 5, 7, 7))
