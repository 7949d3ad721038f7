"""Behaviour every dynamic backbone shares: forward at batch 1 and 2 in
train and eval, output channels and strides, frozen_stages, norm_eval
(attention BNs included), with_cp, init_cfg, and the registries."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import dynconv_mm  # noqa: F401  (registers the types)
from dynconv_mm.layers import DynamicAttention, DynamicConv2dBase

ODCONV = dict(type='ODConv', num_kernels=4)
ODCONV_BN = dict(type='ODConv', num_kernels=4,
                 attention_norm_cfg=dict(type='BN'))
DYCONV = dict(type='DynamicConv', num_kernels=4)
DYNET = dict(type='DyNetConv', num_kernels=3)

# name -> (config, input size, [(channels, stride) of each output])
CASES = {
    'resnet18_odconv': (dict(type='DynamicResNet', depth=18,
                             base_channels=8, dynamic_conv_cfg=ODCONV),
                        32, [(8, 4), (16, 8), (32, 16), (64, 32)]),
    'resnet50_dyconv': (dict(type='DynamicResNet', depth=50,
                             base_channels=4, dynamic_conv_cfg=DYCONV,
                             out_indices=(1, 3)),
                        32, [(32, 8), (128, 32)]),
    'resnet18_dynet_shared': (dict(type='DynamicResNet', depth=18,
                                   stem_channels=16, base_channels=8,
                                   dynamic_conv_cfg=DYNET,
                                   dynet_shared_coefficients=True),
                              32, [(8, 4), (16, 8), (32, 16), (64, 32)]),
    'resnet50_dynet_shared': (dict(type='DynamicResNet', depth=50,
                                   stem_channels=16, base_channels=4,
                                   dynamic_conv_cfg=DYNET,
                                   dynet_shared_coefficients=True,
                                   out_indices=(0, 3)),
                              32, [(16, 4), (128, 32)]),
    'mobilenetv2_odconv': (dict(type='DynamicMobileNetV2',
                                dynamic_conv_cfg=ODCONV),
                           64, [(24, 4), (32, 8), (96, 16), (1280, 32)]),
    'mobilenetv2_050_dyconv': (dict(type='DynamicMobileNetV2',
                                    widen_factor=0.5,
                                    dynamic_conv_cfg=DYCONV,
                                    out_indices=(0, 7)),
                               64, [(8, 2), (1280, 32)]),
    'mobilenetv3_small_dyconv': (dict(type='DynamicMobileNetV3',
                                      arch='small', dynamic_conv_cfg=DYCONV,
                                      out_indices=(0, 2, 7, 11)),
                                 64, [(16, 4), (24, 8), (48, 16),
                                      (576, 32)]),
    'mobilenetv3_large_odconv': (dict(type='DynamicMobileNetV3',
                                      arch='large',
                                      dynamic_conv_cfg=ODCONV),
                                 64, [(960, 32)]),
}


def build(cfg, **options):
    cfg = copy.deepcopy(cfg)
    cfg.update(options)
    return MODELS.build(cfg)


def check_outputs(outs, size, batch, expected):
    assert isinstance(outs, tuple) and len(outs) == len(expected)
    for out, (channels, stride) in zip(outs, expected):
        assert out.shape == (batch, channels, size // stride, size // stride)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_train_and_eval_batch_1_and_2(name):
    cfg, size, expected = CASES[name]
    torch.manual_seed(0)
    model = build(cfg)
    assert any(isinstance(m, DynamicConv2dBase) for m in model.modules())
    for mode in (True, False):
        model.train(mode)
        for batch in (1, 2):
            x = torch.randn(batch, 3, size, size)
            with torch.set_grad_enabled(mode):
                outs = model(x)
            check_outputs(outs, size, batch, expected)
            if mode:
                sum((o * o).sum() for o in outs).backward()
    # Every kernel bank learns; every attention parameter is in the graph
    # (a tiny attention MLP may have all its ReLUs off for a batch).
    dynamic = [m for m in model.modules()
               if isinstance(m, (DynamicConv2dBase, DynamicAttention))]
    assert dynamic
    assert all(p.grad is not None for m in dynamic for p in m.parameters())
    assert all(m.weight.grad.abs().sum() > 0 for m in dynamic
               if isinstance(m, DynamicConv2dBase))


def _stem_and_first_stage(model):
    """Modules that frozen_stages=1 must freeze."""
    stem = [model.conv1, model.norm1] if hasattr(model, 'norm1') \
        else [model.conv1]
    return stem + [model.layer1]


@pytest.mark.parametrize('name', sorted(CASES))
def test_frozen_stages(name):
    cfg, size, _ = CASES[name]
    model = build(cfg, frozen_stages=1, norm_eval=False)
    model.train()
    frozen = _stem_and_first_stage(model)
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    assert frozen_params
    for param in model.parameters():
        assert param.requires_grad == (id(param) not in frozen_params)
    mode_dependent = (_BatchNorm, DynamicConv2dBase, DynamicAttention)
    for module in frozen:
        assert not any(m.training for m in module.modules()
                       if isinstance(m, mode_dependent))
    assert model.layer2.training
    # A frozen stage's BN statistics and parameters do not move.
    before = copy.deepcopy(model.layer1.state_dict())
    outs = model(torch.randn(2, 3, size, size))
    sum((o * o).sum() for o in outs).backward()
    for key, value in model.layer1.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize('name', [
    'resnet18_odconv', 'resnet50_dyconv', 'mobilenetv2_050_dyconv',
    'mobilenetv3_small_dyconv'
])
def test_norm_eval_covers_attention_batchnorm(name):
    """norm_eval=True puts every BN in eval mode, the attentions' included,
    so ODConv with the authors' attention BN trains at batch 1."""
    cfg, size, expected = CASES[name]
    cfg = dict(cfg, dynamic_conv_cfg=ODCONV_BN)
    model = build(cfg, norm_eval=True)
    model.train()
    attention_bns = [
        m for a in model.modules() if isinstance(a, DynamicAttention)
        for m in a.modules() if isinstance(m, _BatchNorm)
    ]
    assert attention_bns
    assert all(not m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    assert model.training and model.layer2.training
    before = attention_bns[0].running_mean.clone()
    outs = model(torch.randn(1, 3, size, size))
    check_outputs(outs, size, 1, expected)
    sum((o * o).sum() for o in outs).backward()
    assert torch.equal(attention_bns[0].running_mean, before)

    model = build(cfg, norm_eval=False)
    model.train()
    assert all(m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    with pytest.raises(ValueError, match='batch of 1'):
        model(torch.randn(1, 3, size, size))


@pytest.mark.parametrize('name', sorted(CASES))
def test_with_cp_computes_the_same(name, monkeypatch):
    cfg, size, _ = CASES[name]
    torch.manual_seed(0)
    plain = build(cfg, with_cp=False)
    checkpointed = build(cfg, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint',
                        counting_checkpoint)
    results = []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(1)
        x = torch.randn(2, 3, size, size, requires_grad=True)
        calls.clear()
        outs = model(x)
        assert bool(calls) == model.with_cp
        sum((o * o).sum() for o in outs).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((outs, x.grad, grads))
    (outs_a, gx_a, grads_a), (outs_b, gx_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b)
    # Gradients differ by float rounding only (the recomputation sums in
    # another order, and BN parameter gradients are sums of terms that
    # cancel): compare relative to the largest gradient.
    scale = max(float(g.abs().max()) for g in [gx_a] + grads_a)
    for a, b in zip([gx_a] + grads_a, [gx_b] + grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize('name', sorted(CASES))
def test_init_weights_and_pretrained_roundtrip(name, tmp_path):
    cfg, size, _ = CASES[name]
    torch.manual_seed(0)
    model = build(cfg)
    model.init_weights()
    banks = [m.weight for m in model.modules()
             if isinstance(m, DynamicConv2dBase)]
    assert banks and all(w.dim() == 5 and w.std() > 0 for w in banks)
    path = tmp_path / 'backbone.pth'
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    loaded = build(cfg, init_cfg=dict(type='Pretrained',
                                      checkpoint=str(path)))
    loaded.init_weights()
    mine = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, mine[key]), key
    model.eval()
    loaded.eval()
    x = torch.randn(2, 3, size, size)
    for a, b in zip(model(x), loaded(x)):
        torch.testing.assert_close(a, b)


def test_found_from_mmdet_and_mmpose_registries():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpose.registry import MODELS as MMPOSE_MODELS
    for registry in (MMDET_MODELS, MMPOSE_MODELS):
        for name in ('DynamicResNet', 'DynamicMobileNetV2',
                     'DynamicMobileNetV3'):
            assert registry.get(name) is MODELS.get(name)
    model = MMDET_MODELS.build(CASES['resnet18_odconv'][0])
    assert type(model).__name__ == 'DynamicResNet'


def test_static_when_no_dynamic_conv_cfg():
    for cfg, _, _ in CASES.values():
        cfg = {k: v for k, v in cfg.items()
               if k not in ('dynamic_conv_cfg', 'dynet_shared_coefficients')}
        model = build(cfg)
        assert not any(isinstance(m, (DynamicConv2dBase, DynamicAttention))
                       for m in model.modules())
        assert any(isinstance(m, nn.Conv2d) for m in model.modules())
