"""Parameters and multiply-accumulates (MACs, the papers' "MAdds"/"FLOPs")
of a model, dynamic convolutions included, counted by running it once.

Counting convention
-------------------
One multiply-accumulate counts 1. What is counted, per forward call:

* convolutions: ``C_out*H_out*W_out * C_in/groups*kh*kw`` (transposed:
  per input element); fully connected / matrix products: ``m*k*n``;
  scaled-dot-product attention: ``Q K^T`` and ``P V``. Bias additions are
  not multiply-accumulates and are not counted (as in fvcore/mmengine);
* average pooling and ``mean`` (the attentions' global pooling): one
  addition per input element;
* dynamic convolutions (``DynamicConv``, ``ODConv``, ``DyNetConv``): the
  convolution with the aggregated kernel plus the kernel aggregation, under
  the ``'paper'`` (default: the papers' equations, on the kernel) or
  ``'executed'`` (the operators the layer runs, elementwise multiplications
  and multiply-adds included) convention of :mod:`.dynamic_layer_cost`; their attention
  modules are counted by the rules above (pooling + FCs);
* **zero by convention**, and listed by name with their call counts in the
  report: elementwise arithmetic and activations (residual additions,
  sigmoid/softmax, scalings outside dynamic layers), normalisation (BN
  folds into the conv at inference), max pooling and other reductions,
  interpolation, copies, views, indexing. The papers' static numbers
  (ResNet-18 1.814G, MobileNetV2 300.8M) are exactly the convolutions and
  the classifier, which this reproduces.

Nothing is taken as 0 silently: an ATen operator or a compiled mmcv op
outside these groups is *uncounted* and raises
:class:`UncountedOperationError` (or, with ``strict=False``, is listed in
:attr:`ComplexityReport.uncounted`). Compiled mmcv ops (its
``_ext`` module: RoIAlign, NMS, deformable convolutions, ...) run below the
dispatcher; every call into ``_ext`` is watched, the sampling/suppression
ones are zero by convention and modules whose products run there get a
formula (mmcv's deformable convolutions). Compiled code outside ATen and
mmcv's ``_ext`` is not visible.

How: forward hooks keep a stack of the modules running; a
``TorchDispatchMode`` sees every ATen operator and charges it to the
innermost module, unless that module has a formula of its own (a dynamic
convolution under ``'paper'``, a deformable convolution), which then
accounts for everything it runs directly. Counting is at inference: the
model is put in ``eval()`` and run under ``torch.no_grad()`` (its mode is
restored afterwards). Count at batch 1 for the per-image cost the papers
report.
"""
import contextlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ..execution import ConvAttentions
from ..layers import DynamicConv2dBase
from .dynamic_layer_cost import (attentions_of_call, check_convention,
                                 dynamic_conv_macs)
from .op_costs import (MAC_OPS, ZERO_COST_COMPILED_OPS, is_zero_cost_op,
                       op_name)


class UncountedOperationError(RuntimeError):
    """An operator or function ran whose cost the counter cannot tell."""


@dataclass
class ComplexityReport:
    """What :func:`count_complexity` measured.

    Attributes:
        macs: multiply-accumulates of the forward call.
        params: number of parameters of the model (each tensor once).
        convention: ``'paper'`` or ``'executed'`` (dynamic convolutions).
        module_macs: MACs charged to each module by its dotted name (``''``
            is the root); sums over children are :meth:`macs_of`.
        module_params: parameters owned directly by each module.
        zero_cost: operators/functions counted 0 by the convention, with
            how often they ran.
        uncounted: operators/functions whose cost is unknown, with how
            often they ran (empty unless ``strict=False``).
        dynamic_macs: the dynamic convolutions' MACs by part: ``conv``
            and ``aggregation`` (``'paper'``); ``conv`` (convolutions),
            ``aggregation`` (matrix products: the mixing) and ``scaling``
            (elementwise multiplications by attentions) (``'executed'``).
    """

    macs: int
    params: int
    convention: str
    module_macs: Dict[str, int]
    module_params: Dict[str, int]
    zero_cost: Counter = field(default_factory=Counter)
    uncounted: Counter = field(default_factory=Counter)
    dynamic_macs: Counter = field(default_factory=Counter)

    def macs_of(self, prefix: str) -> int:
        """MACs of module ``prefix`` and everything below it."""
        return _sum_under(self.module_macs, prefix)

    def params_of(self, prefix: str) -> int:
        """Parameters of module ``prefix`` and everything below it."""
        return _sum_under(self.module_params, prefix)

    def table(self, max_depth: int = 2) -> str:
        """MACs and parameters per module down to ``max_depth``, then the
        zero-by-convention and uncounted operators."""
        names = sorted({
            _truncate(name, max_depth)
            for name in list(self.module_macs) + list(self.module_params)
        })
        lines = [f'{"module":<48} {"MACs":>14} {"params":>12}']
        for name in names:
            if name:
                macs, params = self.macs_of(name), self.params_of(name)
            else:  # what the root's own forward runs, not the total
                macs = self.module_macs.get('', 0)
                params = self.module_params.get('', 0)
            lines.append(f'{name or "(model itself)":<48} '
                         f'{format_count(macs):>14} '
                         f'{format_count(params):>12}')
        lines.append(f'total MACs {format_count(self.macs)} '
                     f'({self.macs:,}), params '
                     f'{format_count(self.params)} ({self.params:,}), '
                     f'dynamic convs counted as {self.convention!r}')
        if self.dynamic_macs:
            lines.append('dynamic convolutions: ' + ', '.join(
                f'{part} {format_count(value)}'
                for part, value in sorted(self.dynamic_macs.items())))
        if self.zero_cost:
            lines.append('counted as 0 by the convention (not '
                         'multiply-accumulates): ' + ', '.join(
                             f'{name} x{calls}' for name, calls in sorted(
                                 self.zero_cost.items())))
        if self.uncounted:
            lines.append('WARNING: NOT COUNTED (cost unknown, total is '
                         'incomplete): ' + ', '.join(
                             f'{name} x{calls}' for name, calls in sorted(
                                 self.uncounted.items())))
        return '\n'.join(lines)


def format_count(value: int) -> str:
    """``1814073856`` -> ``'1.814G'``."""
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= scale:
            return f'{value / scale:.3f}{unit}'
    return str(value)


def _sum_under(values: Dict[str, int], prefix: str) -> int:
    if not prefix:
        return sum(values.values())
    return sum(value for name, value in values.items()
               if name == prefix or name.startswith(prefix + '.'))


def _truncate(name: str, depth: int) -> str:
    return '.'.join(name.split('.')[:depth]) if name else name


# A module with its own formula: (module, x, y, call args, call kwargs,
# captured attentions) -> MACs by part.
ModuleFormula = Callable[..., Dict[str, int]]


def _deform_conv_macs(module: nn.Module, x: Tensor, y: Tensor, *_) -> dict:
    """mmcv deformable convs (v1/v2): the convolution's products; the
    bilinear sampling of the input is not counted (like interpolation). The
    offset/mask conv is an ordinary child ``nn.Conv2d``."""
    per_filter = (module.in_channels // module.groups *
                  math.prod(module.kernel_size))
    return dict(conv=y.numel() * per_filter)


def _module_formulas() -> List[Tuple[type, str]]:
    """Module types with their own formula (beyond dynamic convs): the
    ones whose work runs in compiled ops invisible to the dispatcher."""
    formulas = []
    try:
        from mmcv.ops import DeformConv2d, ModulatedDeformConv2d
    except ImportError:  # mmcv without compiled ops: nothing to count
        return formulas
    formulas += [(DeformConv2d, 'deform_conv'),
                 (ModulatedDeformConv2d, 'deform_conv')]
    return formulas


# Frame kinds whose formula covers the operators they run directly.
_FORMULAS = ('dynamic_conv', 'deform_conv')
# Under 'executed', a dynamic layer's elementwise products are its
# attentions scaling a kernel or an activation: one MAC per output element;
# a fused multiply-add accumulates one sample's kernel from the bank
# (inference at batch 1): one MAC per output element of aggregation.
_ELEMENTWISE_PRODUCTS = frozenset({'aten.mul', 'aten.mul_'})
_ELEMENTWISE_MULTIPLY_ADDS = frozenset({'aten.addcmul', 'aten.addcmul_'})


class _Frame:
    """One running module on the stack."""

    __slots__ = ('name', 'module', 'formula', 'attentions', 'call')

    def __init__(self, name: str, module: nn.Module,
                 formula: Optional[str]) -> None:
        self.name = name
        self.module = module
        self.formula = formula
        self.attentions: Optional[ConvAttentions] = None
        self.call: Tuple[tuple, dict] = ((), {})


class _Counting(TorchDispatchMode):
    """The dispatch mode and the module hooks of one counting run."""

    def __init__(self, model: nn.Module, convention: str) -> None:
        super().__init__()
        self.convention = convention
        self.stack: List[_Frame] = []
        self.module_macs: Dict[str, int] = defaultdict(int)
        self.zero_cost: Counter = Counter()
        self.uncounted: Counter = Counter()
        self.parts: Counter = Counter()
        formulas = _module_formulas()
        self.handles = []
        for name, module in model.named_modules():
            formula = None
            if isinstance(module, DynamicConv2dBase):
                formula = 'dynamic_conv' if convention == 'paper' \
                    else 'executed'
            else:
                for module_type, kind in formulas:
                    if isinstance(module, module_type):
                        formula = kind
            self.handles.append(
                module.register_forward_pre_hook(
                    self._enter(name, formula), with_kwargs=True))
            self.handles.append(
                module.register_forward_hook(self._leave, always_call=True))

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()

    # -- module stack -----------------------------------------------------
    def _enter(self, name: str, formula: Optional[str]) -> Callable:

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            frame = _Frame(name, module, formula)
            frame.call = (args, kwargs)
            if formula == 'dynamic_conv':
                frame.attentions = attentions_of_call(args, kwargs)
            self.stack.append(frame)

        return hook

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.stack or self.stack[-1].module is not module:
            return  # the forward raised before the stack was consistent
        frame = self.stack.pop()
        if isinstance(output, ConvAttentions) and self.stack:
            parent = self.stack[-1]
            if parent.formula == 'dynamic_conv' and parent.attentions is None:
                parent.attentions = output  # the layer's own attention
        if frame.formula in _FORMULAS and isinstance(output, Tensor):
            # (not a Tensor: the forward raised; its error propagates)
            self._charge_formula(frame, output)

    def _charge_formula(self, frame: _Frame, output: Any) -> None:
        args, kwargs = frame.call
        x = args[0] if args else kwargs.get('x', kwargs.get('input'))
        if frame.formula == 'dynamic_conv':
            module = frame.module
            if frame.attentions is None:
                raise UncountedOperationError(
                    f'complexity: {type(module).__name__} at '
                    f'{frame.name!r} ran without attentions the counter '
                    'could see (neither passed in nor returned by a child '
                    'module as ConvAttentions)')
            parts = dynamic_conv_macs(
                tuple(module.weight.shape), module.bias is not None, x,
                output, frame.attentions)
        else:
            parts = _deform_conv_macs(frame.module, x, output)
        for part, value in parts.items():
            self.parts[part] += value
        self.module_macs[frame.name] += sum(parts.values())

    # -- operators --------------------------------------------------------
    def _charged_to(self) -> Optional[_Frame]:
        """The innermost running module, or ``None`` if a formula module
        (which accounts for its own operators) is innermost."""
        if not self.stack:
            return _Frame('', None, None)
        frame = self.stack[-1]
        return None if frame.formula in _FORMULAS else frame

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        frame = self._charged_to()
        if frame is None:
            return output
        name = op_name(func)
        formula = MAC_OPS.get(name)
        executed = frame.formula == 'executed'
        if executed and name in _ELEMENTWISE_PRODUCTS:
            self._charge(frame, 'scaling', output.numel())
        elif executed and name in _ELEMENTWISE_MULTIPLY_ADDS:
            self._charge(frame, 'aggregation', output.numel())
        elif formula is not None:
            macs = int(formula(args, output))
            if executed:
                self._charge(frame, 'conv' if 'convolution' in name else
                             'aggregation', macs)
            else:
                self.module_macs[frame.name] += macs
        elif is_zero_cost_op(func):
            self.zero_cost[name] += 1
        else:
            self.uncounted[name] += 1
        return output

    def _charge(self, frame: _Frame, part: str, macs: int) -> None:
        """Charge a dynamic layer's own operator under ``'executed'``."""
        self.parts[part] += macs
        self.module_macs[frame.name] += macs

    def compiled_op(self, name: str) -> None:
        """A compiled (non-ATen) op ran: invisible to the dispatcher."""
        frame = self._charged_to()
        if frame is None:
            return
        if name in ZERO_COST_COMPILED_OPS:
            self.zero_cost[name] += 1
        else:
            self.uncounted[name] += 1


@contextlib.contextmanager
def _watch_compiled_ops(counting: _Counting) -> Iterator[None]:
    """Record every call into mmcv's compiled ``_ext`` module (RoIAlign,
    NMS, deformable convs, ...), which runs below the dispatcher: the ops
    call ``ext_module.<name>(...)`` at run time, so wrapping the module's
    attributes for the duration of the count sees them all."""
    try:
        import mmcv._ext as ext
    except ImportError:  # mmcv without compiled ops: nothing to watch
        yield
        return
    originals = {
        name: getattr(ext, name)
        for name in dir(ext)
        if not name.startswith('__') and callable(getattr(ext, name))
    }

    def watched(name: str, function: Callable) -> Callable:

        def call(*args, **kwargs):
            counting.compiled_op(f'mmcv._ext.{name}')
            return function(*args, **kwargs)

        return call

    for name, function in originals.items():
        setattr(ext, name, watched(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(ext, name, function)


def _count_params(model: nn.Module) -> Tuple[int, Dict[str, int]]:
    seen = set()
    per_module: Dict[str, int] = defaultdict(int)
    for module_name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            per_module[module_name] += param.numel()
    return sum(per_module.values()), dict(per_module)


def count_complexity(model: nn.Module,
                     inputs: Union[Tensor, Sequence[int], tuple, None] = None,
                     *,
                     forward: Optional[Callable[[], Any]] = None,
                     convention: str = 'paper',
                     strict: bool = True) -> ComplexityReport:
    """Count the parameters and multiply-accumulates of one forward call.

    Args:
        model: any ``nn.Module``.
        inputs: an input tensor, or an input shape without the batch (e.g.
            ``(3, 224, 224)``: a batch of 1 of random values is built on the
            model's device), or ``None`` when ``forward`` is given.
        forward: a callable that runs the model (for models whose forward
            takes more than a tensor, e.g. a detector with data samples).
        convention: how a dynamic convolution's aggregation is counted,
            ``'paper'`` or ``'executed'`` (see :mod:`.dynamic_layer_cost`).
        strict: raise :class:`UncountedOperationError` if any operator's
            cost is unknown; with ``False`` they are listed in the report.

    Returns:
        :class:`ComplexityReport`.
    """
    check_convention(convention)
    if forward is None:
        if inputs is None:
            raise ValueError('count_complexity: give inputs (a tensor or a '
                             'shape) or a forward callable')
        if not isinstance(inputs, Tensor):
            shape = tuple(int(size) for size in inputs)
            if not shape or any(size < 1 for size in shape):
                raise ValueError(f'count_complexity: input shape must be '
                                 f'positive sizes without the batch, got '
                                 f'{inputs!r}')
            param = next(model.parameters(), None)
            device = param.device if param is not None else 'cpu'
            inputs = torch.rand(1, *shape, device=device)
        tensor = inputs

        def forward():
            return model(tensor)

    params, module_params = _count_params(model)
    counting = _Counting(model, convention)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _watch_compiled_ops(counting), counting:
            forward()
    finally:
        counting.remove_hooks()
        model.train(was_training)
    if counting.uncounted and strict:
        raise UncountedOperationError(
            'complexity: these ran but their multiply-accumulates are '
            'unknown, so a total would be wrong: ' + ', '.join(
                f'{name} x{calls}'
                for name, calls in sorted(counting.uncounted.items())) +
            '. Add a formula (dynconv_mm/analysis/op_costs.py) or pass '
            'strict=False to list them.')
    module_macs = {k: v for k, v in counting.module_macs.items() if v}
    return ComplexityReport(
        macs=sum(module_macs.values()),
        params=params,
        convention=convention,
        module_macs=module_macs,
        module_params=module_params,
        zero_cost=counting.zero_cost,
        uncounted=counting.uncounted,
        dynamic_macs=counting.parts)
