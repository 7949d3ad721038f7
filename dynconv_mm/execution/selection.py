"""Which formulation ``'auto'`` runs, from shapes, device and grad mode.

The rule, and the measurements behind it (``docs/benchmarks.md``,
``tools/analysis/benchmark_layers.py``):

* **Batch 1 without autograd** (inference): ``aggregated``. One sample's
  kernel is one plain convolution (a 1x1 one, on Intel and AVX2 AMD CPUs,
  one matrix product: :func:`.attentions.shared_kernel_conv2d`); each
  attention goes into that kernel or onto the activations, whichever is
  smaller. Fastest on the CPU at every ResNet-50 shape measured but one:
  a single kernel with a spatial attention on a small map (ODConv 1x, 512
  channels at 7x7), where ``im2col`` keeps the large kernel static (1.1x
  against 1.34x a static conv); so below ``PER_SAMPLE_MIN_PIXELS`` a
  single kernel runs from the static bank, unless the kernel would be
  mixed in the GEMM's tiles there (:func:`.cpu_ops.cpu_sample_conv_fits`,
  Intel CPUs with AVX-512: 0.80-0.95x a static conv at 7x7; batch-1
  OD-ResNet-50 1x 1.113x -> 1.081x).
* **Otherwise, on the CPU** (training, or batches), measured at batch 8
  with freed memory kept in the process (:mod:`.cpu_memory`; without it
  every per-sample kernel page-faults anew) and the kernels formed again
  in backward: per-sample kernels (``aggregated`` / ``batch_folded``) cost
  1.2-2.5x a static convolution from 14x14 maps up, where the ``K``-wide
  static forms cost about ``K`` times (they do ``K`` times the
  multiply-adds). On 7x7 maps (below ``PER_SAMPLE_MIN_PIXELS`` output
  pixels) whole per-sample kernels cost 3.2-3.7x with a single kernel,
  3.5-4.5x with four and 3.7-4.5x with DyNet's six, the static bank
  1.2-1.5x, 4.0-4.9x and 6.5-8.1x, and ``tiled_gemm`` (per-sample kernels
  formed a tile at a time, :mod:`.tiled_gemm_conv2d`) 2.1-3.0x with four
  and 2.7-3.7x with six (with the compiled GEMMs of :mod:`.cpu_ops`,
  which mix the kernels inside their register tiles, 1.5-1.8x on
  512-channel 3x3 layers, 2.0-2.4x on 2048->512 1x1 ones). So with
  ``K > 1`` kernels ``tiled_gemm`` runs 7x7 maps, and 1x1 kernels up to
  ``TILED_1X1_MAX_PIXELS`` (14x14: 1.5-1.7x against 1.8-2.3x);
  per-sample kernels elsewhere (3x3 kernels on 14x14 maps: 1.7-2.3x
  against 2.5-2.7x). A single kernel on 7x7 maps
  runs from the static bank, and so does one on maps of at most as many
  pixels as it has output channels (forming per-sample kernels costs
  about ``C_out`` times what unfolding the input does per output pixel;
  slower Xeon VM, ODConv 1x 3x3 at batch 8, static bank against
  per-sample kernels: 256 channels at 14x14 1.45x against 1.71x, at 16x16
  1.34x against 1.58x, at 18x18 1.51x against 1.43x; 512 at 14x14 1.32x
  against 1.98x, at 24x24 a tie; 128 at 10x10 2.09x against 2.36x, at
  14x14 a tie; 64 at 14x14 2.53x against 2.02x; at batch 64, the mask
  head's 256-channel 14x14, 1.62x against 2.30x), and a single 1x1 kernel
  (no spatial attention) up to ``STATIC_1X1_MAX_PIXELS`` (28x28: 1.3-1.5x
  against 1.5-1.7x). Where per-sample 1x1 kernels run as one batched MKL
  matrix product instead of oneDNN's grouped convolution (Intel CPUs,
  float32, eager: :func:`.attentions.pointwise_batch_product_wins`), they
  beat both bounds above: on the slower Xeon VM, batch 8, every layer type
  at 56x56 and 28x28 0.85-1.26x against 1.29-1.80x by the old rule, at
  14x14 with ``K > 1`` 1.24-1.61x against 1.27-1.84x (DyNet's a tie), so
  there 1x1 layers run per-sample kernels from 14x14 maps up, a single
  kernel too where its map has fewer pixels than output channels if its
  kernel is no larger than its input and output (MobileNetV2's
  expansions: ODConv 1x 96->576 at 14x14 1.22-1.27x against the static
  bank's 1.68-1.83x; ResNet-50's 1x1 layers at 14x14, 1024->256 1.33-1.38x
  against 1.39-1.47x, 256->1024 a tie, stay static: per-sample, an
  unfolded channel attention's scaled input is kept for backward, and
  OD-ResNet-50 1x saved 1.23x a static network's activations against
  1.17x). Without kept memory per-sample kernels on 7x7 maps cost
  9-13x, so there the static bank runs whatever ``K``. Under
  ``torch.compile`` ``tiled_gemm`` is not picked: the compiled graph
  would keep its kernel tiles for backward.
* **Grouped and depthwise convolutions on the CPU**, whatever the batch,
  map or ``K``: per-sample kernels (``g`` times smaller than a dense
  layer's, so cheap to form; oneDNN runs the ``B*g`` groups well). On the
  slower Xeon VM, forward + backward against a static conv of the shape,
  per-sample kernels / what the dense rule ran: depthwise 480 channels at
  7x7, batch 32, 2.0-2.8x / 10-13x (``tiled_gemm``, ``im2col`` with one
  kernel); 1024 channels in 32 groups at 7x7, batch 8, 2.5-3.4x /
  4.0-8.0x; 256 and 512 in 32 groups at 14x14 with one kernel 1.9x /
  6.5x (the static bank); batch-1 inference with one kernel, depthwise
  at 7x7 and 4x4 1.8-1.9x / 4.0-4.8x. Also where freed memory is not kept
  (depthwise 480 at 7x7 2.3-2.4x / 12-16x).
* **On a GPU** with autograd or a batch (:func:`gpu_preference`),
  measured per layer at the ResNet-50 shapes on an H200 (bf16, batch 64,
  forward + backward; ``docs/benchmarks.md``), where per-sample kernels
  cost 5-14x a static convolution: the static bank where its ``K``-wide
  output is cheap, i.e. every layer without a spatial attention but the
  widening 1x1 ones (``kernel_branches``: 1.9-4.4x with four or six
  kernels, 2.9-4.2x with one); a widening 1x1 layer with ``K > 1`` runs
  the fused kernel (``triton``, 2.0-4.9x, else ``tiled_gemm``), where the
  static bank writes ``K`` times its large output (4.6-9.7x); a spatial
  attention (ODConv's 3x3 layers) runs ``triton`` on maps above 28x28
  (4.3-5.2x against ``im2col``'s 4.8-6.7x; with a single kernel also at
  28x28, 4.6x against 4.9x) and ``im2col`` below (3.3-5.3x; the fused
  kernel has too few output tiles per sample there).
  Grouped and depthwise convolutions (not measured on a GPU) run the
  static bank.
  With ``K > 1`` the static bank keeps its ``K``-wide output for
  backward (its scaled or unfolded input is formed again there,
  :mod:`.recompute`); ``execution='triton'`` keeps training memory at the
  static network's. At batch 1 without autograd every formulation
  measured within noise of the others on an H200 (all launch-bound).
"""
import os
from typing import Optional, Sequence

import torch
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, output_size,
                         pointwise_batch_product_wins, records_autograd)
from .cpu_memory import cpu_memory_state
from .cpu_ops import cpu_sample_conv_fits

FORMULATIONS = ('batch_folded', 'aggregated', 'kernel_branches', 'im2col',
                'tiled_gemm', 'triton')

# Output pixels from which per-sample kernels can beat the static bank
# with a single kernel on the CPU (7x7 maps never do; larger ones where
# the map has more pixels than the layer output channels).
PER_SAMPLE_MIN_PIXELS = 100
# A single 1x1 kernel stays static (kernel_branches) up to 28x28 outputs.
STATIC_1X1_MAX_PIXELS = 28 * 28
# With K > 1 kernels, tiled_gemm runs 1x1 kernels up to 14x14 outputs.
TILED_1X1_MAX_PIXELS = 14 * 14
# GPU, spatial attention: im2col up to this many output pixels (28x28
# with K > 1 kernels, 14x14 with one), the fused kernel above.
GPU_IM2COL_MAX_PIXELS = 28 * 28
GPU_IM2COL_MAX_PIXELS_ONE_KERNEL = 14 * 14


def triton_runnable(x: Tensor,
                    weight: Optional[Tensor] = None,
                    pixels: Optional[int] = None) -> bool:
    """Whether the fused Triton kernel can run on ``x``: a CUDA tensor with
    Triton installed, or any CPU tensor under ``TRITON_INTERPRET=1``; given
    the bank and the output pixels, also within the kernels' size
    limits."""
    if not (x.is_cuda or os.environ.get('TRITON_INTERPRET') == '1'):
        return False
    try:
        from .triton_conv2d import runnable, size_limit_error
    except ImportError:  # no triton
        return False
    return runnable(x) and (weight is None or pixels is None
                            or size_limit_error(x, weight, pixels) is None)


def can_run(method: str,
            x: Tensor,
            attentions: ConvAttentions,
            weight: Optional[Tensor] = None,
            pixels: Optional[int] = None) -> bool:
    """Whether formulation ``method`` can run this call (given the bank and
    the output pixels, ``triton`` only within its size limits)."""
    if method == 'kernel_branches':
        return attentions.spatial is None
    if method == 'triton':
        return triton_runnable(x, weight, pixels)
    return True


def valid_methods(x: Tensor,
                  attentions: ConvAttentions,
                  allowed: Sequence[str] = FORMULATIONS,
                  weight: Optional[Tensor] = None,
                  pixels: Optional[int] = None) -> tuple:
    """The formulations in ``allowed`` that can run this call."""
    return tuple(m for m in allowed
                 if can_run(m, x, attentions, weight, pixels))


def select_method(x: Tensor,
                  weight: Tensor,
                  attentions: ConvAttentions,
                  allowed: Sequence[str] = FORMULATIONS,
                  stride: IntPair = 1,
                  padding: Padding = 0,
                  dilation: IntPair = 1) -> str:
    """The fastest valid formulation in ``allowed`` for this call."""
    pixels = _pixels(x, weight, stride, padding, dilation)
    groups = x.shape[1] // weight.shape[2]
    in_tiles = (x.shape[0] == 1 and weight.shape[0] == 1 and x.is_cpu
                and pixels < PER_SAMPLE_MIN_PIXELS
                and cpu_sample_conv_fits(x, weight, stride, padding,
                                         dilation, groups))
    product = x.shape[0] > 1 and pointwise_batch_product_wins(
        x, weight, stride, padding, groups)
    # Validity is asked of the preferred methods one by one (the first
    # usually runs): checking all of them first cost a dozen Python calls
    # per layer, which at batch-1 inference is a visible share.
    for method in preference(x, weight, attentions, pixels, in_tiles,
                             product):
        if method in allowed and can_run(method, x, attentions, weight,
                                         pixels):
            return method
    candidates = valid_methods(x, attentions, allowed, weight, pixels)
    if not candidates:
        raise ValueError(
            f'dynamic_conv2d: none of the allowed methods {tuple(allowed)} '
            'can run this call (kernel_branches cannot apply a spatial '
            'attention; triton needs a CUDA tensor and sizes within its '
            'limits)')
    return candidates[0]


def _pixels(x: Tensor, weight: Tensor, stride: IntPair, padding: Padding,
            dilation: IntPair) -> int:
    height, width = output_size(x, weight.shape[3:], stride, padding,
                                dilation)
    return height * width


def preference(x: Tensor, weight: Tensor, attentions: ConvAttentions,
               pixels: int, in_tiles: bool = False,
               product: bool = False) -> Sequence[str]:
    """The formulations from fastest to slowest expected, for an output of
    ``pixels`` pixels per channel; ``in_tiles``: at batch-1 inference the
    sample's kernel would be mixed in the GEMM's tiles
    (:func:`.cpu_ops.cpu_sample_conv_fits`); ``product``: per-sample 1x1
    kernels would run as one batched matrix product
    (:func:`.attentions.pointwise_batch_product_wins`)."""
    batch, num_kernels = x.shape[0], weight.shape[0]
    static_bank = ('kernel_branches', 'im2col')
    per_sample = ('aggregated', 'batch_folded')
    small_map = pixels < PER_SAMPLE_MIN_PIXELS
    grouped = x.shape[1] != weight.shape[2]
    if batch == 1 and not records_autograd(x, weight, *attentions):
        if (small_map and num_kernels == 1 and x.device.type == 'cpu'
                and not in_tiles and not grouped):
            return static_bank + per_sample
        return per_sample + static_bank
    if x.device.type == 'cuda':
        return gpu_preference(weight, attentions, x.shape[1], pixels,
                              torch.compiler.is_compiling())
    if grouped:
        return per_sample + ('tiled_gemm', ) + static_bank
    one_by_one = weight.shape[3:] == (1, 1)
    if num_kernels == 1:
        # Per-sample kernels cost about C_out C_in kh kw per sample beyond
        # the convolution, the static bank's unfolded input C_in kh kw P:
        # the static bank where P <= C_out; but 1x1 kernels run as a
        # batched product go per-sample where the kernel is no larger than
        # the activations the static bank scales.
        out_channels, in_channels = weight.shape[1], x.shape[1]
        small_product = (one_by_one and product
                         and out_channels * in_channels
                         <= (out_channels + in_channels) * pixels)
        if (small_map or (pixels <= out_channels and not small_product)
                or (one_by_one and not product and attentions.spatial is None
                    and pixels <= STATIC_1X1_MAX_PIXELS)):
            return static_bank + per_sample
        return per_sample + static_bank
    if not cpu_memory_state()['applied']:
        return (static_bank + per_sample if small_map else
                per_sample + static_bank)
    if (not torch.compiler.is_compiling()
            and (small_map or (one_by_one and not product
                               and pixels <= TILED_1X1_MAX_PIXELS))):
        return ('tiled_gemm', ) + per_sample + static_bank
    return per_sample + ('tiled_gemm', ) + static_bank


def gpu_preference(weight: Tensor, attentions: ConvAttentions,
                   in_channels: int, pixels: int,
                   compiling: bool = False) -> Sequence[str]:
    """The GPU order for a call with autograd or a batch (bf16, batch 64,
    forward + backward on an H200, ``docs/benchmarks.md``). Where a
    ``K``-times-wider static convolution's extra output is small, the
    static bank wins (a persistent weight, cuDNN's fast path); a 1x1
    kernel that widens the channels with ``K > 1`` would write ``K`` times
    its large output, so the fused kernel (or tiles) runs it; a spatial
    attention rules out ``kernel_branches``, and on maps above 28x28 the
    fused kernel beats the unfolded input. Under ``torch.compile`` the
    static forms lead (Inductor fuses their glue)."""
    num_kernels, out_channels, group_in = weight.shape[:3]
    one_by_one = weight.shape[3:] == (1, 1)
    static_bank = ('kernel_branches', 'im2col')
    per_sample = ('batch_folded', 'aggregated')
    fused = ('triton', 'tiled_gemm')
    # grouped and depthwise convolutions were not measured: the fused
    # kernel's tiles would be mostly idle on a few channels per group
    if compiling or in_channels // group_in > 1:
        return static_bank + per_sample + fused
    if one_by_one and num_kernels > 1 and out_channels > in_channels:
        return fused + static_bank + per_sample
    if attentions.spatial is None:
        return static_bank + fused + per_sample
    # a spatial attention: kernel_branches cannot run it (last, for a
    # complete order); a single kernel's fused form also wins at 28x28
    # (and saves no unfolded input)
    if pixels > (GPU_IM2COL_MAX_PIXELS_ONE_KERNEL if num_kernels == 1 else
                 GPU_IM2COL_MAX_PIXELS):
        return ('triton', 'im2col', 'tiled_gemm') + per_sample + (
            'kernel_branches', )
    return ('im2col', ) + fused + per_sample + ('kernel_branches', )
