"""Compiled CPU ops (``csrc/``, the ``dynconv_mm._cpu_ops`` extension),
where eager PyTorch spends more on small ops and extra passes than on the
arithmetic. Two for inference:

* :func:`cpu_attention_heads`, the attention MLP: ``pooled [B, C] ->
  relu(norm(pooled W1^T [+ b1])) -> act((. Wh^T + bh) / tau)``, each
  head's ``act`` a sigmoid or a softmax over the head. Eager, that is
  eight to ten small ops per layer, at batch 1 on a CPU 10-15 us each
  inside a network, several times their arithmetic: the 48 attentions of
  OD-ResNet-50 1x cost it 8-10 points of the static network's latency on
  2 cores (``docs/benchmarks.md``). The op pools, runs the trunk and every
  head in one call.
* :func:`cpu_sample_kernel`, one sample's kernel from the bank, its
  mixing coefficients and the attentions folded into it, in one pass over
  the bank (eager: a pass per kernel and per factor over kernel-sized
  tensors, several times the cache in deep layers). It needs AVX2 and
  FMA.
* :func:`cpu_sample_conv`, one sample's convolution with that kernel
  never formed: mixed a few rows at a time inside a GEMM's register tiles
  over the unfolded input, the next rows' bank prefetched while the tiles
  compute, so reading the bank overlaps the arithmetic instead of
  preceding it. It needs AVX-512; where it runs is
  :func:`cpu_sample_conv_wins`. Over a batch it also runs ``tiled_gemm``'s
  forward on Intel CPUs (:func:`cpu_sample_conv_batch`).

And three for ``tiled_gemm``'s per-sample GEMMs, in training too
(:func:`cpu_sample_gemm_forward`, :func:`cpu_sample_gemm_input_grad`,
:func:`cpu_sample_gemm_backward`): each sample's kernel is mixed from
the bank inside the GEMM's tiles, where PyTorch writes a tile of kernels
(and in backward of kernel gradients) to memory between batched products;
the backward's two products share one read of the bank where that wins.

And two for the per-sample kernels of ``batch_folded`` and ``aggregated``
over a batch, in training too (:func:`cpu_sample_kernels`,
:func:`cpu_sample_kernels_backward`): :func:`cpu_sample_kernel` for every
sample from one read of the bank, and its gradients from one pass over the
kernels' gradient and the bank, where PyTorch makes a pass per factor and
per product, forward and backward.

And two for the unfolded input of ``im2col`` and ``tiled_gemm``, in
training too (:func:`cpu_unfold_columns`, :func:`cpu_fold_columns`):
``F.unfold`` and ``F.fold`` with the samples' channels over threads, the
fold from columns of any strides; they give PyTorch's bits.

The inference ops run only where nothing needs the call to be differentiable,
traceable or countable (:func:`cpu_ops_usable`): not under
``torch.compile`` (which fuses the same ops itself), ``torch.jit.trace``
or a dispatch mode (the FLOP counters, which must see every operator),
not inside :func:`cpu_ops_suspended`, and only on contiguous float32 CPU
tensors. Their sums run in another order than PyTorch's, so their values
differ from it by float rounding: a layer in training mode suspends them
(a training forward without autograd is a reentrant checkpoint's first
pass, which must match its recomputation in backward).

The GEMM ops and the batch's kernels run inside autograd Functions
(``tiled_gemm``'s, ``per_sample_kernels``'), with or without autograd
alike, so they are not suspended: a checkpoint's two passes both run
them. The GEMM ops need AVX2 and FMA (:func:`cpu_sample_gemm_usable`); on
Intel CPUs with AVX-512 their gradients run in AVX-512 register tiles
(:func:`_wide_tiles`) and their forward by :func:`cpu_sample_conv_batch`.
Layers form a batch's kernels by the ops on those CPUs only
(:func:`cpu_sample_kernels_apply`).

They are compiled when the package is installed (``tools/install.sh``;
``setup.py`` builds them against the torch it sees). Where they were not
(a source tree on ``PYTHONPATH``, an isolated build without torch) the
same values are computed in PyTorch; :data:`CPU_OPS_ERROR` says why, and
``DYNCONV_MM_CPU_OPS=0`` turns them off.
"""
import importlib
import os
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .attentions import (CPU_CAPABILITY, ConvAttentions, IntPair, Padding,
                         autocast_enabled, intel_cpu, output_size, pair,
                         records_autograd)
from .cpu_memory import huge_pages_wanted


def _load_ops():
    """The compiled module, and ``None``; or ``None`` and why not."""
    if os.environ.get('DYNCONV_MM_CPU_OPS', '1') == '0':
        return None, 'turned off by DYNCONV_MM_CPU_OPS=0'
    try:
        return importlib.import_module('dynconv_mm._cpu_ops'), None
    except ImportError as error:
        return None, f'dynconv_mm._cpu_ops is not built ({error})'


_CPU_OPS, CPU_OPS_ERROR = _load_ops()


_SUSPENDED = 0  # how many cpu_ops_suspended() contexts are open


@contextmanager
def cpu_ops_suspended() -> Iterator[None]:
    """Within it the compiled ops do not run: everything is computed in
    PyTorch."""
    global _SUSPENDED
    _SUSPENDED += 1
    try:
        yield
    finally:
        _SUSPENDED -= 1


def cpu_ops_available() -> bool:
    """Whether the compiled ops are there (and not turned off)."""
    return _CPU_OPS is not None


def cpu_ops_usable(x: Tensor) -> bool:
    """Whether the compiled ops may take ``x``: they are there and not
    suspended, ``x`` is a contiguous float32 CPU tensor, and nothing
    compiles, traces or watches (a ``TorchDispatchMode``) the call.
    Autograd is the caller's check."""
    return not _SUSPENDED and _takes(x)


def cpu_ops_ready(*tensors: Optional[Tensor]) -> bool:
    """Whether the compiled ops may run now on ``tensors`` (``None``
    ignored), where a decision taken on an earlier call of the same shapes
    is reused: not suspended, no CPU autocast, nothing compiles, traces or
    watches the call, and each a contiguous float32 CPU tensor. Autograd
    is the caller's check."""
    return (not _SUSPENDED and not autocast_enabled('cpu')
            and _takes(*tensors))


def _unobserved() -> bool:
    """Nothing compiles, traces or watches the call: a dispatch mode (FLOP
    counters, dynconv_mm.analysis) must see every operator, and the ops
    run theirs below it."""
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch._C._len_torch_dispatch_stack())


def _takes(*tensors: Optional[Tensor]) -> bool:
    """The ops are there, nothing compiles, traces or watches the call, and
    every tensor (``None`` ignored) is a contiguous float32 CPU tensor
    (suspension and the CPU's instructions are each op's own check)."""
    if _CPU_OPS is None or not _unobserved():
        return False
    for t in tensors:  # a loop, not all() over a generator: ~1 us less
        if t is not None and not _contiguous_float32_cpu(t):
            return False
    return True


def _contiguous_float32_cpu(t: Tensor) -> bool:
    """What every tensor the compiled ops read must be."""
    # is_cpu, not device.type: at batch-1 inference these checks run
    # several times per layer, and building a device costs ~0.4 us
    return t.is_cpu and t.dtype == torch.float32 and t.is_contiguous()


# The ops use no wider vectors than torch's own kernels do here
# (CPU_CAPABILITY): ATEN_CPU_CAPABILITY=avx2, which holds torch to AVX2 on
# an AVX-512 CPU (to spare its clock, or to see how an AVX2 CPU fares),
# holds them to their AVX2 code too, and =default turns them off.
_AVX2_FMA = (_CPU_OPS is not None and CPU_CAPABILITY.startswith('AVX')
             and _CPU_OPS.avx2_fma_supported())


def _avx2_fma_supported() -> bool:
    return _AVX2_FMA


_AVX512 = (_CPU_OPS is not None and CPU_CAPABILITY.startswith('AVX512')
           and _CPU_OPS.avx512_supported())

# Measured on a 2-core Intel Emerald Rapids VM (docs/benchmarks.md), every
# ResNet-50 shape at batch 1 with four kernels, one and DyNet-like: the op
# beat forming the kernel and convolving wherever the bank outweighs the
# activations: every layer on 7x7 maps (ODConv 4x 512-channel 3x3: 1.68x
# against 2.19x a static convolution), 1x1 layers whose block of unfolded
# input, min(C_in, 512) rows by H*W, fits this (1024->256 at 14x14: 1.26x
# against 1.39x; 64->256 at 56x56: 0.76x against 0.99x) and lost where it
# does not (256->64 at 56x56: 1.82x against 1.00x); with a kxk kernel up
# to 14x14 outputs once a wider map's unit took its thread's every row
# (ODConv 4x 256-channel 3x3: 1.15 against 1.23 ms; from 28x28 at stride 2
# 1.20 against 1.35; OD-ResNet-50 4x -0.36 ms, 1x -0.43, DY -0.31), but not
# past it (17x17 1.62 against 1.46 ms, 20x20 2.00 against 1.80, 28x28).
SAMPLE_CONV_MAX_BLOCK_BYTES = 1 << 20
SAMPLE_CONV_MAX_UNFOLDED_PIXELS = 196


def _pointwise(kernel_size: Tuple[int, int], stride: IntPair,
               padding: Padding) -> bool:
    """A 1x1 kernel, stride 1, no padding: the input is its own unfolded
    columns."""
    return (kernel_size == (1, 1) and pair(stride) == (1, 1)
            and pair(padding) == (0, 0))


def cpu_sample_conv_fits(x: Tensor, weight: Tensor, stride: IntPair,
                         padding: Padding, dilation: IntPair,
                         groups: int) -> bool:
    """The CPU and shapes part of :func:`cpu_sample_conv_wins`: the ops are
    there, an Intel CPU with AVX-512 (measured there only), one group,
    numeric padding, and a shape where the op was measured to win."""
    if not (_AVX512 and groups == 1 and not isinstance(padding, str)
            and _CPU_OPS is not None and intel_cpu()):
        return False
    kernel_size = tuple(weight.shape[3:])
    height, width = output_size(x, kernel_size, stride, padding, dilation)
    pixels = height * width
    if _pointwise(kernel_size, stride, padding):
        rows = min(x.shape[1], 512)  # the op's block of columns
        return rows * pixels * 4 <= SAMPLE_CONV_MAX_BLOCK_BYTES
    return pixels <= SAMPLE_CONV_MAX_UNFOLDED_PIXELS


def cpu_sample_conv_wins(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                         stride: IntPair, padding: Padding,
                         dilation: IntPair, groups: int) -> bool:
    """Whether a batch-1 sample's convolution runs as
    :func:`cpu_sample_conv` (the caller has checked
    :func:`cpu_sample_kernel_applies`): :func:`cpu_sample_conv_fits`, and
    ``x`` and ``bias`` as the ops take them, not recorded by autograd, no
    autocast."""
    return (cpu_sample_conv_fits(x, weight, stride, padding, dilation,
                                 groups)
            and _takes(x)
            and (bias is None or _contiguous_float32_cpu(bias))
            and not records_autograd(x, bias)
            and not autocast_enabled('cpu'))


def cpu_sample_conv(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                    bias: Optional[Tensor], stride: IntPair,
                    padding: Padding, dilation: IntPair) -> Tensor:
    """``F.conv2d(x, kernel, bias, stride, padding, dilation)`` of one
    sample ``x`` ``[1, C_in, H, W]``, with ``kernel`` the sample's kernel
    that :func:`cpu_sample_kernel` would form from the bank ``weight``
    ``[K, C_out, C_in, kh, kw]`` and every attention (one group), without
    forming it. ``[1, C_out, H_out, W_out]``."""
    return cpu_sample_conv_call(x, weight, stride, padding, dilation)(
        x, weight, attentions, bias)


SampleConvCall = Callable[[Tensor, Tensor, ConvAttentions, Optional[Tensor]],
                          Tensor]


def cpu_sample_conv_call(x: Tensor, weight: Tensor, stride: IntPair,
                         padding: Padding,
                         dilation: IntPair) -> SampleConvCall:
    """:func:`cpu_sample_conv` as a function of ``(x, weight, attentions,
    bias)`` for calls of these shapes and geometry: the unfolding and the
    output's shape worked out once."""
    kernel_size = tuple(weight.shape[3:])
    out_shape = (1, weight.shape[1],
                 *output_size(x, kernel_size, stride, padding, dilation))
    sample_conv = _CPU_OPS.sample_conv
    if _pointwise(kernel_size, stride, padding):  # the input as it lies
        columns = (1, x.shape[1], -1)

        def run(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                bias: Optional[Tensor]) -> Tensor:
            return sample_conv(x.view(columns), weight, attentions.kernel,
                               attentions.input, attentions.spatial,
                               attentions.output, bias).view(out_shape)
        return run
    unfold = _CPU_OPS.unfold_columns
    unfolding = (kernel_size, pair(dilation), pair(padding), pair(stride),
                 None, _AVX512)

    def run_unfolded(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                     bias: Optional[Tensor]) -> Tensor:
        return sample_conv(unfold(x, *unfolding), weight, attentions.kernel,
                           attentions.input, attentions.spatial,
                           attentions.output, bias).view(out_shape)
    return run_unfolded


def cpu_sample_conv_batch_fits(cols: Tensor, bank: Tensor,
                               mixing: Tensor) -> bool:
    """Whether ``tiled_gemm``'s forward, where its compiled GEMMs would run
    it (:func:`cpu_sample_gemm_forward`'s arguments, cols ``[B, g, J, P]``
    of at most 99 pixels), runs as :func:`cpu_sample_conv` over the batch
    instead: an Intel CPU with AVX-512, one group, tensors as the ops take
    them (there the compiled GEMMs take shorter rows,
    :data:`.tiled_gemm_conv2d.COMPILED_GEMM_MIN_ROW_AVX512`). Measured on the
    Emerald Rapids VM at batch 8 against the AVX2 GEMM: 512-channel 3x3 at
    7x7 with four kernels 11.4 against 14.9 ms (DyNet's six 13.5 against
    16.7), 2048->512 1x1 at 7x7 5.0 against 6.7 ms, 512->2048 at 7x7 4.4
    against 6.1 ms. (On 14x14 maps, not run there: 256->1024 3.1 against
    5.1 ms, but 1024->256 6.2 against 6.0 ms.)"""
    return (_wide_tiles() and cols.shape[1] == 1
            and _takes(cols, bank, mixing))


def cpu_sample_conv_batch(cols: Tensor, bank: Tensor,
                          mixing: Tensor) -> Tensor:
    """:func:`cpu_sample_gemm_forward` (one group) by the AVX-512 op of
    :func:`cpu_sample_conv`: each sample's rows of the kernel mixed into a
    panel from the same bank rows, read from memory once for the batch."""
    batch, _, row_size, pixels = cols.shape
    num_kernels, _, group_out, _ = bank.shape
    y = _CPU_OPS.sample_conv(cols.view(batch, row_size, pixels),
                             bank.view(num_kernels, group_out, row_size, 1,
                                       1), mixing, None, None, None, None)
    return y.view(batch, 1, group_out, pixels)


def _wide_tiles() -> bool:
    """Whether the sample-GEMM ops run in AVX-512 register tiles (64
    columns; AVX2's take 16): on Intel CPUs with AVX-512, where they were
    measured (unmeasured on AMD's). On the Emerald Rapids VM, 512-channel
    3x3 at 7x7, batch 8, four kernels: the input gradient 10 against 14 ms,
    the weight gradients 11 against 15 ms (docs/benchmarks.md)."""
    return _AVX512 and intel_cpu()


_HUGE_PAGES = huge_pages_wanted()


def cpu_sample_gemm_usable(*tensors: Tensor) -> bool:
    """Whether the sample-GEMM ops may take ``tensors``: they are there,
    the CPU has AVX2 and FMA, every tensor is a contiguous float32 CPU
    tensor, and nothing compiles, traces or watches the call (as
    :func:`cpu_ops_usable`, without its suspension)."""
    return _avx2_fma_supported() and _takes(*tensors)


def cpu_sample_gemm_forward(cols: Tensor, bank: Tensor,
                            mixing: Tensor) -> Tensor:
    """``y[b, g] = (sum_k m[b, k] bank[k, g]) @ cols[b, g]``: cols ``[B,
    g, J, P]``, bank ``[K, g, O/g, J]``, mixing ``m`` ``[B, K]`` (or DyNet's
    ``[B, g, O/g, K]``, per output row); y ``[B, g, O/g, P]``."""
    return _CPU_OPS.sample_gemm_forward(cols, bank, mixing)


def cpu_sample_gemm_input_grad(grad_y: Tensor, bank: Tensor,
                               mixing: Tensor) -> Tensor:
    """The gradient of :func:`cpu_sample_gemm_forward`'s ``cols``,
    transposed (``[B, g, P, J]``), from the output gradient ``grad_y``
    ``[B, g, O/g, P]``."""
    return _CPU_OPS.sample_gemm_input_grad(grad_y, bank, mixing,
                                           _wide_tiles(), _HUGE_PAGES)


def cpu_sample_gemm_backward(
        grad_y: Tensor, cols: Tensor, bank: Tensor, mixing: Tensor,
        input_grad: bool = False) -> List[Tensor]:
    """The gradients of :func:`cpu_sample_gemm_forward`'s bank and mixing,
    from the output gradient ``[B, g, O/g, P]`` and its input ``cols``;
    with ``input_grad``, also the input gradient, transposed (``[B, g, P,
    J]``), as a third, in the same pass over the bank where that was
    measured faster (a batch small enough that the pass's working set
    stays near L2: the op decides, ``backward_fuses`` in
    ``sample_gemm_cpu.cpp``). Both gradient ops ask for the bank in 2 MiB
    pages first, and this one writes the bank's gradient into 2 MiB pages
    kept from call to call (:func:`.cpu_memory.huge_pages_wanted`)."""
    return _CPU_OPS.sample_gemm_backward(grad_y, cols, bank, mixing,
                                         input_grad, _wide_tiles(),
                                         _HUGE_PAGES)


def cpu_unfold_usable(x: Tensor) -> bool:
    """Whether :func:`cpu_unfold_columns` may unfold ``x``: the ops are
    there, ``x`` is a contiguous float32 CPU tensor and nothing compiles,
    traces or watches the call. Not suspended: unfolding and folding give
    the same bits as ``F.unfold`` and ``F.fold``."""
    return _takes(x)


def cpu_fold_usable(cols: Tensor) -> bool:
    """Whether :func:`cpu_fold_columns` may fold ``cols`` (float32 on the
    CPU, of any strides; otherwise as :func:`cpu_unfold_usable`)."""
    return (_CPU_OPS is not None and _unobserved()
            and cols.is_cpu and cols.dtype == torch.float32)


def cpu_unfold_columns(x: Tensor, kernel_size: Tuple[int, int],
                       dilation: Tuple[int, int], padding: Tuple[int, int],
                       stride: Tuple[int, int],
                       rows: Optional[Tensor] = None) -> Tensor:
    """``F.unfold(x, kernel_size, dilation, padding, stride)`` of ``x``
    ``[B, C, H, W]``: ``[B, C*kh*kw, H_out*W_out]``, the samples' channels
    split over threads (PyTorch's runs one sample at a time); given
    ``rows`` (contiguous, ``[B, C, kh*kw]``), each row times its scale
    (the values of unfolding, then multiplying; the padding's zeros stay
    positive). Its rows in AVX-512 registers where the CPU has them."""
    return _CPU_OPS.unfold_columns(x, kernel_size, dilation, padding, stride,
                                   rows, _AVX512)


def cpu_fold_columns(cols: Tensor, size: Tuple[int, int],
                     kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                     padding: Tuple[int, int], stride: Tuple[int, int],
                     rows: Optional[Tensor] = None,
                     x: Optional[Tensor] = None) -> List[Tensor]:
    """``[F.fold(cols, size, kernel_size, dilation, padding, stride)]`` of
    ``cols`` ``[B, C*kh*kw, P]`` of any strides (PyTorch's needs them
    contiguous, and the sample GEMMs' input gradient is a transposed
    view): ``[B, C, H, W]``, summed in the same order, so the same
    bits. Given ``rows`` ``[B, C, kh*kw]``, ``cols`` is the gradient of
    :func:`cpu_unfold_columns`'s scaled columns: each row is scaled before
    folding; given the unfolded ``x`` too, the list also holds the
    gradient of ``rows``, summed over the row's pixels in the same pass.
    With AVX-512, 16 channels at a time in registers where the columns'
    rows or pixels are contiguous (the same bits as its portable loops)."""
    return _CPU_OPS.fold_columns(cols, size[0], size[1], kernel_size,
                                 dilation, padding, stride, rows, x, _AVX512)


def cpu_attention_applies(x: Tensor, trunk_weight: Tensor) -> bool:
    """Whether :func:`cpu_attention_heads` may run the attention of ``x``
    and of float32 parameters: autograd off, ``x`` non-empty and
    :func:`cpu_ops_usable`."""
    return (not torch.is_grad_enabled() and cpu_ops_usable(x)
            and trunk_weight.dtype == torch.float32 and x.numel() > 0)


def cpu_attention_heads(x: Tensor, trunk_weight: Tensor,
                        trunk_bias: Optional[Tensor],
                        norm: Optional[Sequence[Optional[Tensor]]],
                        norm_eps: float, heads_weight: Tensor,
                        heads_bias: Tensor, temperature: Tensor,
                        num_sigmoid: int,
                        widths: Sequence[int]) -> List[Tensor]:
    """Every head's activated output ``[B, width]``, in ``widths``' order.

    Args:
        x: ``[B, C, H, W]``, pooled over ``H, W``.
        trunk_weight, trunk_bias: the trunk FC, ``[Hd, C]`` and ``[Hd]``
            or ``None``.
        norm: the trunk's BatchNorm in eval mode as ``(running_mean,
            running_var, weight, bias)`` (the affine pair may be
            ``None``), or ``None`` for no norm; ``norm_eps`` its epsilon.
        heads_weight, heads_bias: all heads side by side, ``[T, Hd]`` and
            ``[T]``.
        temperature: ``tau > 0`` (a one-value CPU tensor, read by the op),
            dividing every logit.
        num_sigmoid: the first ``num_sigmoid`` outputs (whole heads) take
            a sigmoid; each later head a softmax over its width.
        widths: each head's width, summing to ``T``.
    """
    mean, var, weight, bias = (None, ) * 4 if norm is None else norm
    return _CPU_OPS.attention_heads(x, trunk_weight, trunk_bias, mean, var,
                                    weight, bias, norm_eps, heads_weight,
                                    heads_bias, temperature, num_sigmoid,
                                    widths)


def cpu_sample_kernel_applies(weight: Tensor,
                              attentions: ConvAttentions) -> bool:
    """Whether :func:`cpu_sample_kernel` may form a batch-1 sample's kernel
    from ``weight`` and ``attentions``: :func:`cpu_ops_usable` for all of
    them, the CPU has AVX2 and FMA, and no autograd recorded."""
    return (not _SUSPENDED and _avx2_fma_supported()
            and not records_autograd(weight, *attentions)
            and _takes(weight, *attentions))


# cpu_sample_kernels runs banks whose kernel rows (C_in/groups x kh x kw)
# hold at least this many floats (one AVX-512 vector). Depthwise 3x3 rows
# of 9 lost: forming a batch's kernels and their gradients, batch 8, one
# kernel, on the slower Xeon VM, the op against PyTorch's: 960 channels
# 0.77 against 0.51 ms, 480 0.44 against 0.32 (192 0.22 against 0.24);
# four kernels, 480 channels at batch 32 1.57 against 1.05. Rows of 18
# (two channels a group) already won: 960 channels, four kernels, 0.99
# against 1.09 ms.
SAMPLE_KERNELS_MIN_ROW = 16


def cpu_sample_kernels_apply(weight: Tensor,
                             *attentions: Optional[Tensor]) -> bool:
    """Whether :func:`cpu_sample_kernels` forms a batch's kernels from
    ``weight`` and ``attentions`` (``None`` ignored; made contiguous by the
    caller): an Intel CPU with AVX-512 (:func:`_wide_tiles`: measured
    there; sample by sample, as on a CPU without it, the forward took twice
    PyTorch's matrix product where no factor follows it), no CPU autocast,
    nothing compiles, traces or watches the call, every tensor float32 on
    the CPU, ``weight`` contiguous, with rows of at least
    :data:`SAMPLE_KERNELS_MIN_ROW`. As the GEMM ops, inside an autograd
    Function and whatever the grad mode (a checkpoint's two passes, and the
    kernels formed again in backward, must form the same bits)."""
    if (not _wide_tiles() or autocast_enabled('cpu') or not _takes(weight)
            or weight.shape[2] * weight.shape[3] * weight.shape[4]
            < SAMPLE_KERNELS_MIN_ROW):
        return False
    for t in attentions:
        if t is not None and not (t.is_cpu and t.dtype == torch.float32):
            return False
    return True


def cpu_sample_kernels(weight: Tensor, mixing: Optional[Tensor],
                       channel: Optional[Tensor], spatial: Optional[Tensor],
                       filter: Optional[Tensor], groups: int,
                       batch: int) -> Tensor:
    """Every sample's kernel ``[B, O, I/groups, kh, kw]``: what
    :func:`cpu_sample_kernel` forms for one sample, with each attention's
    samples first (``mixing`` ``[B, K]`` or ``[B, O, K]``, ``channel``
    ``[B, I]``, ``spatial`` ``[B, kh, kw]``, ``filter`` ``[B, O]``, each
    contiguous), the bank's rows read once for all of them (with AVX-512,
    each piece of them once for the batch)."""
    return _CPU_OPS.sample_kernels(weight, mixing, channel, spatial, filter,
                                   groups, batch, _AVX512)


def cpu_sample_kernels_backward(
        grad: Tensor, weight: Tensor, mixing: Optional[Tensor],
        channel: Optional[Tensor], spatial: Optional[Tensor],
        filter: Optional[Tensor], groups: int,
        bank_grad: bool) -> List[Optional[Tensor]]:
    """The gradients of :func:`cpu_sample_kernels`' bank (if
    ``bank_grad``), mixing, channel, spatial and filter attentions (``None``
    where absent) from the kernels' gradient ``grad``, in one pass over it
    and the bank."""
    return _CPU_OPS.sample_kernels_backward(grad, weight, mixing, channel,
                                            spatial, filter, groups,
                                            bank_grad, _AVX512)


def cpu_sample_kernel(weight: Tensor, mixing: Optional[Tensor],
                      channel: Optional[Tensor], spatial: Optional[Tensor],
                      filter: Optional[Tensor], groups: int) -> Tensor:
    """One sample's kernel ``[O, I/groups, kh, kw]``::

        f[o] * c[g(o) * I/groups + i] * s[h, w] * sum_k m[o, k] W[k, o, i, h, w]

    Args:
        weight: the bank ``W`` ``[K, O, I/groups, kh, kw]``.
        mixing: the sample's kernel attention ``m``, ``K`` values (one per
            kernel) or ``O * K`` (DyNet's, per output channel), or
            ``None`` for a single kernel.
        channel, spatial, filter: the sample's channel (``I`` values),
            spatial (``kh * kw``) and filter (``O``) attentions to fold in,
            each ``None`` if not folded.
        groups: the convolution's groups (``g(o)`` is ``o``'s group).
    """
    return _CPU_OPS.sample_kernel(weight, mixing, channel, spatial, filter,
                                  groups)
