"""The compiled attention op by itself (``cpu_ops.cpu_attention_heads``)
against the attention MLP written out in float64 PyTorch: pooling, the
trunk FC, an eval-mode BatchNorm or none, ReLU, the heads, the temperature,
sigmoid and softmax heads. ``tests/test_layers/test_cpu_attention.py``
checks it inside the layers; this one needs nothing but the execution
floor, so it also runs where the layers cannot (tools/check_aarch64.sh)."""
import pytest
import torch

import dynconv_mm.execution.cpu_ops as cpu_ops

IN_CHANNELS, HIDDEN = 12, 5


def reference(x, trunk_weight, trunk_bias, norm, eps, heads_weight,
              heads_bias, temperature, num_sigmoid, widths):
    x, trunk_weight, heads_weight, heads_bias = (
        t.double() for t in (x, trunk_weight, heads_weight, heads_bias))
    hidden = x.mean((2, 3)) @ trunk_weight.T
    if trunk_bias is not None:
        hidden = hidden + trunk_bias.double()
    if norm is not None:
        mean, var, weight, bias = norm
        hidden = (hidden - mean.double()) / (var.double() + eps).sqrt()
        if weight is not None:
            hidden = hidden * weight.double() + bias.double()
    logits = (hidden.relu() @ heads_weight.T + heads_bias) / temperature
    outputs, start = [], 0
    for width in widths:
        logit = logits[:, start:start + width]
        outputs.append(logit.sigmoid() if start < num_sigmoid else
                       logit.softmax(1))
        start += width
    return outputs


HEADS = {  # (widths, how many outputs take a sigmoid)
    'sigmoid': ((12, 9, 10), 31),  # ODConv 1x: channel, spatial, filter
    'softmax': ((4, ), 0),  # DynamicConv
    'both': ((12, 9, 10, 3), 31),  # ODConv 3x
}


@pytest.mark.parametrize('heads', HEADS)
@pytest.mark.parametrize('norm', ['none', 'affine', 'plain'])
@pytest.mark.parametrize('trunk_bias', [True, False])
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('temperature', [1.0, 0.3, 30.0])
def test_the_op_computes_the_attention_mlp(heads, norm, trunk_bias, batch,
                                           temperature):
    if not cpu_ops.cpu_ops_available():
        pytest.skip(f'the compiled CPU ops are not built: '
                    f'{cpu_ops.CPU_OPS_ERROR}')
    widths, num_sigmoid = HEADS[heads]
    g = torch.Generator().manual_seed(0)

    def normal(*shape, std=0.5):
        return torch.randn(*shape, generator=g) * std

    x = normal(batch, IN_CHANNELS, 5, 7, std=1.0)
    trunk_weight = normal(HIDDEN, IN_CHANNELS)
    bias = normal(HIDDEN) if trunk_bias else None
    running = (normal(HIDDEN), torch.rand(HIDDEN, generator=g) + 0.5)
    norms = dict(none=None, plain=(*running, None, None),
                 affine=(*running, normal(HIDDEN) + 1, normal(HIDDEN)))
    heads_weight = normal(sum(widths), HIDDEN, std=1.0)
    heads_bias = normal(sum(widths))
    args = (trunk_weight, bias, norms[norm], 1e-5, heads_weight, heads_bias)
    got = cpu_ops.cpu_attention_heads(x, *args, torch.tensor(temperature),
                                      num_sigmoid, widths)
    want = reference(x, *args, temperature, num_sigmoid, widths)
    assert len(got) == len(widths)
    for index, (value, expected) in enumerate(zip(got, want)):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), expected, rtol=1e-5,
                                   atol=1e-6, msg=f'head {index}')
