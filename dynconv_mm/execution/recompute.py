"""Large intermediates formed again in backward instead of kept: the
per-sample kernels of ``batch_folded``/``aggregated``, and the scaled or
unfolded activations of ``im2col``/``kernel_branches``/``tiled_gemm``."""
from contextlib import nullcontext
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, TypeVar

import torch
from torch import Tensor

from .attentions import ConvAttentions, autocast_enabled, records_autograd

Result = TypeVar('Result')


class _Stage(NamedTuple):
    """A saved view of a stage: formed again in backward."""
    index: int
    size: torch.Size
    stride: Tuple[int, ...]
    offset: int


class _Kept(NamedTuple):
    """A saved tensor kept as autograd keeps it, with its version."""
    tensor: Tensor
    version: int


class _Outer(NamedTuple):
    """What hooks active around this one packed."""
    packed: Any


class StagesRecomputedInBackward:
    """Saved-tensor hooks that keep, instead of the large intermediates
    (the *stages*) that a cheap ``form`` makes from small or already-kept
    ``sources``, the means to form them again in backward.

    The stages are per-sample kernels (``B`` times the bank; kept until
    backward they dominated a training step's memory, OD-ResNet-50 4x at
    batch 4: 0.8 of 1.3 GB saved) and scaled or unfolded activations
    (``k*k`` times the input). Forming them again costs a matrix product or
    a few elementwise passes per layer. The sources are kept; backward
    refuses to run if one of them was modified in place since the forward,
    as autograd does for a saved tensor. Higher derivatives stay exact:
    autograd gives the re-formed tensor the graph of the one it replaces.
    Eager only: what a ``torch.compile`` graph saves is its partitioner's
    choice, which a checkpointed region steers instead.
    """

    def __init__(self, form: Callable[[List[Tensor]], Tensor],
                 sources: Tuple[Tensor, ...]) -> None:
        self.form = form  # appends its large stages to its argument
        self.sources = sources
        # Backward runs outside the forward's autocast: forming the stages
        # there without it gives float32 ones where the forward's were
        # bf16/fp16 (a CUDA convolution's backward then refuses the mix;
        # the CPU's silently differentiates another function).
        device = sources[0].device.type
        self.autocast = (dict(device_type=device,
                              enabled=autocast_enabled(device),
                              dtype=torch.get_autocast_dtype(device))
                         if torch.amp.is_autocast_available(device) else None)
        self.versions = [t._version for t in sources]
        self.stages: List[Tensor] = []
        self.recomputed: Optional[List[Tensor]] = None
        self.pending = 0
        # Hooks already active (e.g. a memory count, or activation
        # offloading) still see every tensor this one keeps.
        top = getattr(torch._C._autograd, '_top_saved_tensors_default_hooks',
                      None)
        self.outer = None if top is None else top(False)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(
            self._pack, self._unpack)

    def _pack(self, tensor: Tensor):
        storage = tensor.untyped_storage().data_ptr()
        for index, stage in enumerate(self.stages):
            if stage.untyped_storage().data_ptr() == storage:
                self.pending += 1
                return _Stage(index, tensor.size(), tensor.stride(),
                              tensor.storage_offset())
        if self.outer is not None:
            return _Outer(self.outer[0](tensor))
        # Under saved-tensor hooks autograd no longer checks a saved
        # tensor's version; this does, as autograd would.
        return _Kept(tensor, tensor._version)

    def _unpack(self, packed):
        if isinstance(packed, _Kept):
            if packed.tensor._version != packed.version:
                raise RuntimeError(
                    'dynamic_conv2d: a tensor saved for backward was '
                    'modified by an inplace operation between forward and '
                    f'backward (version {packed.tensor._version}, saved at '
                    f'{packed.version})')
            return packed.tensor
        if isinstance(packed, _Outer):
            return self.outer[1](packed.packed)
        if self.recomputed is None:
            for source, version in zip(self.sources, self.versions):
                if source._version != version:
                    raise RuntimeError(
                        'dynamic_conv2d: the input, the kernel bank or an '
                        'attention was modified in place between forward '
                        'and backward; what the layer formed from it '
                        'cannot be formed again')
            self.recomputed = []
            # autograd re-attaches the saved graph
            with torch.no_grad(), (nullcontext() if self.autocast is None
                                   else torch.autocast(**self.autocast)):
                self.form(self.recomputed)
        tensor = self.recomputed[packed.index].as_strided(
            packed.size, packed.stride, packed.offset)
        self.pending -= 1
        if self.pending == 0:  # the last user: let the stages go
            self.recomputed = None
        return tensor


def recomputed_in_backward(form: Callable[[List[Tensor]], Tensor],
                           sources: Tuple[Tensor, ...],
                           use: Callable[[Tensor], Result]) -> Result:
    """``use(form(stages))``, where every tensor ``form`` appends to
    ``stages`` is formed again from ``sources`` in backward rather than
    saved (:class:`StagesRecomputedInBackward`). Where ``form`` made no
    stage (e.g. no channel attention to scale by), ``use`` runs under plain
    autograd."""
    recompute = StagesRecomputedInBackward(form, sources)
    with recompute.hooks():
        formed = form(recompute.stages)
    if not recompute.stages:
        return use(formed)
    with recompute.hooks():
        result = use(formed)
    recompute.stages = []  # packing is over; keep no stage alive
    return result


def scaled_input_conv2d(x: Tensor, weight: Tensor,
                        form: Callable[[Optional[List[Tensor]]], Tensor],
                        use: Callable[[Tensor], Tensor],
                        attentions: ConvAttentions,
                        formed_elements: int) -> Tensor:
    """``use(form())``: a static-weight convolution ``use`` of activations
    that ``form`` scales (and unfolds) from ``x``, ``formed_elements`` in
    its largest tensor. When training, eager, and that tensor outweighs
    the bank, the formed activations are formed again in backward rather
    than kept: they are up to twice ``kh*kw`` times the input, which the
    layer before keeps anyway (OD-ResNet-50 1x's 3x3 layer on 28x28 maps:
    14x a static conv's saved bytes, 1.02x formed again). Where they are
    smaller than the bank (deep layers at small batches) keeping them
    costs little memory, and forming them again would cost time (512
    channels at 7x7, batch 8: 9% of the layer's forward + backward on a
    CPU)."""
    sources = tuple(t for t in (x, attentions.spatial, attentions.input)
                    if t is not None)
    if (not records_autograd(x, weight, *attentions)
            or torch.compiler.is_compiling()
            or formed_elements <= weight.numel()):
        return use(form(None))
    return recomputed_in_backward(form, sources, use)
