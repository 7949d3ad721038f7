"""The slow oracle: a per-sample loop that builds each sample's kernel
explicitly and calls plain ``F.conv2d``. Written independently of
``dynconv_mm.execution``: every attention is folded into the kernel here,
whereas the package scales activations."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _coefficient(kernel: Optional[Tensor], b: int, o: int, k: int):
    """Weight of kernel ``k`` for output channel ``o`` of sample ``b``."""
    if kernel is None:  # a single kernel
        assert k == 0
        return 1.0
    return kernel[b, k] if kernel.dim() == 2 else kernel[b, o, k]


def per_sample_kernel(weight: Tensor, groups: int, b: int,
                      kernel: Optional[Tensor] = None,
                      spatial: Optional[Tensor] = None,
                      input: Optional[Tensor] = None,
                      output: Optional[Tensor] = None) -> Tensor:
    """Sample ``b``'s kernel ``[O, I/groups, kh, kw]``."""
    num_kernels, out_channels, group_in = weight.shape[:3]
    group_out = out_channels // groups
    rows = []
    for o in range(out_channels):
        w_o = 0
        for k in range(num_kernels):
            w_o = w_o + _coefficient(kernel, b, o, k) * weight[k, o]
        if spatial is not None:
            w_o = w_o * spatial[b]
        if input is not None:
            g = o // group_out
            w_o = w_o * input[b, g * group_in:(g + 1) * group_in, None, None]
        if output is not None:
            w_o = w_o * output[b, o]
        rows.append(w_o)
    return torch.stack(rows)


def per_sample_bias(bias: Tensor, b: int,
                    kernel: Optional[Tensor] = None) -> Tensor:
    num_kernels, out_channels = bias.shape
    values = []
    for o in range(out_channels):
        v = 0
        for k in range(num_kernels):
            v = v + _coefficient(kernel, b, o, k) * bias[k, o]
        values.append(v)
    return torch.stack(values)


def reference_dynamic_conv2d(x: Tensor, weight: Tensor,
                             kernel: Optional[Tensor] = None,
                             spatial: Optional[Tensor] = None,
                             input: Optional[Tensor] = None,
                             output: Optional[Tensor] = None,
                             bias: Optional[Tensor] = None,
                             stride=1, padding=0, dilation=1,
                             groups: int = 1) -> Tensor:
    outs = []
    for b in range(x.shape[0]):
        w = per_sample_kernel(weight, groups, b, kernel, spatial, input,
                              output)
        bb = None if bias is None else per_sample_bias(bias, b, kernel)
        outs.append(F.conv2d(x[b:b + 1], w, bb, stride, padding, dilation,
                             groups))
    return torch.cat(outs)


def _mlp(layer, x: Tensor) -> Tensor:
    """The attention trunk of a dynconv_mm layer, recomputed by hand."""
    trunk = layer.attention.trunk
    pooled = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    h = pooled @ trunk.fc.weight.t()
    if trunk.fc.bias is not None:
        h = h + trunk.fc.bias
    if trunk.norm is not None:
        norm = trunk.norm
        if norm.training:
            mean = h.mean(0)
            var = h.var(0, unbiased=False)
        else:
            mean, var = norm.running_mean, norm.running_var
        h = (h - mean) / torch.sqrt(var + norm.eps)
        if norm.weight is not None:  # affine=False has neither
            h = h * norm.weight + norm.bias
    return torch.clamp(h, min=0)


def _head(layer, h: Tensor, name: str) -> Tensor:
    weight, bias = layer.attention.head_parameters(name)
    return (h @ weight.t() + bias) / layer.attention.temperature


def reference_attentions(layer, x: Tensor) -> dict:
    """The paper's attentions of ``layer`` for input ``x``, by hand."""
    h = _mlp(layer, x)
    heads = layer.attention.head_slices
    kind = type(layer).__name__
    if kind == 'DynamicConv2d':
        return dict(kernel=torch.softmax(_head(layer, h, 'kernel'), -1))
    if kind == 'DyNetConv2d':
        eta = torch.sigmoid(_head(layer, h, 'kernel'))
        return dict(kernel=eta.reshape(x.shape[0], layer.out_channels,
                                       layer.num_kernels))
    assert kind == 'ODConv2d', kind
    att = dict(input=torch.sigmoid(_head(layer, h, 'input')))
    if 'output' in heads:
        att['output'] = torch.sigmoid(_head(layer, h, 'output'))
    if 'spatial' in heads:
        att['spatial'] = torch.sigmoid(_head(layer, h, 'spatial')).reshape(
            x.shape[0], *layer.kernel_size)
    if 'kernel' in heads:
        att['kernel'] = torch.softmax(_head(layer, h, 'kernel'), -1)
    return att


def reference_layer_forward(layer, x: Tensor) -> Tensor:
    """What ``layer(x)`` must compute, from its parameters alone."""
    return reference_dynamic_conv2d(
        x, layer.weight, bias=layer.bias, stride=layer.stride,
        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        **reference_attentions(layer, x))


def assert_layer_matches_oracle(layer, x: Tensor, forward=None) -> None:
    """``forward(x)`` (default ``layer(x)``, e.g. a compiled layer) equals
    :func:`reference_layer_forward`: output, and the gradients of a random
    cotangent with respect to ``x`` (if it requires grad) and every
    parameter of ``layer``."""
    out = (layer if forward is None else forward)(x)
    ref = reference_layer_forward(layer, x)
    torch.testing.assert_close(out, ref)
    named = [('input', x)] if x.requires_grad else []
    named += list(layer.named_parameters())
    names, inputs = zip(*named)
    cotangent = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, cotangent)
    want = torch.autograd.grad(ref, inputs, cotangent)
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, msg=lambda m: f'grad {name}: {m}')
