"""``init_cfg=dict(type='Pretrained', ...)`` on our backbones: our own
checkpoints load strictly, static ones through the static -> dynamic
initialiser, anything else is refused with the keys named; nothing is
skipped silently (mmengine's non-strict loading would)."""
import pytest
import torch
import torch.nn as nn
import torchvision
from mmengine.model import BaseModule
from mmengine.registry import MODELS

import dynconv_mm  # noqa: F401  (registers the types)
from dynconv_mm.models.pretrained import load_pretrained_state_dict

ODCONV4 = dict(type='ODConv', num_kernels=4)
ODCONV1 = dict(type='ODConv', num_kernels=1)


def tiny_resnet(conv_cfg=ODCONV4, **options):
    cfg = dict(type='DynamicResNet',
               depth=18,
               base_channels=8,
               out_indices=(0, 1, 2, 3),
               dynamic_conv_cfg=conv_cfg)
    cfg.update(options)
    return MODELS.build(cfg)


def save(tmp_path, name, obj):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def assert_state_equal(model, state_dict):
    own = model.state_dict()
    assert set(own) == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(own[key], value), key


def test_our_checkpoint_loads_strictly_and_completely(tmp_path):
    torch.manual_seed(0)
    source = tiny_resnet()
    for p in source.parameters():  # nothing left at an init value
        nn.init.normal_(p)
    source.layer1[0].conv1.temperature = 7.0
    path = save(tmp_path, 'ours.pth', {
        'state_dict': source.state_dict(),
        'meta': {}
    })
    model = tiny_resnet(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_state_equal(model, source.state_dict())
    assert model.layer1[0].conv1.temperature == 7.0


def test_ddp_prefix_and_detector_prefix(tmp_path):
    source = tiny_resnet()
    ddp = {f'module.{k}': v for k, v in source.state_dict().items()}
    model = tiny_resnet(
        init_cfg=dict(type='Pretrained', checkpoint=save(tmp_path, 'a', ddp)))
    model.init_weights()
    assert_state_equal(model, source.state_dict())
    detector = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    detector['neck.lateral.weight'] = torch.zeros(3)
    model = tiny_resnet(
        init_cfg=dict(type='Pretrained',
                      prefix='backbone.',
                      checkpoint=save(tmp_path, 'b', detector)))
    model.init_weights()
    assert_state_equal(model, source.state_dict())


@pytest.mark.parametrize('other, match', [
    (dict(conv_cfg=dict(type='ODConv', num_kernels=2)),
     r'layer1\.0\.conv1\.weight: checkpoint \[4, 8, 8, 3, 3\], '
     r'model \[2, 8, 8, 3, 3\]'),
    (dict(conv_cfg=dict(ODCONV4, attention_norm_cfg=dict(type='BN'))),
     r'(?s)not in the checkpoint:.*layer1\.0\.conv1\.attention\.trunk\.norm'
     r'.*name nothing in the model:.*trunk\.fc\.bias'),
    (dict(conv_cfg=dict(type='DynamicConv', num_kernels=4)),
     r'conv1\.attention\.heads\.weight: checkpoint \[29, 16\], '
     r'model \[4, 4\]'),
    (dict(base_channels=16), r'conv1\.weight: checkpoint \[8, 3, 7, 7\]'),
])
def test_mismatched_checkpoint_is_refused_naming_keys(tmp_path, other, match):
    source = tiny_resnet()
    path = save(tmp_path, 'ours.pth', source.state_dict())
    options = dict(other)
    conv_cfg = options.pop('conv_cfg', ODCONV4)
    model = tiny_resnet(conv_cfg,
                        init_cfg=dict(type='Pretrained', checkpoint=path),
                        **options)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.init_weights()
    assert_state_equal(model, before)  # nothing half-loaded


def test_unrelated_checkpoint_is_refused(tmp_path):
    path = save(tmp_path, 'x.pth', {'encoder.weight': torch.zeros(3)})
    model = tiny_resnet(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='none of its keys names'):
        model.init_weights()
    with pytest.raises(ValueError, match='not a checkpoint'):
        load_pretrained_state_dict(model, {})
    path = save(tmp_path, 'y.pth', {'state_dict': {'x': 1}})
    model = tiny_resnet(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='not a checkpoint'):
        model.init_weights()


def test_extra_keys_of_a_static_checkpoint_are_refused(tmp_path):
    static = tiny_resnet(None)
    state_dict = dict(static.state_dict())
    state_dict['layer1.0.conv3.weight'] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ValueError, match=r'name nothing.*\n.*conv3'):
        load_pretrained_state_dict(tiny_resnet(), state_dict)


def test_bad_pretrained_options_are_refused(tmp_path):
    model = tiny_resnet(
        init_cfg=dict(type='Pretrained', checkpoint='x', strict=True))
    with pytest.raises(ValueError, match='unknown: strict'):
        model.init_weights()


def torchvision_resnet18():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    for m in tv.modules():  # statistics a skipped BN would not have
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return tv


def test_static_torchvision_file_with_frozen_stem(tmp_path):
    """The README trap: a static ImageNet file for a dynamic backbone with
    frozen_stages=1. Every tensor comes from the file (none skipped), the
    frozen stem is the pretrained one, the network is the static one."""
    tv = torchvision_resnet18()
    path = save(tmp_path, 'resnet18.pth', tv.state_dict())
    model = MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             frozen_stages=1,
             out_indices=(3, ),
             dynamic_conv_cfg=ODCONV1,
             init_cfg=dict(type='Pretrained', checkpoint=path)))
    model.init_weights()
    model.train()
    assert not model.conv1.weight.requires_grad
    assert torch.equal(model.conv1.weight, tv.conv1.weight)
    assert torch.equal(model.layer1[1].bn2.running_var,
                       tv.layer1[1].bn2.running_var)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    tv.eval()
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        y = tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))
        torch.testing.assert_close(model(x)[0], y, rtol=1e-4, atol=1e-4)


def test_torchvision_url_resolves_through_mmengine(monkeypatch):
    """``torchvision://resnet18`` goes through mmengine's CheckpointLoader
    to torchvision's URL (the download is replaced: no internet here)."""
    import mmengine.runner.checkpoint as mmengine_checkpoint
    tv = torchvision_resnet18()
    urls = []

    def fake_load_url(url, *args, **kwargs):
        urls.append(url)
        return tv.state_dict()

    monkeypatch.setattr(mmengine_checkpoint, 'load_url', fake_load_url)
    model = MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             dynamic_conv_cfg=ODCONV1,
             init_cfg=dict(type='Pretrained',
                           checkpoint='torchvision://resnet18')))
    model.init_weights()
    assert len(urls) == 1 and 'download.pytorch.org' in urls[0] \
        and 'resnet18' in urls[0]
    assert torch.equal(model.conv1.weight, tv.conv1.weight)


def test_inside_a_parent_module_and_with_other_init_cfgs(tmp_path):
    """Called from a detector's init_weights (mmengine's chain), with a
    Kaiming entry that must not overwrite the loaded weights."""
    tv = torchvision_resnet18()
    path = save(tmp_path, 'resnet18.pth', tv.state_dict())

    class Detector(BaseModule):

        def __init__(self):
            super().__init__()
            self.backbone = MODELS.build(
                dict(type='DynamicResNet',
                     depth=18,
                     dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=2),
                     init_cfg=[
                         dict(type='Kaiming', layer='Conv2d'),
                         dict(type='Pretrained', checkpoint=path)
                     ]))
            self.head = nn.Conv2d(512, 2, 1)

    detector = Detector()
    detector.init_weights()
    assert torch.equal(detector.backbone.conv1.weight, tv.conv1.weight)
    assert torch.equal(detector.backbone.layer2[0].downsample[0].weight,
                       tv.layer2[0].downsample[0].weight)


def test_mmpretrain_mobilenet_v2_layout():
    """MMPretrain's MobileNetV2 (``backbone.layerX.Y.conv.N``) loads into
    our DynamicMobileNetV2, static convs by name, dynamic ones from the
    static kernels."""
    torch.manual_seed(0)
    static = MODELS.build(dict(type='DynamicMobileNetV2', widen_factor=0.25))
    mmpretrain = {}
    for key, value in static.state_dict().items():
        # MMPretrain's block: conv = Sequential([expand if ratio != 1,]
        # depthwise, linear), each a ConvModule
        parts = key.split('.')
        if parts[0].startswith('layer'):
            block = static.get_submodule('.'.join(parts[:2]))
            order = ['depthwise_conv', 'linear_conv']
            if block.with_expand_conv:
                order.insert(0, 'expand_conv')
            parts[2:3] = ['conv', str(order.index(parts[2]))]
        mmpretrain['backbone.' + '.'.join(parts)] = value
    mmpretrain['head.fc.weight'] = torch.zeros(10, 1280)
    model = MODELS.build(
        dict(type='DynamicMobileNetV2',
             widen_factor=0.25,
             dynamic_conv_cfg=ODCONV4))
    report = load_pretrained_state_dict(model, mmpretrain)
    assert report.layout == 'mmpretrain'
    assert report.ignored == ['head.fc.weight']
    assert torch.equal(model.layer1[0].linear_conv.bn.running_var,
                       static.layer1[0].linear_conv.bn.running_var)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), static.eval()(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_checkpoint_with_static_stages_loads_conv_by_conv():
    """A backbone trained with its first stage static loads into one with
    every stage dynamic: that stage from the static kernels, the others as
    they are; the function is the trained one."""
    torch.manual_seed(0)
    source = tiny_resnet(dynamic_stages=(False, True, True, True)).double()
    for p in source.parameters():
        nn.init.normal_(p, std=0.3)
    model = tiny_resnet().double()
    report = load_pretrained_state_dict(model, source.state_dict())
    assert sorted(report.from_static) == [
        'layer1.0.conv1', 'layer1.0.conv2', 'layer1.1.conv1', 'layer1.1.conv2'
    ]
    assert torch.equal(model.layer2[0].conv1.weight,
                       source.layer2[0].conv1.weight)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), source.eval()(x)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
