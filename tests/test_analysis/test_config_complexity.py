"""The counter on whole models built from configs, and ``get_flops.py``."""
import os.path as osp
import runpy
import sys

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmengine.analysis import FlopAnalyzer

import dynconv_mm  # noqa: F401
from dynconv_mm.analysis import ImageNetClassifier, count_complexity
from dynconv_mm.analysis.config_complexity import count_config_complexity

FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
TOOL = osp.join(
    osp.dirname(__file__), '..', '..', 'tools', 'analysis', 'get_flops.py')


def test_static_model_agrees_with_mmengine_counter():
    # An independent implementation (mmengine's jit-traced FlopAnalyzer)
    # counts convs and FCs the same way. It also counts BN (0 in our
    # convention) and not the global pooling (``mean``: one add per input).
    from mmdet.models.backbones import ResNet
    model = ImageNetClassifier(ResNet(depth=18), 512).eval()
    x = torch.rand(1, 3, 64, 96)
    analyzer = FlopAnalyzer(model, x)
    analyzer.unsupported_ops_warnings(False)
    theirs = analyzer.by_operator()
    pooling = 512 * 2 * 3
    assert count_complexity(model, x).macs == \
        theirs['conv'] + theirs['linear'] + pooling


def test_mmengine_counter_misses_what_ours_counts():
    # mmengine counts the conv and the kernel mixing of a dynamic conv
    # (matmul) but not the attention's pooling, which it drops without an
    # error; ours has it.
    conv = build_conv_layer(dict(type='DynamicConv', num_kernels=4), 16, 16,
                            3, padding=1, bias=False).eval()
    x = torch.rand(1, 16, 20, 20)
    analyzer = FlopAnalyzer(conv, x)
    analyzer.unsupported_ops_warnings(False)
    ours = count_complexity(conv, x).macs
    assert ours - analyzer.total() == 16 * 20 * 20  # the global pooling


def test_faster_rcnn_config():
    result = count_config_complexity(FASTER_RCNN, (128, 160))
    report = result.report
    # MMDetection's Faster R-CNN R50-FPN: 41.75M parameters (issue 5).
    assert report.params == 41_753_056
    assert result.model_type == 'FasterRCNN'
    assert result.input_shape == (128, 160)  # already a multiple of 32
    # The RoI head runs on test_cfg.rpn.max_per_img proposals, whatever
    # the untrained RPN kept.
    assert result.notes['rois'] == 1000
    assert len(result.notes['rpn_proposals']) == 1
    # RoI head: per RoI, FC 256*7*7 -> 1024 -> 1024, then cls 81, box 320.
    per_roi = 256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 81 + 1024 * 320
    assert report.macs_of('roi_head') == 1000 * per_roi
    assert report.macs == sum(
        report.macs_of(part)
        for part in ('backbone', 'neck', 'rpn_head', 'roi_head'))
    assert report.zero_cost['mmcv._ext.nms'] >= 1
    assert not report.uncounted


def test_mmpose_config_at_its_pipeline_size():
    result = count_config_complexity(
        'mmpose::body_2d_keypoint/topdown_heatmap/coco/'
        'td-hm_res50_8xb64-210e_coco-256x192.py')
    assert result.input_shape == (256, 192)  # TopdownAffine input_size
    assert result.model_type == 'TopdownPoseEstimator'
    # SimpleBaseline: ResNet-50 (no FC), then three 4x4 stride-2 deconvs to
    # 256 channels (each input element meets 256 * 4 * 4 weights) on 8x6,
    # 16x12 and 32x24 maps, and a 1x1 conv to 17 heatmaps at 64x48.
    assert result.report.params == 33_999_697
    deconvs = (2048 * 8 * 6 + 256 * 16 * 12 + 256 * 32 * 24) * 256 * 4 * 4
    assert result.report.macs_of('head') == deconvs + 17 * 64 * 48 * 256


def test_proposals_are_cut_or_padded_to_the_budget():
    from mmengine.structures import InstanceData
    from dynconv_mm.analysis.config_complexity import _exactly
    proposals = InstanceData(bboxes=torch.tensor([[1., 2., 3., 4.]] * 3),
                             scores=torch.ones(3),
                             labels=torch.zeros(3, dtype=torch.long))
    assert len(_exactly(proposals, 2, 10, 20)) == 2
    padded = _exactly(proposals, 5, 10, 20)
    assert len(padded) == 5
    assert padded.bboxes[3:].tolist() == [[0, 0, 20, 10]] * 2
    assert padded.scores[3:].tolist() == [0, 0]
    assert padded.labels.dtype == torch.long


def test_tool_imagenet_classifier(capsys, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [
        TOOL, FASTER_RCNN, '--imagenet-classifier', '--depth', '1'
    ])
    runpy.run_path(TOOL, run_name='__main__')
    out = capsys.readouterr().out
    # torchvision's ResNet-50: 25,557,032 parameters; mmdet's has the same
    # convs and BNs, and the 2048 -> 1000 classifier is added.
    assert 'Params: 25.557M (25,557,032)' in out
    assert 'Input shape: 224x224' in out
    assert 'ResNet + 1000-class classifier' in out


def test_tool_refuses_bad_arguments(monkeypatch):
    monkeypatch.setattr(sys, 'argv', [TOOL, FASTER_RCNN, '--shape', '0', '8'])
    with pytest.raises(SystemExit):
        runpy.run_path(TOOL, run_name='__main__')


def test_classifier_refuses_wrong_channels():
    with pytest.raises(ValueError, match='in_channels'):
        ImageNetClassifier(nn.Conv2d(3, 8, 1), 0)
    with pytest.raises(ValueError, match=r'expected \[B, 4, h, w\]'):
        ImageNetClassifier(nn.Conv2d(3, 8, 1), 4)(torch.rand(1, 3, 4, 4))
