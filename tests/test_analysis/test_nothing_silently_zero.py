"""mmengine's counter takes what it cannot count as 0 with a log line; ours
raises, or lists it loudly with ``strict=False``."""
import pytest
import torch
import torch.nn as nn

import dynconv_mm  # noqa: F401
from dynconv_mm.analysis import UncountedOperationError, count_complexity
from dynconv_mm.layers import ODConv2d


class Spectral(nn.Module):
    """Arithmetic the counter has no formula for (an FFT)."""

    def forward(self, x):
        return torch.fft.rfft2(x).abs()


class CompiledOp(nn.Module):
    """Calls a compiled mmcv op that runs below the dispatcher."""

    def forward(self, x):
        from mmcv.utils import ext_loader
        ext = ext_loader.load_ext('_ext', ['carafe_naive_forward'])
        try:
            ext.carafe_naive_forward()  # the call itself is what counts
        except TypeError:
            pass
        return x


@pytest.mark.parametrize('module, name', [(Spectral(), 'aten._fft_r2c'),
                                          (CompiledOp(),
                                           'mmcv._ext.carafe_naive_forward')])
def test_unknown_operation_raises_by_default(module, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), module)
    with pytest.raises(UncountedOperationError, match=name.replace('.',
                                                                   r'\.')):
        count_complexity(model, (3, 8, 8))


@pytest.mark.parametrize('module, name', [(Spectral(), 'aten._fft_r2c'),
                                          (CompiledOp(),
                                           'mmcv._ext.carafe_naive_forward')])
def test_unknown_operation_is_listed_when_not_strict(module, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), module)
    report = count_complexity(model, (3, 8, 8), strict=False)
    assert report.macs == 4 * 8 * 8 * 3  # what could be counted
    assert report.uncounted[name] == 1
    assert 'NOT COUNTED' in report.table() and name in report.table()


def test_free_compiled_ops_are_listed_as_zero():
    from mmcv.ops import RoIAlign, nms

    class Head(nn.Module):

        def __init__(self):
            super().__init__()
            self.roi_align = RoIAlign(2, spatial_scale=1.0, sampling_ratio=1)

        def forward(self, x):
            boxes = torch.tensor([[0., 0., 4., 4.], [1., 1., 5., 5.]])
            nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
            rois = torch.cat([torch.zeros(2, 1), boxes], dim=1)
            return self.roi_align(x, rois)

    report = count_complexity(Head(), (3, 8, 8))
    assert report.macs == 0
    assert report.zero_cost['mmcv._ext.nms'] == 1
    assert report.zero_cost['mmcv._ext.roi_align_forward'] == 1


def test_dynamic_layers_are_never_zero():
    # mmengine's jit-based counter sees only part of a dynamic conv; here
    # every part is there: conv, aggregation, attention FCs and pooling.
    layer = ODConv2d(8, 8, 3, padding=1, bias=False, num_kernels=4)
    report = count_complexity(layer, (8, 6, 6))
    assert report.dynamic_macs['conv'] == 8 * 6 * 6 * 8 * 9
    assert report.dynamic_macs['aggregation'] > 0
    assert report.macs_of('attention') > 0
    assert report.macs == sum(report.dynamic_macs.values()) + \
        report.macs_of('attention')
