"""Backbone configs of the papers' ImageNet networks, by name.

Each value is a config for ``MODELS.build`` (or a config file's
``model.backbone``, merged with task options such as ``out_indices``,
``frozen_stages`` and ``norm_eval``); ``paper_backbone(name, **options)``
returns a copy with options added. The papers' parameter counts include a
1000-class classifier that a backbone does not have; the tests add it
analytically and pin every count here against the papers' tables.

* ``od_*``: ODConv (Li, Zhou, Yao, ICLR 2022), "1x" = 1 kernel, "4x" = 4,
  with the authors' attention (a BatchNorm after its first FC;
  ``attention_norm_cfg=None``, our layer's default, has an FC bias instead:
  ``h`` fewer parameters per conv: 1,440 fewer in OD-ResNet50 4x, 912 in
  OD-MobileNetV2 0.5 4x, whose 4,435,501 then rounds to 4.43M instead of
  the table's 4.44M; every other count rounds the same).
* ``dy_*``: Dynamic Convolution (Chen et al., CVPR 2020), K = 4.
* ``dynet_*``: DyNet's Dy-ResNet (Zhang et al. 2020), g = 6, one
  coefficient module per block, every stage half as wide (see
  ``DynamicResNet``).
"""
import copy
from typing import Any, Dict

_OD_BN = dict(type='BN')


def _od(num_kernels: int) -> dict:
    return dict(
        type='ODConv', num_kernels=num_kernels, attention_norm_cfg=_OD_BN)


PAPER_BACKBONES: Dict[str, dict] = {
    **{
        f'resnet{depth}': dict(type='DynamicResNet', depth=depth)
        for depth in (18, 50)
    },
    **{
        f'od_resnet{depth}_{k}x': dict(
            type='DynamicResNet', depth=depth, dynamic_conv_cfg=_od(k))
        for depth in (18, 50) for k in (1, 4)
    },
    **{
        f'mobilenetv2_{round(w * 100):03d}': dict(
            type='DynamicMobileNetV2', widen_factor=w)
        for w in (0.5, 0.75, 1.0)
    },
    **{
        f'od_mobilenetv2_{round(w * 100):03d}_{k}x': dict(
            type='DynamicMobileNetV2', widen_factor=w,
            dynamic_conv_cfg=_od(k))
        for w in (0.5, 0.75, 1.0) for k in (1, 4)
    },
    'dy_resnet18': dict(
        type='DynamicResNet', depth=18,
        dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=4)),
    # Depthwise convs static: the placement that gives 11.1M parameters.
    'dy_mobilenetv2_100': dict(
        type='DynamicMobileNetV2', widen_factor=1.0,
        dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=4)),
    'mobilenetv3_small': dict(type='DynamicMobileNetV3', arch='small'),
    'dy_mobilenetv3_small': dict(
        type='DynamicMobileNetV3', arch='small',
        dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=4)),
    **{
        f'dynet_resnet{depth}': dict(
            type='DynamicResNet', depth=depth, stem_channels=64,
            base_channels=32,
            dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=6),
            dynet_shared_coefficients=True)
        for depth in (18, 50)
    },
}  # yapf: disable


def paper_backbone(name: str, **options: Any) -> dict:
    """A copy of ``PAPER_BACKBONES[name]`` with ``options`` added (e.g.
    ``out_indices``, ``frozen_stages``, ``norm_eval``, ``init_cfg``)."""
    if name not in PAPER_BACKBONES:
        raise ValueError(f'paper_backbone: unknown name {name!r}; known: '
                         f'{", ".join(sorted(PAPER_BACKBONES))}')
    cfg = copy.deepcopy(PAPER_BACKBONES[name])
    cfg.update(options)
    return cfg
