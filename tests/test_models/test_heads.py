"""Keypoint heads with a conv_cfg: the sub-pixel transposed conv against
``F.conv_transpose2d`` (static) and a per-sample oracle (dynamic), the
SimpleBaseline head against mmpose's own ``HeatmapHead``, and the light
inverted-residual head's structure and placement."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dynconv_mm  # noqa: F401  (registers layers and heads)
from dynconv_mm.layers import DynamicConv2d, DyNetConv2d, ODConv2d
from dynconv_mm.models.heads import SubPixelConvTranspose2d
from oracle import per_sample_kernel, reference_attentions

mmpose = pytest.importorskip('mmpose')
from mmpose.models.heads import HeatmapHead  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmpose.registry import MODELS  # noqa: E402


@pytest.fixture(autouse=True)
def mmpose_scope():
    """mmpose's heads build their losses through the default scope, which
    an earlier test (a Runner) may have left at mmdet."""
    with DefaultScope.overwrite_default_scope('mmpose'):
        yield

REPO = Path(__file__).resolve().parents[2]
DYNAMIC = {'DynamicConv': DynamicConv2d, 'ODConv': ODConv2d,
           'DyNetConv': DyNetConv2d}
# ConvTranspose2d(4, stride 2, padding 1): output row 2m + a reads padded
# input rows a + (0, 1) with kernel taps TAPS[a] (written out by hand from
# o = 2i - 1 + k).
TAPS = {0: (3, 1), 1: (2, 0)}


# ------------------------------------------------- SubPixelConvTranspose2d
@pytest.mark.parametrize('kernel_size', [2, 3, 4, 5, 6])
@pytest.mark.parametrize('bias', [False, True])
def test_sub_pixel_equals_conv_transpose(kernel_size, bias):
    torch.manual_seed(kernel_size)
    layer = SubPixelConvTranspose2d(3, 5, kernel_size, bias=bias).double()
    deconv = nn.ConvTranspose2d(
        3, 5, kernel_size, stride=2, padding=layer.padding,
        output_padding=layer.output_padding, bias=bias).double()
    # mmpose's HeatmapHead table for k = 4, 3, 2.
    want = {4: (1, 0), 3: (1, 1), 2: (0, 0)}.get(kernel_size)
    if want:
        assert (layer.padding, layer.output_padding) == want
    layer.load_conv_transpose_weight(deconv.weight)
    if bias:
        with torch.no_grad():
            layer.bias.copy_(deconv.bias)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref = deconv(x)
    assert out.shape == (2, 5, 10, 8) == ref.shape
    torch.testing.assert_close(out, ref)
    # Same gradient w.r.t. the input, and the parameters partition the
    # transposed kernel: same count.
    grad = torch.randn_like(ref)
    gx, = torch.autograd.grad(out, x, grad)
    gx_ref, = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(gx, gx_ref)
    assert sum(p.numel() for p in layer.parameters()) == sum(
        p.numel() for p in deconv.parameters())


def test_sub_pixel_loads_a_conv_transpose_checkpoint():
    deconv = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, bias=False)
    layer = SubPixelConvTranspose2d(4, 6, 4)
    layer.load_state_dict(deconv.state_dict())
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(layer(x), deconv(x))


@pytest.mark.parametrize('conv_type', list(DYNAMIC))
def test_dynamic_sub_pixel_equals_per_sample_transposed_conv(conv_type):
    """Each phase mixes its own kernels from its own attention; per sample,
    the four mixed phase kernels put back at their taps form one k x k
    kernel, and F.conv_transpose2d with it is the layer's output."""
    torch.manual_seed(0)
    layer = SubPixelConvTranspose2d(
        6, 4, 4, conv_cfg=dict(type=conv_type, num_kernels=3)).double()
    assert all(type(p) is DYNAMIC[conv_type] for p in layer.phases)
    for p in layer.phases:  # non-uniform attentions
        for param in p.attention.parameters():
            nn.init.normal_(param, std=0.5)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    padded = F.pad(x, (1, 1, 1, 1))
    H, W = x.shape[-2:]
    refs = []
    for b in range(x.shape[0]):
        full = torch.zeros(6, 4, 4, 4, dtype=torch.float64)
        for index, conv in enumerate(layer.phases):
            a, c = divmod(index, 2)
            window = padded[b:b + 1, :, a:a + H + 1, c:c + W + 1]
            att = reference_attentions(conv, window)
            kernel = per_sample_kernel(conv.weight, 1, 0, **att)  # [O,I,2,2]
            for i, ky in enumerate(TAPS[a]):
                for j, kx in enumerate(TAPS[c]):
                    full[:, :, ky, kx] = kernel[:, :, i, j].t()
        refs.append(F.conv_transpose2d(x[b:b + 1], full, stride=2,
                                       padding=1))
    torch.testing.assert_close(layer(x), torch.cat(refs))


def test_sub_pixel_refuses_bad_options_and_inputs():
    with pytest.raises(ValueError, match='kernel_size=1'):
        SubPixelConvTranspose2d(2, 2, 1)
    with pytest.raises(ValueError, match='in_channels=0'):
        SubPixelConvTranspose2d(0, 2, 4)
    with pytest.raises(ValueError, match='conv_cfg'):
        SubPixelConvTranspose2d(2, 2, 4, conv_cfg=dict(num_kernels=4))
    layer = SubPixelConvTranspose2d(2, 2, 4)
    with pytest.raises(ValueError, match=r'\[B, 2, H, W\]'):
        layer(torch.randn(1, 3, 4, 4))
    dynamic = SubPixelConvTranspose2d(2, 2, 4,
                                      conv_cfg=dict(type='DynamicConv'))
    with pytest.raises(ValueError, match='static phases only'):
        dynamic.load_conv_transpose_weight(torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r'\[2, 2, 4, 4\]'):
        layer.load_conv_transpose_weight(torch.randn(2, 2, 3, 3))


# ------------------------------------------------------- DeconvHeatmapHead
HEAD = dict(in_channels=16, out_channels=17, deconv_out_channels=(8, 8),
            deconv_kernel_sizes=(4, 3), conv_out_channels=(8, ),
            conv_kernel_sizes=(3, ))


def test_static_deconv_head_is_mmposes_heatmap_head():
    """conv_cfg=None: mmpose's HeatmapHead checkpoint loads strictly and
    the outputs agree, in training and in eval mode."""
    torch.manual_seed(0)
    theirs = HeatmapHead(**HEAD)
    theirs.init_weights()
    ours = MODELS.build(dict(type='DeconvHeatmapHead', **HEAD))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters())
    feats = (torch.randn(2, 16, 4, 3), )
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        torch.testing.assert_close(ours(feats), theirs(feats))
    assert ours(feats).shape == (2, 17, 16, 12)


def test_static_deconv_head_uses_mmposes_init():
    torch.manual_seed(0)
    head = MODELS.build(dict(type='DeconvHeatmapHead', **HEAD))
    head.init_weights()
    phase = head.deconv_layers[0].phases[0].weight
    # HeatmapHead's Normal(std=0.001) on its convs and deconvs.
    assert 0.0005 < phase.std().item() < 0.002


@pytest.mark.parametrize('conv_type', ['DynamicConv', 'ODConv'])
def test_dynamic_deconv_head_puts_conv_cfg_on_every_conv(conv_type):
    cfg = dict(type=conv_type, num_kernels=2)
    head = MODELS.build(
        dict(type='DeconvHeatmapHead', conv_cfg=cfg, **HEAD))
    dynamic = [m for m in head.modules() if isinstance(m, DYNAMIC[conv_type])]
    static = [m for m in head.modules() if type(m) is nn.Conv2d]
    # 2 deconvs x 4 phases + 1 conv; the final 1x1 stays static.
    assert len(dynamic) == 9
    assert static == [head.final_layer]
    head_final = MODELS.build(
        dict(type='DeconvHeatmapHead', conv_cfg=cfg,
             final_layer=dict(type=conv_type, kernel_size=1), **HEAD))
    assert isinstance(head_final.final_layer, DYNAMIC[conv_type])
    feats = (torch.randn(2, 16, 4, 3), )
    out = head(feats)
    assert out.shape == (2, 17, 16, 12)
    out.square().mean().backward()
    assert all(p.grad is not None for p in head.parameters()
               if p.requires_grad)


def test_deconv_head_refuses_a_conv_cfg_without_type():
    with pytest.raises(ValueError, match='DeconvHeatmapHead.*conv_cfg'):
        MODELS.build(
            dict(type='DeconvHeatmapHead', conv_cfg=dict(num_kernels=4),
                 **HEAD))


# --------------------------------------------- InvertedResidualHeatmapHead
def ir_head(**kwargs):
    cfg = dict(type='InvertedResidualHeatmapHead', in_channels=24,
               out_channels=17, stage_channels=(16, 8, 8))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_inverted_residual_head_structure():
    from mmpose.models.backbones.mobilenet_v2 import InvertedResidual
    head = ir_head(blocks_per_stage=2)
    layers = list(head.deconv_layers)
    ups = [m for m in layers if isinstance(m, nn.Upsample)]
    blocks = [m for m in layers if isinstance(m, InvertedResidual)]
    assert len(ups) == 3 and len(blocks) == 6
    # The first block of a stage changes the width, the second is residual
    # (the reduction conv already gives stage 1's width).
    assert [b.use_res_connect for b in blocks] == [True, True, False, True,
                                                   True, True]
    assert all(type(m) is nn.Conv2d for m in head.modules()
               if isinstance(m, nn.Conv2d) or hasattr(m, 'num_kernels'))
    x = torch.randn(2, 24, 4, 3)
    assert head((x, )).shape == (2, 17, 32, 24)
    # Expansion 6, as MobileNetV2.
    assert blocks[0].conv[0].conv.out_channels == 6 * 16


@pytest.mark.parametrize('conv_type, depthwise', [('DynamicConv', False),
                                                  ('ODConv', True),
                                                  ('DyNetConv', True)])
def test_inverted_residual_head_placement(conv_type, depthwise):
    """Every 1x1 conv but the final one is dynamic; the depthwise convs
    follow the paper's rule of the conv type (as the backbone), or the
    explicit option."""
    cfg = dict(type=conv_type, num_kernels=2)
    for option, want in ((None, depthwise), (True, True), (False, False)):
        head = ir_head(conv_cfg=cfg, dynamic_depthwise=option)
        convs = [m for m in head.modules()
                 if isinstance(m, (nn.Conv2d, DYNAMIC[conv_type]))]
        pointwise = [c for c in convs if c.groups == 1]
        depthwise_convs = [c for c in convs if c.groups > 1]
        assert len(depthwise_convs) == 3
        assert all(isinstance(c, DYNAMIC[conv_type])
                   for c in pointwise if c is not head.final_layer)
        assert type(head.final_layer) is nn.Conv2d
        assert all(isinstance(c, DYNAMIC[conv_type]) == want
                   for c in depthwise_convs), option
    out = head((torch.randn(2, 24, 4, 3), ))
    out.mean().backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize('kwargs, needle', [
    (dict(stage_channels=()), 'stage_channels'),
    (dict(stage_channels=(8, 0)), 'stage_channels'),
    (dict(blocks_per_stage=0), 'blocks_per_stage'),
    (dict(expand_ratio=1.5), 'expand_ratio'),
    (dict(upsample_mode='bicubic'), 'upsample_mode'),
    (dict(conv_cfg='DynamicConv'), 'conv_cfg'),
    (dict(dynamic_depthwise='yes'), 'dynamic_depthwise'),
    (dict(in_channels=[24, 32]), 'in_channels'),
])
def test_inverted_residual_head_refuses_bad_options(kwargs, needle):
    with pytest.raises(ValueError,
                       match=f'InvertedResidualHeatmapHead.*{needle}'):
        ir_head(**kwargs)


def test_heads_predict_with_flip_test_and_compute_loss():
    """mmpose's own loss, decoding and flip test run on both heads."""
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    codec = dict(type='MSRAHeatmap', input_size=(48, 64),
                 heatmap_size=(12, 16), sigma=2)
    flip_indices = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    samples = []
    for _ in range(2):
        s = PoseDataSample(metainfo=dict(
            flip_indices=flip_indices, input_size=(48, 64),
            input_center=(24., 32.), input_scale=(48., 64.)))
        s.gt_fields = PixelData(heatmaps=torch.rand(17, 16, 12))
        s.gt_instance_labels = InstanceData(
            keypoint_weights=torch.ones(1, 17))
        samples.append(s)
    for head in (MODELS.build(
            dict(type='DeconvHeatmapHead', in_channels=16, out_channels=17,
                 deconv_out_channels=(8, 8), deconv_kernel_sizes=(4, 4),
                 conv_cfg=dict(type='DynamicConv'), decoder=codec)),
                 ir_head(in_channels=16, stage_channels=(8, 8),
                         conv_cfg=dict(type='ODConv'), decoder=codec)):
        feats = (torch.randn(2, 16, 4, 3), )
        losses = head.loss(feats, samples)
        assert set(losses) == {'loss_kpt', 'acc_pose'}
        head.eval()
        preds = head.predict([feats, feats], samples,
                             test_cfg=dict(flip_test=True))
        assert preds[0].keypoints.shape == (1, 17, 2)


def test_heads_register_only_with_mmpose():
    """Without mmpose the package still imports; only the sub-pixel layer
    is there (it needs mmcv alone)."""
    code = (
        'import importlib.abc, sys\n'
        'class Block(importlib.abc.MetaPathFinder):\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name.split(".")[0] == "mmpose":\n'
        '            raise ImportError(name)\n'
        'sys.meta_path.insert(0, Block())\n'
        'import importlib.util\n'
        'importlib.util.find_spec = lambda name, *a: None if name == '
        '"mmpose" else orig(name, *a)\n')
    # find_spec is what the package asks; make it say "not installed".
    code = code.replace('importlib.util.find_spec = ',
                        'orig = importlib.util.find_spec\n'
                        'importlib.util.find_spec = ')
    code += ('import dynconv_mm.models.heads as h\n'
             'print(sorted(h.__all__))\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=str(REPO),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['SubPixelConvTranspose2d']"
