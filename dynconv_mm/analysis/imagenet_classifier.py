"""A backbone with the ImageNet head the papers' tables include: global
average pooling and a fully connected classifier on the last feature map.

The dynamic-convolution papers report ImageNet parameters and MAdds of the
whole classifier; detection backbones stop before the head. Wrapping a
backbone in :class:`ImageNetClassifier` makes its counts comparable (the
ODConv detection table also counts the unused 1000-class FC:
``2048*1000+1000`` parameters for ResNet-50).
"""
from typing import Sequence, Union

import torch.nn as nn
from torch import Tensor


class ImageNetClassifier(nn.Module):
    """``backbone -> last feature map -> global average pool -> FC``.

    Shapes: ``[B, 3, H, W] -> [B, num_classes]``.

    Args:
        backbone: a module returning a tensor ``[B, C, h, w]`` or a
            tuple/list of them (the last one is classified, as
            ``out_indices`` ending with the last stage gives).
        in_channels: ``C`` of that last feature map.
        num_classes: classifier width (1000 for ImageNet).
    """

    def __init__(self,
                 backbone: nn.Module,
                 in_channels: int,
                 num_classes: int = 1000) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('num_classes', num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f'ImageNetClassifier: {name} must be a '
                                 f'positive int, got {value!r}')
        self.backbone = backbone
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features: Union[Tensor, Sequence[Tensor]] = self.backbone(x)
        if not isinstance(features, Tensor):
            features = features[-1]
        if features.dim() != 4 or features.shape[1] != self.fc.in_features:
            raise ValueError(
                f'ImageNetClassifier: the backbone\'s last output has shape '
                f'{tuple(features.shape)}, expected [B, '
                f'{self.fc.in_features}, h, w] (in_channels)')
        return self.fc(features.mean(dim=(2, 3)))
