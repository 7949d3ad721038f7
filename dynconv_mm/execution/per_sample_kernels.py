"""Per-sample kernels, run as one convolution with the batch folded into
the groups: the ``batch_folded`` and ``aggregated`` formulations.

Each sample's kernel is mixed from the bank by one matrix product
(``[B, K] x [K, O*I*kh*kw]``), never through the ``[B, K, O, I, kh, kw]``
product (on Intel CPUs with AVX-512, eager float32, the kernels with every
folded attention, and their gradients, by one compiled pass each:
:class:`_SampleKernels`). The batch then becomes the groups of a single
``F.conv2d``: input ``[1, B*C_in, H, W]``, kernels ``[B*C_out,
C_in/groups, kh, kw]``, ``groups * B`` groups. At batch 1 this is one plain convolution.

* ``batch_folded`` folds the kernel and spatial attentions into the kernel
  and applies the channel (input) and filter (output) attentions to the
  activations.
* ``aggregated`` aggregates once: every attention goes into the per-sample
  kernel where that costs less than a pass over the activation it would
  scale (see :func:`aggregation_plan`), and the mixed bias rides in the
  convolution. In early layers, where kernels are small and activations
  large, all four attentions end up in the kernel and the activations are
  only convolved; in deep layers the filter attention stays on the small
  output. Plain tensor ops with static shapes, so it traces into
  ``torch.compile`` and CUDA graphs. It is the batch-1 inference path.
"""
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .attentions import (ConvAttentions, IntPair, Padding, accepts_empty_batch,
                         channel_view, finish, intel_cpu, mix_bias, mix_kernels,
                         output_size, pointwise_batch_product_wins,
                         records_autograd, scale_channels,
                         shared_kernel_conv2d)
from .cpu_ops import (cpu_sample_conv_call, cpu_sample_conv_wins,
                      cpu_sample_kernel, cpu_sample_kernel_applies,
                      cpu_sample_kernels, cpu_sample_kernels_apply,
                      cpu_sample_kernels_backward)
from .recompute import recomputed_in_backward


class AggregationPlan(NamedTuple):
    """Which attentions :func:`aggregated_conv2d` folds into the kernel."""

    input: bool
    output: bool


def aggregation_plan(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                     out_size: Tuple[int, int]) -> AggregationPlan:
    """Fold an attention into the kernel when one pass over the kernel
    (``C_out * C_in/groups * kh * kw`` per sample) costs no more than one
    over the activation it would scale, or costs nothing extra: the channel
    attention joins the spatial one in a small ``[C_in, kh, kw]`` factor
    that scales the kernel in the same pass."""
    _, out_channels, group_in, kh, kw = weight.shape
    kernel = out_channels * group_in * kh * kw
    in_channels, height, width = x.shape[1:]
    fold_input = attentions.input is not None and (
        attentions.spatial is not None or in_channels * height * width
        >= kernel)
    fold_output = attentions.output is not None and (
        out_channels * out_size[0] * out_size[1] >= kernel)
    return AggregationPlan(fold_input, fold_output)


def per_sample_kernels(weight: Tensor,
                       attentions: ConvAttentions,
                       batch: int,
                       groups: int,
                       plan: AggregationPlan = AggregationPlan(False, False),
                       stages: Optional[List[Tensor]] = None) -> Tensor:
    """Sample kernels ``[B, O, I/groups, kh, kw]``: the bank mixed by the
    kernel attention, scaled by the spatial attention and, as ``plan``
    says, by the channel and filter attentions. Each new kernel-sized
    tensor is appended to ``stages`` as soon as it exists: one, where the
    compiled CPU op forms them (:class:`_SampleKernels`, where
    :func:`.cpu_ops.cpu_sample_kernels_apply`). (One sample at inference:
    :func:`_one_sample_kernel`.)"""
    def stage(tensor: Tensor) -> Tensor:
        if stages is not None:
            stages.append(tensor)
        return tensor

    folded = (attentions.kernel, attentions.input if plan.input else None,
              attentions.spatial, attentions.output if plan.output else None)
    if (any(t is not None for t in folded)
            and cpu_sample_kernels_apply(weight, *folded)):
        return stage(_SampleKernels.apply(weight, groups, batch, *folded))
    return _kernels_in_pytorch(weight, attentions, batch, groups, plan, stage)


def _kernels_in_pytorch(weight: Tensor, attentions: ConvAttentions,
                        batch: int, groups: int, plan: AggregationPlan,
                        stage: Callable[[Tensor], Tensor]) -> Tensor:
    """:func:`per_sample_kernels` by PyTorch's ops, each new kernel-sized
    tensor passed through ``stage``."""
    _, out_channels, group_in, kh, kw = weight.shape
    shape6 = (batch, groups, out_channels // groups, group_in, kh, kw)
    factor = _kernel_factor(attentions, plan, shape6)
    kernels = mix_kernels(weight, attentions.kernel, batch)
    if attentions.kernel is not None:  # otherwise a view of the bank
        kernels = stage(kernels)
    if factor is not None:
        kernels = stage(kernels.reshape(shape6) * factor.to(kernels.dtype))
    if plan.output and attentions.output is not None:
        kernels = stage(kernels.reshape(shape6) * attentions.output.reshape(
            batch, groups, -1, 1, 1, 1).to(kernels.dtype))
    return kernels.reshape(batch, out_channels, group_in, kh, kw)


class _SampleKernels(torch.autograd.Function):
    """Every sample's kernel by the compiled CPU op
    (:func:`.cpu_ops.cpu_sample_kernels`: one pass over the bank for the
    batch, the mixing and every folded attention at once), and its
    gradients by one more (:func:`.cpu_ops.cpu_sample_kernels_backward`).
    In PyTorch each is a matrix product (DyNet's: an einsum and a copy)
    and a pass per factor over a kernel-sized tensor, forward and backward:
    ODConv 4x's 256-channel 3x3 layer at 14x14, batch 8, spent ~18 ms of
    its ~45 there on the slower Xeon VM. Arguments after ``batch``: the
    kernel (``[B, K]`` or ``[B, O, K]``), channel, spatial and filter
    attentions to fold, each ``None`` if not folded."""

    @staticmethod
    def forward(ctx, weight: Tensor, groups: int, batch: int,
                *attentions: Optional[Tensor]) -> Tensor:
        ctx.groups, ctx.batch = groups, batch
        ctx.save_for_backward(weight, *attentions)
        return cpu_sample_kernels(weight, *_contiguous(attentions), groups,
                                  batch)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, *attentions = ctx.saved_tensors
        wanted = (ctx.needs_input_grad[0], *ctx.needs_input_grad[3:])
        if torch.is_grad_enabled():  # create_graph: differentiable
            return _differentiable_grads(grad, weight, attentions,
                                         ctx.groups, ctx.batch, wanted)
        grads = cpu_sample_kernels_backward(
            grad.contiguous(), weight, *_contiguous(attentions), ctx.groups,
            wanted[0])
        return (grads[0], None, None, *grads[1:])


def _contiguous(tensors) -> List[Optional[Tensor]]:
    return [None if t is None else t.contiguous() for t in tensors]


def _differentiable_grads(grad: Tensor, weight: Tensor,
                          attentions: List[Optional[Tensor]], groups: int,
                          batch: int, wanted: Tuple[bool, ...]) -> tuple:
    """:class:`_SampleKernels`' gradients as differentiable PyTorch ops (a
    backward that builds a graph, for higher derivatives)."""
    inputs = (weight, *attentions)
    asked = [t for t, want in zip(inputs, wanted) if want and t is not None]
    kernel, channel, spatial, filter_ = attentions
    with torch.enable_grad():
        kernels = _kernels_in_pytorch(
            weight, ConvAttentions(kernel=kernel, spatial=spatial,
                                   input=channel, output=filter_),
            batch, groups, AggregationPlan(True, True), lambda t: t)
        found = iter(torch.autograd.grad(kernels, asked, grad,
                                         create_graph=True))
    grads = [next(found) if want and t is not None else None
             for t, want in zip(inputs, wanted)]
    return (grads[0], None, None, *grads[1:])


def call_aggregation_plan(x: Tensor, weight: Tensor,
                          attentions: ConvAttentions, stride: IntPair,
                          padding: Padding,
                          dilation: IntPair) -> AggregationPlan:
    """:func:`aggregation_plan` for a call's convolution arguments."""
    return aggregation_plan(
        x, weight, attentions,
        output_size(x, weight.shape[3:], stride, padding, dilation))


def _kernel_factor(attentions: ConvAttentions, plan: AggregationPlan,
                   shape: Tuple[int, ...]) -> Optional[Tensor]:
    """The spatial attention times, where ``plan`` folds it, the channel
    attention: a small factor that broadcasts to kernels of ``shape``
    ``[..., groups, O/groups, I/groups, kh, kw]`` (``None`` if neither
    applies). Built first, so that the large kernel is touched once per
    factor group."""
    groups, group_in, kh, kw = shape[-5], shape[-3], shape[-2], shape[-1]
    lead = shape[:-5]
    factor = None
    if attentions.spatial is not None:
        factor = attentions.spatial.reshape(*lead, 1, 1, 1, kh, kw)
    if plan.input and attentions.input is not None:
        channel = attentions.input.reshape(*lead, groups, 1, group_in, 1, 1)
        factor = channel if factor is None else channel * factor
    return factor


def _one_sample_kernel(weight: Tensor, attentions: ConvAttentions,
                       groups: int, plan: AggregationPlan,
                       by_op: Optional[bool] = None) -> Tensor:
    """One sample's kernel ``[O, I/groups, kh, kw]`` at inference: as few
    ops as the math allows, since at batch 1 each op's dispatch costs
    about as much as its arithmetic on all but the largest kernels. On a
    CPU, by the compiled op where it applies (:mod:`.cpu_ops`): one pass
    over the bank, mixing and every factor at once. Otherwise the new
    kernel is scaled in place; the bank is never written. ``by_op``:
    :func:`.cpu_ops.cpu_sample_kernel_applies` where the caller has
    already asked it (``None``: asked here)."""
    channel = attentions.input if plan.input else None
    filter_ = attentions.output if plan.output else None
    if by_op is None and (attentions.kernel is not None
                          or attentions.spatial is not None
                          or channel is not None or filter_ is not None):
        by_op = cpu_sample_kernel_applies(weight, attentions)
    if by_op:
        return cpu_sample_kernel(weight, attentions.kernel, channel,
                                 attentions.spatial, filter_, groups)
    _, out_channels, group_in, kh, kw = weight.shape
    shape5 = (groups, out_channels // groups, group_in, kh, kw)
    factor = _kernel_factor(attentions, plan, shape5)
    if factor is not None:
        factor = factor.to(weight.dtype)
    owned = True  # a new tensor, safe to scale in place
    if attentions.kernel is None:  # a single kernel
        kernel = weight[0].reshape(shape5)
        owned = factor is not None
        if owned:
            kernel = kernel * factor
    elif mixes_in_place(weight.device):
        kernel = _mix_one_sample(weight, attentions.kernel, factor, shape5)
    else:
        kernel = mix_kernels(weight, attentions.kernel, 1).reshape(shape5)
        if factor is not None:
            kernel.mul_(factor)
    if plan.output and attentions.output is not None:
        output = attentions.output.reshape(groups, -1, 1, 1, 1).to(
            weight.dtype)
        kernel = kernel.mul_(output) if owned else kernel * output
    return kernel.reshape(out_channels, group_in, kh, kw)


def mixes_in_place(device: torch.device) -> bool:
    """Whether batch-1 inference mixes a sample's kernel in place, kernel by
    kernel (:func:`_mix_one_sample`), rather than by one matrix product
    (:func:`mix_kernels`) followed by one in-place pass of the factor.

    Measured on the two 2-core CPU VMs this project has run on
    (``tools/analysis/probe_cpu_limits.py``), mixing four 512-channel 3x3
    kernels: on an AMD EPYC (Zen 4) MKL's matrix product ran at a fraction
    of the memory bandwidth (1.1-1.2 ms, in place 0.6-0.9 ms); on an Intel
    Xeon (Emerald Rapids) the product ran near it (product and factor 1.27
    ms, in place 1.66 ms), and batch-1 OD-ResNet-50 4x went from 1.78x to
    1.65x the static network with it. So: in place on a CPU that is not
    Intel's, where MKL does not take its fast paths; the product on Intel
    CPUs and on GPUs (one launch instead of ``K``). Under ``torch.compile``
    always in place: the compiler fuses the kernel-by-kernel sum and the
    factor into one pass over the bank, where the product stays a library
    call plus a pass (compiled batch-1 OD-ResNet-50 4x on the Intel VM:
    1.32x in place, 1.41x as a product)."""
    if torch.compiler.is_compiling():
        return True
    return device.type == 'cpu' and not intel_cpu()


def _mix_one_sample(weight: Tensor, kernel_attention: Tensor,
                    factor: Optional[Tensor], shape5: Tuple[int, ...]) -> Tensor:
    """One sample's kernel ``sum_k W_k * (a_k * factor)``, accumulated in
    place kernel by kernel: the kernel-sized sum stays in cache while the
    bank streams through once, and the factor rides along (inference at
    batch 1 where :func:`mixes_in_place`: there a ``[1, K] x [K, N]``
    matrix product runs at a fraction of the memory bandwidth and the
    factor would cost another pass)."""
    num_kernels = weight.shape[0]
    bank = weight.reshape(num_kernels, *shape5)
    mixing = kernel_attention.to(weight.dtype)
    if mixing.dim() == 2:  # [1, K]
        mixing = mixing.reshape(num_kernels, 1, 1, 1, 1, 1)
    else:  # DyNet's [1, O, K]: per output channel
        mixing = mixing[0].t().reshape(num_kernels, *shape5[:2], 1, 1, 1)
    if factor is not None:
        mixing = mixing * factor.to(weight.dtype)
    kernel = bank[0] * mixing[0]
    for k in range(1, num_kernels):
        kernel.addcmul_(bank[k], mixing[k])
    return kernel


def _sample_kernels_conv(x: Tensor, weight: Tensor,
                         attentions: ConvAttentions, groups: int,
                         plan: AggregationPlan, bias: Optional[Tensor],
                         stride: IntPair, padding: Padding,
                         dilation: IntPair) -> Tensor:
    """Form the per-sample kernels and convolve each sample with its own;
    when training, the kernels are formed again in backward rather than
    kept (:func:`.recompute.recomputed_in_backward`; compiled, a
    checkpointed region)."""
    batch = x.shape[0]

    def form(stages=None):  # no annotations: evaluated on every call
        return per_sample_kernels(weight, attentions, batch, groups, plan,
                                  stages)

    training = records_autograd(weight, *attentions)
    if not training:
        if batch == 1:  # the batch-1 inference path, straight
            return shared_kernel_conv2d(
                x, _one_sample_kernel(weight, attentions, groups, plan),
                None if bias is None else bias[0], stride, padding,
                dilation, groups)
        return _grouped_conv(x, form(), bias, stride, padding, dilation,
                             groups)
    if torch.compiler.is_compiling():
        # Saved-tensor hooks do not reach what a compiled graph saves; a
        # checkpointed region does: the partitioner then forms the kernels
        # again in backward instead of saving them.
        kernels = checkpoint(form, use_reentrant=False)
        return _grouped_conv(x, kernels, bias, stride, padding, dilation,
                             groups)
    # The conv saves a view of the last stage: found by its storage.
    sources = tuple(t for t in (weight, *attentions) if t is not None)
    return recomputed_in_backward(
        form, sources, lambda kernels: _grouped_conv(
            x, kernels, bias, stride, padding, dilation, groups))


def _grouped_conv(x: Tensor, kernels: Tensor, bias: Optional[Tensor],
                  stride: IntPair, padding: Padding, dilation: IntPair,
                  groups: int) -> Tensor:
    """Convolve sample ``b`` with ``kernels[b]`` (and ``bias[b]``): one
    convolution with the batch folded into its groups, or, for 1x1 kernels
    where :func:`.attentions.pointwise_batch_product_wins`, one batched
    matrix product."""
    batch, in_channels, height, width = x.shape
    if batch == 1:
        return shared_kernel_conv2d(x, kernels[0], None if bias is None else
                                    bias[0], stride, padding, dilation,
                                    groups)
    if pointwise_batch_product_wins(x, kernels, stride, padding, groups):
        out_channels = kernels.shape[1]
        matrices = kernels.reshape(batch, out_channels, in_channels)
        columns = x.view(batch, in_channels, height * width)
        y = (torch.bmm(matrices, columns) if bias is None else
             torch.baddbmm(bias.view(batch, out_channels, 1).to(x.dtype),
                           matrices, columns))
        return y.view(batch, out_channels, height, width)
    y = F.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        kernels.reshape(-1, *kernels.shape[2:]),
        None if bias is None else bias.reshape(-1), stride, padding,
        dilation, groups * batch)
    return y.view(batch, -1, *y.shape[2:])


@accepts_empty_batch
def batch_folded_conv2d(x: Tensor, weight: Tensor,
                        attentions: ConvAttentions, bias: Optional[Tensor],
                        stride: IntPair, padding: Padding, dilation: IntPair,
                        groups: int) -> Tensor:
    """Kernel and spatial attentions in the per-sample kernel; channel and
    filter attentions on the activations."""
    y = _sample_kernels_conv(scale_channels(x, attentions.input), weight,
                             attentions, groups,
                             AggregationPlan(False, False), None, stride,
                             padding, dilation)
    return finish(y, attentions, bias)


@accepts_empty_batch
def aggregated_conv2d(x: Tensor,
                      weight: Tensor,
                      attentions: ConvAttentions,
                      bias: Optional[Tensor],
                      stride: IntPair,
                      padding: Padding,
                      dilation: IntPair,
                      groups: int,
                      plan: Optional[AggregationPlan] = None) -> Tensor:
    """Attentions aggregated once into each sample's kernel where that is
    cheaper (:func:`aggregation_plan`; ``plan``, where the caller has it
    for this call's shapes), the rest on the activations. A single sample
    without autograd runs as :func:`one_sample_route` decides (on a CPU,
    by the compiled ops where they apply)."""
    if plan is None:
        plan = call_aggregation_plan(x, weight, attentions, stride, padding,
                                     dilation)
    if x.shape[0] == 1 and not records_autograd(weight, *attentions):
        return one_sample_conv(
            x, weight, attentions, bias, stride, padding, dilation, groups,
            one_sample_route(x, weight, attentions, bias, stride, padding,
                             dilation, groups, plan))
    kernel_attention, _, channel, filter_ = attentions
    per_sample = _forms_per_sample(attentions, plan)
    if not plan.input:
        x = scale_channels(x, channel)
    # The bias joins the conv unless a filter attention still follows it.
    bias_in_conv = filter_ is None or plan.output
    mixed_bias = None if bias is None else mix_bias(bias, kernel_attention)
    conv_bias = mixed_bias if bias_in_conv else None
    if per_sample:
        y = _sample_kernels_conv(x, weight, attentions, groups, plan,
                                 None if conv_bias is None else
                                 conv_bias.expand(x.shape[0], -1), stride,
                                 padding, dilation)
    else:  # one kernel shared by the batch: the static convolution
        y = shared_kernel_conv2d(x, weight[0], None if conv_bias is None
                                 else conv_bias[0], stride, padding,
                                 dilation, groups)
    return _after_conv(y, None if plan.output else filter_,
                       None if bias_in_conv else mixed_bias)


def _forms_per_sample(attentions: ConvAttentions,
                      plan: AggregationPlan) -> bool:
    """Whether ``plan`` puts any attention into a per-sample kernel (else
    the bank's single kernel is the convolution's, static)."""
    return (attentions.kernel is not None or attentions.spatial is not None
            or (plan.input and attentions.input is not None)
            or (plan.output and attentions.output is not None))


class SampleRoute(NamedTuple):
    """How :func:`one_sample_conv` runs a single sample without autograd
    (:func:`one_sample_route`): which attentions go into the kernel
    (``plan``), whether the compiled CPU op forms the kernel (``by_op``)
    and whether it is never formed but mixed in the GEMM's tiles
    (``in_tiles``)."""

    plan: AggregationPlan
    by_op: bool
    in_tiles: bool


def one_sample_route(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                     bias: Optional[Tensor], stride: IntPair,
                     padding: Padding, dilation: IntPair, groups: int,
                     plan: AggregationPlan) -> SampleRoute:
    """How a single sample without autograd runs: on a CPU whose compiled
    op mixes the kernels (:func:`.cpu_ops.cpu_sample_kernel_applies`) all
    attentions ride in its pass, and where
    :func:`.cpu_ops.cpu_sample_conv_wins` the kernel is not formed at all
    but mixed inside the convolution's GEMM tiles; elsewhere ``plan``."""
    kernel_attention, spatial, channel, filter_ = attentions
    by_op = in_tiles = False
    if (kernel_attention is not None or spatial is not None
            or channel is not None or filter_ is not None):
        by_op = cpu_sample_kernel_applies(weight, attentions)
        in_tiles = by_op and cpu_sample_conv_wins(
            x, weight, bias, stride, padding, dilation, groups)
        if in_tiles or (by_op and kernel_attention is not None):
            # The compiled op reads the whole bank to mix this sample's
            # kernel: the channel and filter attentions ride in that pass
            # at no cost, where on the activations each would be a pass of
            # its own (batch-1 OD-ResNet-50 4x: ~1.4 ms of ~100 ms less).
            # Decided per call (a layer keeps it only while
            # cpu_ops.cpu_ops_ready holds): within cpu_ops_suspended()
            # PyTorch forms the kernel.
            plan = AggregationPlan(True, True)
    return SampleRoute(plan, by_op, in_tiles)


def one_sample_conv(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                    bias: Optional[Tensor], stride: IntPair,
                    padding: Padding, dilation: IntPair, groups: int,
                    route: SampleRoute) -> Tensor:
    """:func:`aggregated_conv2d` of a single sample ``x`` ``[1, C_in, H,
    W]`` without autograd, the way ``route`` says: one kernel, formed (or
    the bank's own) and one convolution, or the kernel mixed in the
    GEMM's tiles; no more ops than that, since at batch 1 each one's
    dispatch is a visible share of a small layer's time."""
    return one_sample_call(x, weight, attentions, bias, stride, padding,
                           dilation, groups, route)(x, weight, attentions,
                                                    bias)


SampleCall = Callable[[Tensor, Tensor, ConvAttentions, Optional[Tensor]],
                      Tensor]


def one_sample_call(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                    bias: Optional[Tensor], stride: IntPair,
                    padding: Padding, dilation: IntPair, groups: int,
                    route: SampleRoute) -> SampleCall:
    """:func:`one_sample_conv` as a function of ``(x, weight, attentions,
    bias)`` for calls of these shapes, the same attentions present and
    ``route``: what follows from them worked out once."""
    plan = route.plan
    if route.in_tiles:  # every attention in the op (plan: all folded)
        sample_conv = cpu_sample_conv_call(x, weight, stride, padding,
                                           dilation)
        if bias is None:
            return sample_conv
        return lambda x, weight, attentions, bias: sample_conv(
            x, weight, attentions, mix_bias(bias, attentions.kernel)[0])
    per_sample = _forms_per_sample(attentions, plan)
    bias_in_conv = attentions.output is None or plan.output
    by_op = route.by_op

    def run(x: Tensor, weight: Tensor, attentions: ConvAttentions,
            bias: Optional[Tensor]) -> Tensor:
        kernel_attention, _, channel, filter_ = attentions
        if not plan.input:
            x = scale_channels(x, channel)
        mixed_bias = None if bias is None else mix_bias(bias,
                                                        kernel_attention)
        kernel = (_one_sample_kernel(weight, attentions, groups, plan, by_op)
                  if per_sample else weight[0])
        y = shared_kernel_conv2d(
            x, kernel, mixed_bias[0] if bias_in_conv and mixed_bias
            is not None else None, stride, padding, dilation, groups)
        return _after_conv(y, None if plan.output else filter_,
                           None if bias_in_conv else mixed_bias)
    return run


def _after_conv(y: Tensor, filter_: Optional[Tensor],
                mixed_bias: Optional[Tensor]) -> Tensor:
    """The filter attention not folded into the kernel, then the mixed bias
    that had to follow it."""
    if filter_ is not None:
        # in place where nothing records it: y is this call's own tensor,
        # and an in-place product skips allocating (and first touching) a
        # new one (batch-1 512 x 28 x 28: 16 against 29 us)
        y = (y * channel_view(filter_).to(y.dtype)
             if records_autograd(y, filter_) else
             y.mul_(channel_view(filter_).to(y.dtype)))
    if mixed_bias is not None:
        y = y + channel_view(mixed_bias).to(y.dtype)
    return y
