"""The per-sample attentions of a dynamic convolution and the small pieces
every formulation shares: shape checks, mixing the bank and the biases with
matrix products, channel scalings, padding arithmetic, the empty batch.

With a bank of ``K`` static kernels ``W_k`` ``[O, I/groups, kh, kw]`` and,
per sample ``b``, optional attentions

* ``kernel``  ``a``: ``[B, K]`` (DynamicConv/ODConv) or ``[B, O, K]`` (DyNet);
* ``spatial`` ``s``: ``[B, kh, kw]`` (ODConv);
* ``input``   ``c``: ``[B, C_in]`` (ODConv channel attention);
* ``output``  ``f``: ``[B, C_out]`` (ODConv filter attention);

every formulation computes::

    y_b = f_b * conv(c_b * x_b, sum_k a_bk * s_b * W_k) + sum_k a_bk * bias_k

None of them forms the ``[B, K, ...]`` product of attentions and kernels:
where a per-sample kernel is needed it comes from one matrix product
``[B, K] x [K, O*I*kh*kw]``.
"""
import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]


class ConvAttentions(NamedTuple):
    """Per-sample attentions of a dynamic convolution; ``None`` = not used."""

    kernel: Optional[Tensor] = None  # [B, K] or [B, C_out, K]
    spatial: Optional[Tensor] = None  # [B, kh, kw]
    input: Optional[Tensor] = None  # [B, C_in]
    output: Optional[Tensor] = None  # [B, C_out]


def check_shapes(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                 bias: Optional[Tensor], groups: int) -> None:
    """Raise a ``ValueError`` naming the argument whose shape is wrong."""
    if x.dim() != 4:
        raise ValueError(f'dynamic_conv2d: input must be [B, C, H, W], '
                         f'got shape {tuple(x.shape)}')
    if weight.dim() != 5:
        raise ValueError(f'dynamic_conv2d: weight must be [K, C_out, '
                         f'C_in/groups, kh, kw], got {tuple(weight.shape)}')
    batch, in_channels = x.shape[:2]
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    if group_in * groups != in_channels:
        raise ValueError(
            f'dynamic_conv2d: input has {in_channels} channels but weight '
            f'expects {group_in} x groups={groups}')
    expected = {
        'kernel': ((batch, num_kernels), (batch, out_channels, num_kernels)),
        'spatial': ((batch, kh, kw), ),
        'input': ((batch, in_channels), ),
        'output': ((batch, out_channels), ),
    }
    for name, shapes in expected.items():
        value = getattr(attentions, name)
        if value is not None and tuple(value.shape) not in shapes:
            raise ValueError(
                f'dynamic_conv2d: {name} attention must have shape '
                f'{" or ".join(map(str, shapes))}, got {tuple(value.shape)}')
    if attentions.kernel is None and num_kernels != 1:
        raise ValueError(f'dynamic_conv2d: a bank of {num_kernels} kernels '
                         'needs a kernel attention to mix them')
    if bias is not None and tuple(bias.shape) != (num_kernels, out_channels):
        raise ValueError(f'dynamic_conv2d: bias must be [K, C_out] = '
                         f'{(num_kernels, out_channels)}, got '
                         f'{tuple(bias.shape)}')


def mix_kernels(weight: Tensor, kernel_attention: Optional[Tensor],
                batch: int) -> Tensor:
    """Mix a bank ``[K, O, I, kh, kw]`` into per-sample kernels
    ``[B, O, I, kh, kw]`` with ``[B, K]`` or ``[B, O, K]`` weights."""
    num_kernels = weight.shape[0]
    if kernel_attention is None:
        return weight.expand(batch, *weight.shape[1:])
    if kernel_attention.dim() == 2:
        # One matrix product: [B, K] x [K, O*I*kh*kw].
        mixed = kernel_attention.to(weight.dtype) @ weight.reshape(
            num_kernels, -1)
        return mixed.view(batch, *weight.shape[1:])
    # [B, O, K]: one small matrix product per output channel. Its result
    # lies by output channel; the convolution would copy it into the
    # batch's order, a copy that training then kept for backward in place
    # of these kernels (formed again there, recompute.py): ordered here.
    return torch.einsum('bok,koihw->boihw',
                        kernel_attention.to(weight.dtype),
                        weight).contiguous()


def mix_bias(bias: Tensor, kernel_attention: Optional[Tensor]) -> Tensor:
    """Mix biases ``[K, O]`` into ``[B, O]`` (or ``[1, O]`` without
    attention, i.e. ``K == 1``)."""
    if kernel_attention is None:
        return bias
    if kernel_attention.dim() == 2:
        return kernel_attention.to(bias.dtype) @ bias
    return (kernel_attention.to(bias.dtype) * bias.t()).sum(-1)


def scale_channels(x: Tensor, scale: Optional[Tensor]) -> Tensor:
    """``x [B, C, H, W] * scale [B, C]`` (``x`` itself when no scale)."""
    # a view, not [:, :, None, None]: fewer ops, and the product runs
    # faster on the result at batch 1
    return x if scale is None else x * channel_view(scale).to(x.dtype)


def channel_view(values: Tensor) -> Tensor:
    """Per-channel values ``[B, C]`` as ``[B, C, 1, 1]``, to broadcast over
    an activation."""
    return values.view(*values.shape, 1, 1)


def global_average_pool(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x [B, C, H, W]`` averaged over ``H, W`` into ``[B, C]`` of
    ``dtype``: what every attention of the three papers starts from.

    Recorded by autograd, its gradient is the pooled one broadcast (a view,
    stride 0 over ``H, W``), not a new activation-sized tensor: ``mean``'s
    own backward writes one (the broadcast divided by ``H*W``), which the
    gradient of the layer's input then adds to its convolution's. On a
    depthwise 96-channel 3x3 layer at 112x112, batch 8 (slower Xeon VM,
    profiled), those two passes took 9.7 ms of a 38.7 ms step, 3.3 ms of
    29.2 as one."""
    if torch.is_grad_enabled() and x.requires_grad and \
            not torch.compiler.is_compiling():  # Inductor fuses mean's own
        return _GlobalAveragePool.apply(x, dtype)
    return x.mean(dim=(2, 3), dtype=dtype)


class _GlobalAveragePool(torch.autograd.Function):
    """:func:`global_average_pool` under autograd (differentiable twice:
    its backward is made of differentiable ops)."""

    @staticmethod
    def forward(ctx, x: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return x.mean(dim=(2, 3), dtype=dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        batch, channels, height, width = ctx.shape
        return (channel_view(grad / (height * width)).to(ctx.dtype).expand(
            batch, channels, height, width), None)


def finish(y: Tensor, attentions: ConvAttentions,
           bias: Optional[Tensor]) -> Tensor:
    """Apply the output (filter) attention, then add the mixed bias."""
    y = scale_channels(y, attentions.output)
    if bias is not None:
        y = y + channel_view(mix_bias(bias, attentions.kernel)).to(y.dtype)
    return y


def _cpu_vendor() -> str:
    """``vendor_id`` of ``/proc/cpuinfo`` (``'GenuineIntel'``,
    ``'AuthenticAMD'``...), or ``''`` where there is none."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('vendor_id'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''


# Read once, at import: torch.compile then sees a constant, not file I/O.
CPU_VENDOR = _cpu_vendor()


def intel_cpu() -> bool:
    """Whether this process runs on an Intel CPU (where MKL takes its fast
    paths)."""
    return CPU_VENDOR == 'GenuineIntel'


# The widest vector instructions torch's CPU kernels use here ('AVX2',
# 'AVX512', ...), read once like CPU_VENDOR.
CPU_CAPABILITY = torch.backends.cpu.get_cpu_capability()

# On an AVX2 AMD CPU a batch-1 1x1 convolution runs as a matrix product up
# to this many input elements (C_in * H * W): measured on a 2-core AMD
# EPYC (Zen 3) VM, the product won from 64 channels at 56x56 (0.41 against
# 0.62 ms) to 2048 at 7x7 (1.10 against 2.02 ms), tied at 512 channels
# 28x28 and lost at 256 channels 56x56 (1.73 against 1.48 ms), where MKL's
# GEMM, slower than oneDNN's on AMD CPUs, outweighs the reorders into
# oneDNN's layout that the product saves.
AMD_POINTWISE_PRODUCT_MAX_INPUT = 1 << 18


def pointwise_product_wins(x: Tensor) -> bool:
    """Whether a batch-1 float32 1x1 convolution of ``x`` (a CPU tensor)
    runs faster as one MKL matrix product than as oneDNN's convolution on
    this CPU. Intel CPUs: always; AMD CPUs without AVX-512: up to
    :data:`AMD_POINTWISE_PRODUCT_MAX_INPUT`. Others keep the convolution,
    not having been measured at batch 1 (on the AVX-512 AMD CPU measured
    MKL ran a batch-8 1x1 GEMM at half oneDNN's speed)."""
    if intel_cpu():
        return True
    return (CPU_VENDOR == 'AuthenticAMD' and CPU_CAPABILITY == 'AVX2'
            and x.numel() <= AMD_POINTWISE_PRODUCT_MAX_INPUT)


def pointwise_batch_product_wins(x: Tensor, kernels: Tensor,
                                 stride: IntPair, padding: Padding,
                                 groups: int) -> bool:
    """Whether per-sample 1x1 kernels ``kernels [B, O, C, 1, 1]`` (stride 1,
    no padding, one group) convolve ``x [B, C, H, W]`` faster as one batched
    MKL matrix product ``[B, O, C] x [B, C, H*W]`` than as oneDNN's grouped
    convolution with the batch folded into the groups: float32 contiguous
    CPU tensors on an Intel CPU, eager (not measured compiled), autocast
    off. (Only the kernels' size and dtype are read: the selection asks it
    of the bank ``[K, O, C, kh, kw]``.)

    On the slower Xeon VM (2 cores, docs/benchmarks.md), forward +
    backward at batch 8, the product against the grouped convolution and
    a static ``nn.Conv2d`` of the shape: 256->64 at 56x56 10.3 against 18.4
    and 15.9 ms, 512->128 at 28x28 8.7 against 14.6 and 11.6, 1024->256 at
    14x14 8.5 against 15.8 and 9.4, 2048->512 at 7x7 13.2 against 33.2 and
    11.2. Not measured on AMD CPUs (on the AVX-512 one MKL ran a batch-8
    1x1 GEMM at half oneDNN's speed), which keep the convolution.
    Kernels that are not contiguous are copied for the product (those of
    :func:`mix_kernels` are contiguous)."""
    return (_pointwise_float32_cpu(x, kernels, stride, padding, groups)
            and intel_cpu() and not torch.compiler.is_compiling())


def _pointwise_float32_cpu(x: Tensor, kernel: Tensor, stride: IntPair,
                           padding: Padding, groups: int) -> bool:
    """A convolution of ``x`` by ``kernel`` (any leading dims, ``[..., kh,
    kw]``) that is a matrix product on ``x`` as it lies: a 1x1 kernel,
    stride 1, no padding, one group, float32 both, ``x`` a contiguous CPU
    tensor, CPU autocast off."""
    return (groups == 1 and kernel.shape[-2:] == (1, 1)
            and x.dtype == torch.float32 and kernel.dtype == torch.float32
            and x.is_cpu and pair(stride) == (1, 1)
            # a 1x1 kernel: 'same' and 'valid' both pad nothing
            and (isinstance(padding, str) or pair(padding) == (0, 0))
            and x.is_contiguous() and not autocast_enabled('cpu'))


def inductor_freezes() -> bool:
    """Whether this code is being compiled with Inductor's freezing on (its
    CPU inference recipe: constant weights prepacked, convolutions in
    oneDNN's layout end to end)."""
    if not torch.compiler.is_compiling():
        return False
    from torch._inductor import config as inductor_config
    return bool(inductor_config.freezing)


def shared_kernel_conv2d(x: Tensor, kernel: Tensor, bias: Optional[Tensor],
                         stride: IntPair, padding: Padding, dilation: IntPair,
                         groups: int) -> Tensor:
    """``F.conv2d(x, kernel, bias, ...)``: one kernel ``[O, I/groups, kh,
    kw]`` for the whole batch, run the fastest measured way.

    That is ``F.conv2d`` but in one case: a pointwise convolution (1x1,
    stride 1, no padding, one group) of a single float32 sample without
    autograd, on a CPU where :func:`pointwise_product_wins`, is one MKL
    matrix product ``[O, C] x [C, H*W]`` on the NCHW input as it lies.
    There oneDNN's convolution reorders the weight and the activations
    into its blocked layout on every call; on an Intel CPU the product
    beat it at every ResNet-50 1x1 shape (batch 1, 2 threads: 10-60%
    faster, ``docs/benchmarks.md``), eager and under ``torch.compile``
    (compiled batch-1 OD-ResNet-50 1x: 1.13x -> 1.08x the compiled static
    network), on an AVX2 AMD CPU up to a size of input. Not at batch 8
    (the broadcast product is slower), not on CPUs not measured, and not
    under Inductor's freezing, which keeps the convolutions' activations
    in oneDNN's layout and where the products cost more than they save
    (frozen batch-1 OD-ResNet-50 1x: 1.31x the frozen static network with
    convolutions, 1.43x with products).
    """
    if (x.shape[0] == 1
            and _pointwise_float32_cpu(x, kernel, stride, padding, groups)
            and pointwise_product_wins(x) and kernel.is_contiguous()
            and not records_autograd(x, kernel, bias)
            and not inductor_freezes()):
        out_channels, in_channels = kernel.shape[:2]
        matrix = kernel.view(out_channels, in_channels)
        columns = x.view(in_channels, -1)
        y = (torch.mm(matrix, columns) if bias is None else torch.addmm(
            bias.view(out_channels, 1).to(x.dtype), matrix, columns))
        return y.view(1, out_channels, *x.shape[2:])
    return F.conv2d(x, kernel, bias, stride, padding, dilation, groups)


def explicit_padding(padding: Padding, kernel_size: Tuple[int, int],
                     dilation: IntPair) -> Tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of an ``F.conv2d`` padding argument.

    ``'same'`` puts the odd pixel of an even total on the bottom/right, as
    ``F.conv2d`` does.
    """
    dilation = pair(dilation)
    if isinstance(padding, str):
        if padding == 'valid':
            return 0, 0, 0, 0
        if padding != 'same':
            raise ValueError(f"dynamic_conv2d: padding={padding!r} is "
                             "invalid: use an int, a pair, 'same' or 'valid'")
        pads = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def output_size(x: Tensor, kernel_size: Tuple[int, int], stride: IntPair,
                padding: Padding, dilation: IntPair) -> Tuple[int, int]:
    """``(H_out, W_out)`` of the convolution."""
    top, bottom, left, right = explicit_padding(padding, kernel_size,
                                                dilation)
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    kh, kw = kernel_size
    return ((x.shape[2] + top + bottom - dh * (kh - 1) - 1) // sh + 1,
            (x.shape[3] + left + right - dw * (kw - 1) - 1) // sw + 1)


def empty_batch_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                       bias: Optional[Tensor], stride: IntPair,
                       padding: Padding, dilation: IntPair,
                       groups: int) -> Tensor:
    """The ``[0, C_out, H_out, W_out]`` output of an empty batch.

    A detector's mask head meets zero RoIs; a grouped conv cannot fold zero
    samples into its groups. Every input stays in the graph, so backward
    gives each of them its true gradient, zeros (a parameter left out of the
    graph would trip DistributedDataParallel's unused-parameter check).
    """
    y = F.conv2d(x, weight.sum(0), None, stride, padding, dilation, groups)
    for tensor in (*attentions, bias):
        if tensor is not None:
            y = y + tensor.sum().to(y.dtype) * 0
    return y


def records_autograd(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd records an op on these tensors (``None`` ignored):
    grad mode is on and one of them requires grad."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def autocast_enabled(device: str) -> bool:
    """Whether autocast is on for ``device`` (a device type without
    autocast, such as ``'meta'``, has it off)."""
    if device == 'cpu' or device == 'cuda':
        # Both always have autocast: one call, not four (per layer, at
        # batch-1 inference, such calls add up to a visible share).
        return torch.is_autocast_enabled(device)
    if torch.compiler.is_compiling():
        # Dynamo in torch <= 2.11 cannot trace is_autocast_available (a
        # graph break in every layer); a compiled model's device has
        # autocast.
        return torch.is_autocast_enabled(device)
    return (torch.amp.is_autocast_available(device)
            and torch.is_autocast_enabled(device))


def compute_dtype(device: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a matrix product or convolution runs in on ``device``
    for ``dtype`` operands: autocast's, where it is on."""
    return (torch.get_autocast_dtype(device) if autocast_enabled(device)
            else dtype)


def pair(value: IntPair) -> Tuple[int, int]:
    """``(v, v)`` for an int, the pair itself otherwise."""
    return (value, value) if isinstance(value, int) else tuple(value)


ConvFunction = Callable[..., Tensor]


def accepts_empty_batch(run: ConvFunction) -> ConvFunction:
    """Route a batch of 0 samples of a formulation to
    :func:`empty_batch_conv2d` (a grouped conv cannot fold 0 samples)."""

    @functools.wraps(run)
    def wrapper(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                *args: Any, **options: Any) -> Tensor:
        if x.shape[0] == 0:
            return empty_batch_conv2d(x, weight, attentions, *args)
        return run(x, weight, attentions, *args, **options)

    return wrapper
