"""Autocast: the attention (pooling, trunk, heads, /tau, softmax/sigmoid)
runs in float32, and the output stays close to float32 -- closer than any
wrong attention could.

Tolerances, calibrated on the layers below (16 -> 16 channels, 3x3, K = 4,
attention parameters ~N(0, 0.5), 3 images of 9x7): the relative error
``||y - y_fp32|| / ||y_fp32||`` measured 0.0040-0.0043 under bf16 autocast
and 0.0005 under fp16, whereas a uniform kernel attention gives 0.27-0.65
and dropping ODConv's filter, channel or spatial attention 0.27-0.47. The
tolerances sit near the geometric mean of the two: 0.03 (bf16) and 0.01
(fp16). Each test also checks that every broken attention exceeds them.
"""
import pytest
import torch

from conftest import LAYERS

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
TOLERANCE = {torch.bfloat16: 0.03, torch.float16: 0.01}


def nontrivial(layer_type, device, **options):
    """A layer whose attentions are far from uniform, so that replacing one
    changes the output by much more than rounding does."""
    torch.manual_seed(0)
    layer = LAYERS[layer_type](16, 16, 3, padding=1, num_kernels=4,
                               **options)
    with torch.no_grad():
        for p in layer.attention.parameters():
            p.normal_(0, 0.5)
        layer.bias.normal_(0, 0.5)
    return layer.to(device)


def image(device, dtype=torch.float32):
    x = torch.randn(3, 16, 9, 7, generator=torch.Generator().manual_seed(1))
    return x.to(device=device, dtype=dtype)


def relative_error(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


def broken_attentions(attentions):
    """Deliberately wrong attentions the tolerance must reject."""
    kernel = attentions.kernel
    broken = dict(uniform_kernel=attentions._replace(
        kernel=kernel.mean(-1, keepdim=True).expand_as(kernel)))
    for name in ('input', 'output', 'spatial'):
        if getattr(attentions, name) is not None:
            broken[f'no_{name}'] = attentions._replace(**{name: None})
    return broken


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_output_close_to_fp32(layer_type, device, mode, dtype):
    layer = nontrivial(layer_type, device).train(mode == 'train')
    x = image(device)
    ref = layer(x).detach()
    tolerance = TOLERANCE[dtype]
    with torch.no_grad():
        for name, attentions in broken_attentions(layer.attention(x)).items():
            error = relative_error(layer(x, attentions), ref)
            assert error > 5 * tolerance, (name, error)  # the test has teeth
    with torch.autocast(device, dtype=dtype):
        out = layer(x)
        out.float().sum().backward()
    assert out.dtype == dtype
    assert relative_error(out, ref) < tolerance
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_attentions_run_in_fp32_under_autocast(layer_type, device, dtype):
    """Bit-identical to the float32 attentions for a float32 input; for a
    low-precision input (the previous layer's autocast output) equal to the
    float32 attentions of that input."""
    layer = nontrivial(layer_type, device)
    x = image(device)
    with torch.no_grad():
        want = layer.attention(x)
        want_low = layer.attention(x.to(dtype).float())
        with torch.autocast(device, dtype=dtype):
            got = layer.attention(x)
            got_low = layer.attention(x.to(dtype))
            logits = layer.attention.logits(x.to(dtype))
    for name in got._fields:
        if getattr(want, name) is None:
            assert getattr(got, name) is None
            continue
        assert getattr(got, name).dtype == torch.float32, name
        assert getattr(got_low, name).dtype == torch.float32, name
        assert torch.equal(getattr(got, name), getattr(want, name)), name
        torch.testing.assert_close(getattr(got_low, name),
                                   getattr(want_low, name))
    assert all(v.dtype == torch.float32 for v in logits.values())


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layer_type_sm', ['DynamicConv', 'ODConv'])
def test_small_temperature_does_not_overflow_in_fp16(layer_type_sm, device):
    """Logits of +-700 at tau = 0.01 are +-70000: beyond fp16's 65504, so
    fp16 logits become +-inf and the kernel softmax NaN. Ours stay finite."""
    layer = nontrivial(layer_type_sm, device, temperature=0.01)
    weight, bias = layer.attention.head_parameters('kernel')
    with torch.no_grad():
        weight.zero_()
        bias.copy_(torch.tensor([700.0, 0.0, -700.0, 300.0]))
    x = image(device)
    with torch.no_grad():
        want = layer.attention(x).kernel
        ref = layer(x)
        hidden = layer.attention.trunk(x)
        with torch.autocast(device, dtype=torch.float16):
            # the premise: the same head run under autocast overflows
            naive = torch.nn.functional.linear(
                hidden, weight, bias) / layer.attention.temperature
            assert naive.dtype == torch.float16
            assert torch.isinf(naive).any()
            assert torch.isnan(naive.softmax(-1)).all()
            got = layer.attention(x).kernel
            out = layer(x)
    torch.testing.assert_close(want, torch.tensor(
        [[1.0, 0.0, 0.0, 0.0]] * 3, device=device))
    assert torch.equal(got, want)
    assert torch.isfinite(out).all()
    assert relative_error(out, ref) < TOLERANCE[torch.float16]
