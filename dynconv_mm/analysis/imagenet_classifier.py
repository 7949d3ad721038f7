"""A backbone with the ImageNet head the papers' tables include: global
average pooling and a fully connected classifier on the last feature map.

The dynamic-convolution papers report ImageNet parameters and MAdds of the
whole classifier; detection backbones stop before the head. Wrapping a
backbone in :class:`ImageNetClassifier` makes its counts comparable (the
ODConv detection table also counts the unused 1000-class FC:
``2048*1000+1000`` parameters for ResNet-50).
"""
from typing import Optional, Sequence, Union

import torch.nn as nn
from torch import Tensor


class ImageNetClassifier(nn.Module):
    """``backbone -> last feature map -> global average pool -> FC``, or
    ``-> FC -> h-swish -> FC`` with ``hidden_channels`` (MobileNetV3's
    head: its "1x1 conv, NBN" after the pooling is a fully connected layer).

    Shapes: ``[B, 3, H, W] -> [B, num_classes]``.

    Args:
        backbone: a module returning a tensor ``[B, C, h, w]`` or a
            tuple/list of them (the last one is classified, as
            ``out_indices`` ending with the last stage gives).
        in_channels: ``C`` of that last feature map.
        num_classes: classifier width (1000 for ImageNet).
        hidden_channels: width of a hidden FC before the classifier
            (MobileNetV3: 1024 in its paper's Small, 1280 in its Large and
            in DY-MobileNetV3-Small's parameter count), or ``None``.
    """

    def __init__(self,
                 backbone: nn.Module,
                 in_channels: int,
                 num_classes: int = 1000,
                 hidden_channels: Optional[int] = None) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('num_classes', num_classes),
                            ('hidden_channels', hidden_channels)):
            if value is None and name == 'hidden_channels':
                continue
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f'ImageNetClassifier: {name} must be a '
                                 f'positive int, got {value!r}')
        self.backbone = backbone
        self.in_channels = in_channels
        if hidden_channels is None:
            self.head = nn.Identity()
        else:
            self.head = nn.Sequential(
                nn.Linear(in_channels, hidden_channels), nn.Hardswish())
        self.fc = nn.Linear(hidden_channels or in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features: Union[Tensor, Sequence[Tensor]] = self.backbone(x)
        if not isinstance(features, Tensor):
            features = features[-1]
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f'ImageNetClassifier: the backbone\'s last output has shape '
                f'{tuple(features.shape)}, expected [B, '
                f'{self.in_channels}, h, w] (in_channels)')
        return self.fc(self.head(features.mean(dim=(2, 3))))
