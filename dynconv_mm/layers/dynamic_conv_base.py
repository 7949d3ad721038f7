"""What the three papers' layers share: the geometry of an ``nn.Conv2d``,
a bank of ``K`` kernels, an attention module, and the temperature."""
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.modules.module as torch_module
from mmengine.model import BaseModule
from torch import Tensor

from ..execution import ConvAttentions, check_method, dynamic_conv2d
from ..execution.cpu_ops import cpu_ops_ready, cpu_ops_suspended
from ..execution.dynamic_conv2d import one_sample_inference_route
from ..execution.per_sample_kernels import one_sample_call
from .attention import DynamicAttention, hidden_channels, module_entry
from .options import (check_bool, check_int, check_pair,
                      reject_unknown_options)

IntPair = Union[int, Tuple[int, int]]

# Input shapes whose batch-1 inference call a layer keeps (a detector meets
# many image sizes; past this they are decided again).
MAX_INFERENCE_CALLS = 64


def _attention_hooked(attention: nn.Module) -> bool:
    """Whether a forward hook would run around ``attention``'s module call,
    its own or a global one."""
    return bool(attention._forward_hooks or attention._forward_pre_hooks
                or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks)


class DynamicConv2dBase(BaseModule):
    """A convolution whose kernel is formed per sample from a bank.

    It carries the attributes mmcv's ``ConvModule`` and mmdet/mmpose read from
    a conv (``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``transposed``,
    ``output_padding``, ``weight``, ``bias``), but it is deliberately not an
    ``nn.Conv2d`` subclass: OpenMMLab's Kaiming ``init_cfg`` for
    ``Conv2d`` would re-initialise the 5-D bank with the wrong fan.

    Initialisation: the layer initialises itself at construction (the
    papers' init, see :meth:`reset_parameters`); ``init_weights()`` then
    applies only an explicit ``init_cfg`` -- the layer's own, or a parent's
    that names this layer type -- and never re-randomises, so a
    ``Constant``/``Pretrained`` init asked for in a config stays.

    Subclasses set :attr:`layer_type` (the registry name) and the paper's
    option defaults, and build the paper's attention in
    :meth:`build_attention`; the options are documented on each subclass.

    Execution (all layers): ``execution='auto'`` (default) lets
    :func:`~dynconv_mm.execution.select_method` pick the fastest
    formulation per call by shape, device and grad mode; a formulation name
    (``'batch_folded'``, ``'aggregated'``, ``'kernel_branches'``,
    ``'im2col'``, ``'tiled_gemm'``, ``'triton'``) forces it; a list of
    names lets ``'auto'`` choose among those only, i.e. disables the
    others. All compute the same function. Forced ``'triton'`` also runs
    the attention MLP as one fused Triton kernel when the attention has no
    trunk norm.

    Shapes: ``weight`` ``[K, C_out, C_in/groups, kh, kw]``; ``bias``
    ``[K, C_out]`` (mixed like the kernels) or ``None``.
    """

    layer_type = 'DynamicConv2dBase'
    # Per-paper defaults of the options left as None in __init__.
    default_num_kernels: int = 4
    default_reduction: float = 4
    default_min_hidden_channels: int = 4

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair,
                 stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 num_kernels: Optional[int] = None,
                 reduction: Optional[float] = None,
                 min_hidden_channels: Optional[int] = None,
                 temperature: float = 1.0,
                 attention_norm_cfg: Optional[dict] = None,
                 execution: Union[str, Sequence[str]] = 'auto',
                 init_cfg: Union[dict, List[dict], None] = None,
                 **unknown_options: Any) -> None:
        owner = self.layer_type
        if not (init_cfg is None or isinstance(init_cfg, dict) or
                (isinstance(init_cfg, list)
                 and all(isinstance(c, dict) for c in init_cfg))):
            raise ValueError(f'{owner}: option init_cfg={init_cfg!r} is '
                             'invalid: it must be a dict, a list of dicts '
                             'or None')
        super().__init__(init_cfg=init_cfg)
        reject_unknown_options(owner, type(self), unknown_options)
        if num_kernels is None:
            num_kernels = self.default_num_kernels
        in_channels = check_int(owner, 'in_channels', in_channels, 1)
        out_channels = check_int(owner, 'out_channels', out_channels, 1)
        groups = check_int(owner, 'groups', groups, 1)
        num_kernels = check_int(owner, 'num_kernels', num_kernels, 1)
        bias = check_bool(owner, 'bias', bias)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f'{owner}: option groups={groups} is invalid: it must divide '
                f'in_channels={in_channels} and out_channels={out_channels}')
        self.kernel_size = check_pair(owner, 'kernel_size', kernel_size, 1)
        self.stride = check_pair(owner, 'stride', stride, 1)
        self.dilation = check_pair(owner, 'dilation', dilation, 1)
        if isinstance(padding, str):
            if padding not in ('same', 'valid'):
                raise ValueError(f"{owner}: option padding={padding!r} is "
                                 "invalid: use an int, a pair, 'same' or "
                                 "'valid'")
            if padding == 'same' and self.stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' needs stride 1, "
                                 f'got stride={stride!r}')
            self.padding = padding
        else:
            self.padding = check_pair(owner, 'padding', padding, 0)
        if padding_mode != 'zeros':
            # ConvModule pads explicitly for other modes before the conv.
            raise ValueError(f'{owner}: option padding_mode={padding_mode!r} '
                             "is not supported; only 'zeros'")
        self.execution = check_method(execution, owner, 'execution')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.padding_mode = padding_mode
        self.num_kernels = num_kernels
        self.transposed = False
        self.output_padding = (0, 0)
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups,
                        *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_channels))
        else:
            self.register_parameter('bias', None)
        self.attention = self.build_attention(
            hidden_channels(
                owner, in_channels,
                self.default_reduction if reduction is None else reduction,
                self.default_min_hidden_channels
                if min_hidden_channels is None else min_hidden_channels),
            temperature, attention_norm_cfg)
        self._reset_kernels()  # the attention initialised itself

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> DynamicAttention:
        """The paper's attention for this layer's geometry."""
        raise NotImplementedError

    def _reset_kernels(self) -> None:
        """Each kernel Kaiming normal (fan_out), as the ODConv authors and
        mmdet's conv init do; zero biases."""
        for kernel in self.weight.data:
            nn.init.kaiming_normal_(kernel, mode='fan_out',
                                    nonlinearity='relu')
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def reset_parameters(self) -> None:
        """Re-initialise the kernel bank and the attention."""
        self._reset_kernels()
        self.attention.reset_parameters()

    def init_weights(self) -> None:
        """Apply ``init_cfg`` if one was given; otherwise keep the
        construction-time init (and a parent's ``init_cfg`` that named this
        layer, which OpenMMLab applies before calling this).

        Having this method also stops ``ConvModule`` from Kaiming-
        initialising ``weight`` as if it were 4-D.
        """
        super().init_weights()

    @property
    def temperature(self) -> float:
        """The attention's softmax/sigmoid temperature ``tau``."""
        return float(self.attention.temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.attention.set_temperature(value)

    def bias_weights_sum_to_one(self) -> bool:
        """Whether every sample's bias mixing weights sum to one: no kernel
        attention (the one bias as it is) or a softmax one. Then a constant
        added to every kernel's bias adds it to the output
        (:meth:`fold_batch_norm`); DyNet's sigmoid coefficients do not sum
        to one."""
        attention = module_entry(self, 'attention')
        if attention is None:  # its block's module predicts its attentions
            return False
        return ('kernel' not in attention.head_sizes
                or attention.head_activation('kernel') == 'softmax')

    @torch.no_grad()
    def fold_batch_norm(self, norm: nn.Module) -> None:
        """Fold an eval-mode BatchNorm that follows this layer into its
        kernels and biases, for inference (``norm`` is then to be replaced
        by ``nn.Identity``; see :func:`dynconv_mm.engine.fuse_conv_bn`).

        The norm scales output channel ``o`` by ``g_o = gamma_o /
        sqrt(var_o + eps)`` and adds ``beta_o - g_o mean_o``. Every
        attention is per sample, per input channel or per output channel,
        and the kernels are mixed linearly, so scaling each kernel's row
        ``o`` by ``g_o`` scales the output; the constant goes into each
        kernel's bias where the bias mixing weights sum to one
        (:meth:`bias_weights_sum_to_one`), which rules out DyNet's layer.
        A layer without bias gets one.
        """
        owner = self.layer_type
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or \
                norm.running_mean is None:
            raise ValueError(
                f'{owner}: can only fold a BatchNorm with running '
                f'statistics, got {type(norm).__name__}')
        if norm.num_features != self.out_channels:
            raise ValueError(
                f'{owner}: cannot fold a BatchNorm of {norm.num_features} '
                f'channels into out_channels={self.out_channels}')
        if not self.bias_weights_sum_to_one():
            raise ValueError(
                f'{owner}: cannot fold a BatchNorm: the bias mixing '
                'weights (sigmoid coefficients) do not sum to one, so its '
                'shift cannot go into the kernels\' biases')
        weight = self.weight
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        weight.copy_(weight.double() * scale.view(1, -1, 1, 1, 1))
        if self.bias is None:
            self.bias = nn.Parameter(
                torch.zeros(self.num_kernels, self.out_channels,
                            dtype=weight.dtype, device=weight.device))
        self.bias.copy_(self.bias.double() * scale + shift)

    def execution_method(self) -> Union[str, Sequence[str]]:
        """Which formulation of :func:`dynamic_conv2d` to run: the
        ``execution`` option."""
        return self.execution

    def forward(self,
                x: Tensor,
                attentions: Optional[ConvAttentions] = None) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H_out, W_out]``.

        ``attentions`` may be given by a module that owns the attention for
        several convs; by default the layer computes its own from ``x``.
        """
        if (attentions is None and not self.training
                and not torch.is_grad_enabled()):
            y = self._repeated_inference(x)
            if y is not None:
                return y
        if self.training and not torch.is_grad_enabled():
            # A reentrant checkpoint's first pass (mmdet's with_cp): its
            # recomputation in backward runs in PyTorch, so must it.
            with cpu_ops_suspended():
                return self._forward(x, attentions)
        return self._forward(x, attentions)

    def _forward(self, x: Tensor,
                 attentions: Optional[ConvAttentions]) -> Tensor:
        self._check_input(x)
        if attentions is None:
            attentions = module_entry(self, 'attention')(
                x, fused=self.execution == 'triton')
        return dynamic_conv2d(x, module_entry(self, 'weight'), attentions,
                              module_entry(self, 'bias'), self.stride,
                              self.padding, self.dilation, self.groups,
                              self.execution_method())

    def _repeated_inference(self, x: Tensor) -> Optional[Tensor]:
        """Batch-1 inference on the compiled CPU ops, run as the general
        forward runs it, with what that decides from shapes (the checks,
        the formulation, the route and what follows from it) taken on the
        first call of each input shape and reused while the ops'
        conditions hold; ``None`` where this does not apply (the general
        forward runs). At batch 1 a layer's few ops are short, and the
        Python deciding around them was ~2 ms of a ~50 ms OD-ResNet-50
        forward on 2 CPU cores (docs/benchmarks.md)."""
        if not (isinstance(x, Tensor) and x.is_cpu and x.dim() == 4
                and x.shape[0] == 1):  # is_cpu first: on a GPU, no more
            return None
        attention = module_entry(self, 'attention')
        if (type(self)._forward is not DynamicConv2dBase._forward
                or type(attention).forward is not DynamicAttention.forward
                or _attention_hooked(attention)):
            return None  # the attention's module call must run
        weight = module_entry(self, 'weight')
        bias = module_entry(self, 'bias')
        # also: nothing compiles, traces or watches the call
        if not cpu_ops_ready(x, weight, bias):
            return None
        method = self.execution_method()
        calls = self.__dict__.setdefault('_inference_calls', {})
        key = (x.shape, weight.shape, bias is None, self.stride, self.padding,
               self.dilation, self.groups,
               method if isinstance(method, str) else tuple(method))
        call = calls.get(key, False)
        if call is None:  # another formulation, or not the compiled ops
            return None
        if call is False:  # the first call of this shape
            self._check_input(x)
        # the op's attentions: contiguous float32 CPU tensors
        attentions = attention.compiled_attentions(x)
        if attentions is None:
            return None
        if call is False:  # decide
            route = one_sample_inference_route(
                x, weight, attentions, bias, self.stride, self.padding,
                self.dilation, self.groups, method)
            # not by the op while its conditions hold: a CPU without AVX2
            # and FMA, or no attention at all; for good, either way
            call = None if route is None or not route.by_op else \
                one_sample_call(x, weight, attentions, bias, self.stride,
                                self.padding, self.dilation, self.groups,
                                route)
            if len(calls) >= MAX_INFERENCE_CALLS:  # a detector's sizes
                calls.clear()
            calls[key] = call
            if call is None:  # the general forward, these attentions given
                return self._forward(x, attentions)
        return call(x, weight, attentions, bias)

    def __getstate__(self) -> dict:
        # The kept inference calls are closures around the compiled ops, not
        # picklable (torch.save of a whole model, deepcopy): decided again.
        state = super().__getstate__()
        state.pop('_inference_calls', None)
        return state

    def _check_input(self, x: Any) -> None:
        """Refuse an input the convolution cannot take, naming this layer
        and the option it contradicts, before torch fails deep inside."""
        owner = self.layer_type
        if not isinstance(x, Tensor) or x.dim() != 4 \
                or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x)
            raise ValueError(f'{owner}: input must be a floating-point '
                             f'[B, C, H, W] tensor, got {shape}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'{owner}: input of shape {tuple(x.shape)} has '
                f'{x.shape[1]} channels but in_channels={self.in_channels}')
        if isinstance(self.padding, str):  # 'same' never shrinks the input
            padding = (0, 0) if self.padding == 'valid' else None
        else:
            padding = self.padding
        if padding is None:
            return
        for i, axis in enumerate(('height', 'width')):
            size = x.shape[2 + i]
            extent = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            if size + 2 * padding[i] < extent:
                raise ValueError(
                    f'{owner}: input of shape {tuple(x.shape)} is too small: '
                    f'its {axis} {size} padded by padding={self.padding!r} '
                    f'is less than the kernel_size={self.kernel_size} '
                    f'dilated by dilation={self.dilation} ({extent})')

    def extra_repr(self) -> str:
        text = (f'{self.in_channels}, {self.out_channels}, '
                f'kernel_size={self.kernel_size}, stride={self.stride}, '
                f'num_kernels={self.num_kernels}')
        if self.padding != (0, 0):
            text += f', padding={self.padding}'
        if self.dilation != (1, 1):
            text += f', dilation={self.dilation}'
        if self.groups != 1:
            text += f', groups={self.groups}'
        if self.bias is None:
            text += ', bias=False'
        return text
