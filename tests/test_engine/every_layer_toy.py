"""A tiny regression model with every dynamic layer type, and its data, for
end-to-end training tests through the real mmengine Runner (resume and
distributed equality). Registered under test-only names."""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset

import dynconv_mm  # noqa: F401  (registers the conv types)

DTYPES = {'float32': torch.float32, 'float64': torch.float64}


@DATASETS.register_module(force=True)
class EveryLayerToyData(Dataset):
    """``size`` fixed random images ``[3, 8, 8]`` with 4 regression targets
    (sample ``i`` is the same in every process)."""

    def __init__(self, size: int = 12, dtype: str = 'float64') -> None:
        self.size = size
        self.dtype = DTYPES[dtype]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(1000 + index)
        return dict(
            inputs=torch.randn(3, 8, 8, generator=g, dtype=self.dtype),
            data_samples=torch.randn(4, generator=g, dtype=self.dtype))


@MODELS.register_module(force=True)
class EveryLayerToy(BaseModel):
    """DynamicConv (K=4) -> ODConv K=1 (stride 2) -> ODConv K=4 (groups 2)
    -> DyNetConv (g=3, 1x1), ReLU between, global average pooled output
    ``[B, 4]``; loss: mean squared error against the targets.

    Args:
        attention_norm_cfg: every layer's ``attention_norm_cfg``.
        dtype: parameter dtype, ``'float32'`` or ``'float64'``.
    """

    def __init__(self,
                 attention_norm_cfg: Optional[dict] = None,
                 dtype: str = 'float64') -> None:
        super().__init__()
        norm = dict(attention_norm_cfg=attention_norm_cfg)
        self.convs = nn.ModuleList([
            build_conv_layer(dict(type='DynamicConv', num_kernels=4, **norm),
                             3, 8, 3, padding=1),
            build_conv_layer(dict(type='ODConv', num_kernels=1, **norm), 8,
                             8, 3, stride=2, padding=1),
            build_conv_layer(dict(type='ODConv', num_kernels=4, **norm), 8,
                             8, 3, padding=1, groups=2),
            build_conv_layer(dict(type='DyNetConv', num_kernels=3, **norm),
                             8, 4, 1),
        ])
        self.to(DTYPES[dtype])

    def forward(self,
                inputs: List[torch.Tensor],
                data_samples: Optional[List[torch.Tensor]] = None,
                mode: str = 'tensor'):
        x = torch.stack(inputs)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        prediction = x.mean(dim=(2, 3))
        if mode == 'loss':
            target = torch.stack(data_samples)
            return dict(loss=(prediction - target).pow(2).mean())
        return prediction
