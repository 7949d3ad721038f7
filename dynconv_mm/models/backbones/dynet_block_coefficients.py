"""DyNet's one coefficient module per residual block (Zhang et al.,
"DyNet: Dynamic Convolution for Accelerating Convolutional Neural
Networks", 2020): the block input predicts the fusion coefficients of every
dynamic conv of the block."""
from typing import Any, Optional, Sequence, Tuple

from torch import Tensor

from ...execution import ConvAttentions
from ...layers import DyNetConv2d, KernelFusionCoefficients, hidden_channels


class BlockFedDyNetConv2d(DyNetConv2d):
    """A ``DyNetConv`` without coefficient module of its own: its residual
    block predicts its coefficients and passes them to :meth:`forward`.

    Same kernels, options and shapes as :class:`DyNetConv2d`; the options
    of the coefficient MLP (``reduction``, ``min_hidden_channels``,
    ``temperature``, ``attention_norm_cfg``) are validated here and used by
    the block's :class:`BlockKernelFusionCoefficients`.
    """

    def build_attention(self, hidden_channels: int, temperature: float,
                        norm_cfg: Optional[dict]) -> None:
        return None

    def reset_parameters(self) -> None:
        """Re-initialise the kernels (the block owns the coefficients)."""
        self._reset_kernels()

    @property
    def temperature(self) -> float:
        raise AttributeError(
            f'{self.layer_type}: this conv takes its coefficients from its '
            "block's coefficient module; read that module's temperature")

    @temperature.setter
    def temperature(self, value: float) -> None:
        raise AttributeError(
            f'{self.layer_type}: this conv takes its coefficients from its '
            "block's coefficient module; set that module's temperature")

    def forward(self,
                x: Tensor,
                attentions: Optional[ConvAttentions] = None) -> Tensor:
        if attentions is None:
            raise ValueError(
                f'{self.layer_type}: this conv has no coefficient module; '
                'its block must pass attentions=... (one coefficient '
                'module per block, dynet_shared_coefficients=True)')
        return super().forward(x, attentions)


class BlockKernelFusionCoefficients(KernelFusionCoefficients):
    """Dy-ResNet's coefficient prediction for all dynamic convs of a block.

    ``[B, C_in, H, W]`` (the block input) -> global average pool -> FC
    (``C_in -> C_in / reduction``) -> ReLU -> FC -> ``sigmoid(z / tau)`` ->
    one ``[B, C_out_j, g]`` coefficient tensor per conv ``j`` of the block,
    each wrapped in :class:`ConvAttentions` for
    ``BlockFedDyNetConv2d.forward``.

    Args:
        in_channels: channels of the block input.
        convs: the block's dynamic convs, in the order their coefficients
            are returned; all must have the same ``num_kernels`` (``g``).
        reduction, min_hidden_channels, temperature, attention_norm_cfg:
            as for ``DyNetConv`` (its defaults when ``None``).
    """

    def __init__(self,
                 in_channels: int,
                 convs: Sequence[DyNetConv2d],
                 reduction: Optional[float] = None,
                 min_hidden_channels: Optional[int] = None,
                 temperature: float = 1.0,
                 attention_norm_cfg: Optional[dict] = None) -> None:
        owner = DyNetConv2d.layer_type
        kernels = {conv.num_kernels for conv in convs}
        if len(kernels) != 1:
            raise ValueError(f'{owner}: the convs sharing a coefficient '
                             f'module must have one num_kernels, got '
                             f'{sorted(kernels)}')
        self.split_sizes = [conv.out_channels for conv in convs]
        super().__init__(
            owner, in_channels, sum(self.split_sizes), kernels.pop(),
            hidden_channels(
                owner, in_channels, DyNetConv2d.default_reduction
                if reduction is None else reduction,
                DyNetConv2d.default_min_hidden_channels
                if min_hidden_channels is None else min_hidden_channels),
            temperature, attention_norm_cfg)

    def forward(self, x: Tensor) -> Tuple[ConvAttentions, ...]:
        coefficients = super().forward(x).kernel
        return tuple(
            ConvAttentions(kernel=part)
            for part in coefficients.split(self.split_sizes, dim=1))


def coefficient_options(conv_cfg: dict) -> dict:
    """The options of a ``DyNetConv`` config that the block's coefficient
    module takes."""
    names = ('reduction', 'min_hidden_channels', 'temperature',
             'attention_norm_cfg')
    return {name: conv_cfg[name] for name in names if name in conv_cfg}


def is_dynet(conv_type: Any) -> bool:
    """Whether a conv config's ``type`` names DyNet's layer."""
    return conv_type == DyNetConv2d.layer_type or (
        isinstance(conv_type, type) and issubclass(conv_type, DyNetConv2d))
