"""The converter of the ODConv authors' checkpoints, checked on networks
written in their layout with an independent re-implementation of their
layer: after conversion our backbone computes what theirs computes (eval
mode), into our default attention (BN folded) and into the BN one."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from mmengine.registry import MODELS

import dynconv_mm  # noqa: F401  (registers the types)
from dynconv_mm.models.pretrained.odconv_authors import \
    convert_odconv_authors_state_dict

TOL = dict(rtol=1e-10, atol=1e-10)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class TheirAttention(nn.Module):
    """Their attention as their paper and code describe it: avgpool -> 1x1
    conv (no bias) -> BN -> ReLU -> four 1x1 conv heads with bias, logits
    divided by the temperature; sigmoid (channel, filter, spatial) and
    softmax (kernel); a head is absent where it is skipped."""

    def __init__(self, cin, cout, k, groups, num_kernels):
        super().__init__()
        hidden = max(int(cin * 0.0625), 16)
        self.k, self.temperature = k, 1.0
        self.fc = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.channel_fc = nn.Conv2d(hidden, cin, 1)
        if not cin == groups == cout:
            self.filter_fc = nn.Conv2d(hidden, cout, 1)
        if k > 1:
            self.spatial_fc = nn.Conv2d(hidden, k * k, 1)
        if num_kernels > 1:
            self.kernel_fc = nn.Conv2d(hidden, num_kernels, 1)

    def forward(self, x):
        h = F.relu(self.bn(self.fc(x.mean((2, 3), keepdim=True))))
        t = self.temperature
        b = x.shape[0]
        channel = torch.sigmoid(self.channel_fc(h) / t).view(b, -1)
        filt = torch.sigmoid(self.filter_fc(h) / t).view(b, -1) \
            if hasattr(self, 'filter_fc') else None
        spatial = torch.sigmoid(self.spatial_fc(h) / t).view(
            b, self.k, self.k) if hasattr(self, 'spatial_fc') else None
        kernel = torch.softmax(self.kernel_fc(h).view(b, -1) / t, dim=1) \
            if hasattr(self, 'kernel_fc') else None
        return channel, filt, spatial, kernel


class TheirODConv2d(nn.Module):
    """Their ODConv: per sample, kernel = sum_k a_k * (a_s * W_k), conv of
    the channel-scaled input, output scaled by the filter attention (a
    plain loop over samples calling F.conv2d)."""

    def __init__(self,
                 cin,
                 cout,
                 k,
                 stride=1,
                 padding=0,
                 groups=1,
                 num_kernels=4):
        super().__init__()
        self.stride, self.padding, self.groups = stride, padding, groups
        self.weight = nn.Parameter(
            torch.randn(num_kernels, cout, cin // groups, k, k) *
            (2.0 / (cin // groups * k * k))**0.5)
        self.attention = TheirAttention(cin, cout, k, groups, num_kernels)

    def forward(self, x):
        channel, filt, spatial, kernel = self.attention(x)
        outs = []
        for b in range(x.shape[0]):
            w = self.weight
            if spatial is not None:
                w = w * spatial[b]
            if kernel is not None:
                w = (kernel[b].view(-1, 1, 1, 1, 1) * w).sum(0)
            else:
                w = w[0]
            y = F.conv2d(x[b:b + 1] * channel[b].view(1, -1, 1, 1), w, None,
                         self.stride, self.padding, 1, self.groups)
            if filt is not None:
                y = y * filt[b].view(1, -1, 1, 1)
            outs.append(y)
        return torch.cat(outs)


class TheirBasicBlock(nn.Module):

    def __init__(self, cin, planes, stride, num_kernels):
        super().__init__()
        self.conv1 = TheirODConv2d(cin,
                                   planes,
                                   3,
                                   stride,
                                   1,
                                   num_kernels=num_kernels)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = TheirODConv2d(planes,
                                   planes,
                                   3,
                                   1,
                                   1,
                                   num_kernels=num_kernels)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TheirResNet18(nn.Module):
    """Their OD-ResNet-18 layout (torchvision names), widths 8..64."""

    def __init__(self, num_kernels):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        cin = 8
        for i, planes in enumerate((8, 16, 32, 64)):
            stride = 1 if i == 0 else 2
            self.add_module(
                f'layer{i + 1}',
                nn.Sequential(
                    TheirBasicBlock(cin, planes, stride, num_kernels),
                    TheirBasicBlock(planes, planes, 1, num_kernels)))
            cin = planes
        self.fc = nn.Linear(64, 10)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        outs = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            outs.append(x)
        return outs


def their_mobilenet_v2(num_kernels):
    """Their OD-MobileNetV2 layout: torchvision's, every conv but the stem
    an ODConv of the same geometry."""
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25)
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Conv2d) and name != 'features.0.0':
            parent, _, leaf = name.rpartition('.')
            setattr(
                net.get_submodule(parent), leaf,
                TheirODConv2d(module.in_channels, module.out_channels,
                              module.kernel_size[0], module.stride[0],
                              module.padding[0], module.groups, num_kernels))
    return net


def randomise(net, seed=0):
    """Attention heads and BNs (their attention's included) far from any
    init value, so a dropped or misplaced tensor shows."""
    g = torch.Generator().manual_seed(seed)
    for name, module in net.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
        elif isinstance(module, nn.Conv2d) and '.attention.' in f'.{name}':
            module.weight.data.copy_(
                torch.randn(module.weight.shape, generator=g))
            if module.bias is not None:
                module.bias.data.copy_(
                    torch.randn(module.bias.shape, generator=g))
    return net.double().eval()


def their_checkpoint(net):
    """As their training script saves it: DDP names, under state_dict."""
    return {
        'epoch': 120,
        'state_dict': {
            f'module.{k}': v
            for k, v in net.state_dict().items()
        }
    }


def our_resnet(num_kernels, norm):
    """Built at temperature 30: the converted checkpoint sets their 1."""
    return MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             base_channels=8,
             out_indices=(0, 1, 2, 3),
             norm_eval=False,
             dynamic_conv_cfg=dict(type='ODConv',
                                   num_kernels=num_kernels,
                                   temperature=30.,
                                   attention_norm_cfg=norm))).double()


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize('num_kernels', [4, 1])
@pytest.mark.parametrize('norm', [None, dict(type='BN')])
def test_resnet_computes_what_theirs_computes(num_kernels, norm):
    torch.manual_seed(0)
    theirs = randomise(TheirResNet18(num_kernels))
    ours = our_resnet(num_kernels, norm)
    state_dict, report = convert_odconv_authors_state_dict(
        their_checkpoint(theirs)['state_dict'], ours)
    ours.load_state_dict(state_dict, strict=True)
    assert len(report.odconv_layers) == 16
    assert len(report.folded_bn if norm is None else report.copied_bn) == 16
    assert report.not_placed == ['fc.bias', 'fc.weight']
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_same(ours.eval()(x), theirs.features(x))
        if norm is not None:  # copied BN: batch statistics agree too
            assert_same(ours.train()(x), theirs.train().features(x))
    assert all(m.temperature == 1.0 for m in ours.modules()
               if hasattr(m, 'attention') and m.attention is not None)


def test_single_kernel_saved_without_its_kernel_axis():
    theirs = randomise(TheirResNet18(1))
    state_dict = {
        k: (v[0] if k.endswith('conv1.weight') and v.dim() == 5 else v)
        for k, v in theirs.state_dict().items()
    }
    assert state_dict['layer1.0.conv1.weight'].dim() == 4
    ours = our_resnet(1, None)
    converted, _ = convert_odconv_authors_state_dict(state_dict, ours)
    ours.load_state_dict(converted)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_same(ours.eval()(x), theirs.features(x))


def test_mobilenet_v2_computes_what_theirs_computes():
    torch.manual_seed(0)
    theirs = randomise(their_mobilenet_v2(4))
    ours = MODELS.build(
        dict(type='DynamicMobileNetV2',
             widen_factor=0.25,
             out_indices=(1, 2, 4, 7),
             dynamic_conv_cfg=dict(type='ODConv', num_kernels=4))).double()
    state_dict, report = convert_odconv_authors_state_dict(
        their_checkpoint(theirs)['state_dict'], ours)
    ours.load_state_dict(state_dict, strict=True)
    assert report.layout == 'torchvision'
    assert report.not_placed == ['classifier.1.bias', 'classifier.1.weight']
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        reference, y = [], x
        for index, block in enumerate(theirs.features):
            y = block(y)
            if index in (3, 6, 13, 18):
                reference.append(y)
        assert_same(ours.eval()(x), reference)


def test_keys_that_cannot_be_placed_are_reported_or_refused():
    theirs = randomise(TheirResNet18(4))
    state_dict = dict(theirs.state_dict())
    state_dict['layer1.0.conv1.attention.extra_fc.weight'] = torch.zeros(1)
    _, report = convert_odconv_authors_state_dict(state_dict,
                                                  our_resnet(4, None))
    assert report.not_placed == [
        'fc.bias', 'fc.weight', 'layer1.0.conv1.attention.extra_fc.weight'
    ]
    del state_dict['layer2.1.conv2.attention.bn.running_var']
    del state_dict['layer3.0.downsample.1.weight']
    with pytest.raises(ValueError,
                       match=r'(?s)layer2\.1\.conv2\.attention'
                       r'\.bn\.running_var.*layer3\.0\.downsample\.1\.weight'):
        convert_odconv_authors_state_dict(state_dict, our_resnet(4, None))
    with pytest.raises(ValueError,
                       match=r'conv1\.weight: shape \[4, 8, 8, 3, 3\], '
                       r'our ODConv needs \[1, 8, 8, 3, 3\]'):  # K differs
        convert_odconv_authors_state_dict(theirs.state_dict(),
                                          our_resnet(1, None))
    dyconv = MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             base_channels=8,
             dynamic_conv_cfg=dict(type='DynamicConv')))
    with pytest.raises(ValueError, match='hold ODConv layers'):
        convert_odconv_authors_state_dict(theirs.state_dict(), dyconv)


def load_cli():
    path = osp.join(ROOT, 'tools', 'model_converters',
                    'odconv_authors_to_dynconv_mm.py')
    spec = importlib.util.spec_from_file_location('odconv_converter', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('norm', ['none', 'bn'])
def test_cli_writes_a_checkpoint_our_configs_load(tmp_path, capsys, norm):
    theirs = randomise(TheirResNet18(4)).float()
    src = str(tmp_path / 'od_resnet18_4x.pth.tar')
    torch.save(their_checkpoint(theirs), src)
    backbone = dict(type='DynamicResNet',
                    depth=18,
                    base_channels=8,
                    out_indices=(0, 1, 2, 3),
                    dynamic_conv_cfg=dict(type='ODConv', num_kernels=4))
    config = tmp_path / 'config.py'
    config.write_text(f'model = dict(backbone={backbone!r})\n')
    dst = str(tmp_path / 'converted.pth')
    assert load_cli().main(
        [src, dst, '--config',
         str(config), '--attention-norm', norm]) == 0
    printed = capsys.readouterr().out
    assert '16 ODConv layers converted' in printed
    assert 'fc.bias, fc.weight' in printed
    ours = MODELS.build(
        dict(backbone,
             dynamic_conv_cfg=dict(
                 backbone['dynamic_conv_cfg'],
                 attention_norm_cfg=None if norm == 'none' else dict(
                     type='BN')),
             init_cfg=dict(type='Pretrained', checkpoint=dst)))
    ours.init_weights()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), theirs.features(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # a different attention norm than converted into is refused
    other = MODELS.build(
        dict(backbone,
             dynamic_conv_cfg=dict(backbone['dynamic_conv_cfg'],
                                   attention_norm_cfg=dict(
                                       type='BN') if norm == 'none' else None),
             init_cfg=dict(type='Pretrained', checkpoint=dst)))
    with pytest.raises(ValueError, match='trunk'):
        other.init_weights()


def test_cli_reports_an_error_without_writing(tmp_path, capsys):
    src = str(tmp_path / 'x.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(3)}}, src)
    dst = tmp_path / 'out.pth'
    assert load_cli().main([src, str(dst), '--backbone',
                            'od_resnet18_1x']) == 1
    assert 'error:' in capsys.readouterr().err
    assert not dst.exists()
