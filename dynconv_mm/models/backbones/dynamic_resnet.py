"""ResNet with dynamic convolutions inside its residual blocks."""
from typing import Any, Optional, Sequence

from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmengine.registry import MODELS

from ..pretrained.loading import PretrainedInitMixin
from .dynamic_res_blocks import DynamicBasicBlock, DynamicBottleneck
from .dynet_block_coefficients import is_dynet
from .placement import check_dynamic_conv_cfg, check_stage_flags


@MODELS.register_module()
class DynamicResNet(PretrainedInitMixin, ResNet):
    """ResNet (mmdet's, all its options) whose residual blocks hold dynamic
    convolutions, placed as in ODConv (Li et al., ICLR 2022), Dynamic
    Convolution (Chen et al., CVPR 2020) and DyNet (Zhang et al., 2020).

    Every conv of the residual branch is built from ``dynamic_conv_cfg``:
    the 1x1, 3x3, 1x1 of a Bottleneck or the two 3x3 of a BasicBlock. The
    stem and the downsample projections stay static (built from
    ``conv_cfg``, default ``nn.Conv2d``), unlike mmdet's ``ResNet`` with a
    dynamic ``conv_cfg``, which makes every conv dynamic. Module names are
    mmdet's = torchvision's (``conv1``, ``layer1.0.conv2``,
    ``layer2.0.downsample.0``), so static checkpoints name the same convs.

    Papers' networks (and the presets in ``paper_presets.py``):

    * ODConv 1x / 4x: ``dynamic_conv_cfg=dict(type='ODConv',
      num_kernels=1 | 4)``, depth 18/50 (the authors' attention has a BN:
      add ``attention_norm_cfg=dict(type='BN')`` for their exact layer).
    * DY-ResNet (DynamicConv): ``dict(type='DynamicConv', num_kernels=4)``.
    * Dy-ResNet (DyNet): ``dict(type='DyNetConv', num_kernels=6)`` with
      ``dynet_shared_coefficients=True`` (one coefficient module per block,
      from the block input) and ``base_channels=32, stem_channels=64``:
      DyNet halves the output channels of every dynamic conv; all the
      block convs are dynamic, so every stage is half as wide (outputs
      32/64/128/256 for Dy-ResNet18, 128/256/512/1024 for Dy-ResNet50)
      while the static 7x7 stem keeps 64. That is the placement whose
      multiply-adds match DyNet's table (see ``docs``/tests).

    ``norm_eval=True`` also puts an attention's BatchNorm (e.g. ODConv with
    ``attention_norm_cfg=dict(type='BN')``) in eval mode, like every other
    BN of the backbone; ``frozen_stages`` freezes the attentions of the
    frozen stages with their convs.

    Args:
        depth: 18, 34, 50, 101 or 152.
        dynamic_conv_cfg: conv config of the residual blocks' convs, e.g.
            ``dict(type='ODConv', num_kernels=4)``; ``None`` builds the
            static network.
        dynamic_stages: one bool per stage; stages marked ``False`` keep
            static blocks.
        dynet_shared_coefficients: with a ``DyNetConv`` ``dynamic_conv_cfg``,
            one coefficient module per block instead of one per conv.
        **kwargs: mmdet ``ResNet``'s options (``out_indices``,
            ``frozen_stages``, ``norm_cfg``, ``norm_eval``, ``style``,
            ``with_cp``, ``init_cfg``, ``conv_cfg`` for the static convs,
            ...). ``dcn`` may only be used in static stages.

    Shapes: input ``[B, 3, H, W]``; output a tuple with, for each index ``i``
    in ``out_indices``, ``[B, base_channels * 2**i * expansion, H / 2**(i +
    2), W / 2**(i + 2)]`` (expansion 1 for depth 18/34, 4 otherwise).
    """

    def __init__(self,
                 depth: int,
                 dynamic_conv_cfg: Optional[dict] = None,
                 dynamic_stages: Sequence[bool] = (True, True, True, True),
                 dynet_shared_coefficients: bool = False,
                 **kwargs: Any) -> None:
        owner = type(self).__name__
        # make_res_layer, called from ResNet.__init__, reads these.
        self.dynamic_conv_cfg = check_dynamic_conv_cfg(owner,
                                                       dynamic_conv_cfg)
        self.dynamic_stages = check_stage_flags(owner, 'dynamic_stages',
                                                dynamic_stages,
                                                kwargs.get('num_stages', 4))
        if not isinstance(dynet_shared_coefficients, bool):
            raise ValueError(f'{owner}: option dynet_shared_coefficients='
                             f'{dynet_shared_coefficients!r} is invalid: it '
                             'must be True or False')
        if dynet_shared_coefficients and (
                self.dynamic_conv_cfg is None
                or not is_dynet(self.dynamic_conv_cfg['type'])):
            raise ValueError(
                f'{owner}: option dynet_shared_coefficients=True needs '
                "dynamic_conv_cfg=dict(type='DyNetConv', ...), got "
                f'dynamic_conv_cfg={dynamic_conv_cfg!r}')
        self.dynet_shared_coefficients = dynet_shared_coefficients
        super().__init__(depth, **kwargs)

    def make_res_layer(self, **kwargs: Any) -> ResLayer:
        """A stage whose blocks are dynamic if its ``dynamic_stages`` flag
        says so (``ResNet.__init__`` builds the stages in order)."""
        stage = len(self.res_layers)
        dynamic = self.dynamic_stages[stage] \
            and self.dynamic_conv_cfg is not None
        block = {
            BasicBlock: DynamicBasicBlock,
            Bottleneck: DynamicBottleneck
        }[kwargs.pop('block')]
        return ResLayer(
            block=block,
            dynamic_conv_cfg=self.dynamic_conv_cfg if dynamic else None,
            dynet_shared_coefficients=self.dynet_shared_coefficients
            and dynamic,
            **kwargs)

    def train(self, mode: bool = True) -> 'DynamicResNet':
        """mmdet's ``train`` (frozen stages, ``norm_eval``), returning the
        module as ``nn.Module.train`` does (mmdet's returns ``None``, which
        makes ``model.eval()`` return ``None``)."""
        super().train(mode)
        return self
