"""Building through mmcv's registry, nn.Conv2d-like behaviour, bad options."""
import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope

from conftest import LAYERS


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmpose'])
def test_builds_through_build_conv_layer(layer_type, scope):
    ctx = DefaultScope.overwrite_default_scope(scope) if scope else None
    if scope:
        import importlib
        importlib.import_module(f'{scope}.registry')
        with ctx:
            layer = build_conv_layer(dict(type=layer_type), 8, 16, 3,
                                     stride=2, padding=1, dilation=1,
                                     groups=2, bias=False)
    else:
        layer = build_conv_layer(dict(type=layer_type, num_kernels=2), 8, 16,
                                 (3, 3), stride=2, padding=1, bias=False)
    assert isinstance(layer, LAYERS[layer_type])
    y = layer(torch.randn(2, 8, 10, 12))
    assert y.shape == (2, 16, 5, 6)
    assert layer.bias is None


def test_paper_defaults():
    dy = build_conv_layer(dict(type='DynamicConv'), 64, 64, 3)
    assert dy.num_kernels == 4 and dy.attention.trunk.fc.out_features == 16
    od = build_conv_layer(dict(type='ODConv'), 512, 256, 3)
    assert od.num_kernels == 4
    assert od.attention.trunk.fc.out_features == 32  # 512 / 16
    od_small = build_conv_layer(dict(type='ODConv'), 64, 64, 3)
    assert od_small.attention.trunk.fc.out_features == 16  # at least 16
    dyn = build_conv_layer(dict(type='DyNetConv'), 64, 32, 3)
    assert dyn.num_kernels == 6 and dyn.weight.shape == (6, 32, 64, 3, 3)
    assert dyn.attention.trunk.fc.out_features == 16  # C_in / 4


@pytest.mark.parametrize('in_c,out_c,k,groups,heads', [
    (16, 16, 3, 16, {'input', 'spatial', 'kernel'}),  # depthwise: no filter
    (16, 32, 1, 1, {'input', 'output', 'kernel'}),  # 1x1: no spatial
    (16, 32, 3, 1, {'input', 'output', 'spatial', 'kernel'}),
])
def test_odconv_skip_rules(in_c, out_c, k, groups, heads):
    layer = build_conv_layer(dict(type='ODConv'), in_c, out_c, k,
                             groups=groups)
    assert set(layer.attention.head_slices) == heads
    single = build_conv_layer(dict(type='ODConv', num_kernels=1), in_c,
                              out_c, k, groups=groups)
    assert set(single.attention.head_slices) == heads - {'kernel'}


def test_odconv_1x1_single_kernel_conv_is_static():
    layer = build_conv_layer(dict(type='ODConv', num_kernels=1), 8, 8, 1)
    att = layer.attention(torch.randn(2, 8, 4, 4))
    assert att.kernel is None and att.spatial is None
    assert att.input is not None and att.output is not None


@pytest.mark.parametrize('options,option,value', [
    (dict(num_kernels=0), 'num_kernels', '0'),
    (dict(num_kernels=2.5), 'num_kernels', '2.5'),
    (dict(reduction=0), 'reduction', '0'),
    (dict(reduction=-4), 'reduction', '-4'),
    (dict(temperature=0), 'temperature', '0'),
    (dict(temperature=-1.0), 'temperature', '-1.0'),
    (dict(min_hidden_channels=0), 'min_hidden_channels', '0'),
    (dict(groups=3), 'groups', '3'),
    (dict(padding_mode='reflect'), 'padding_mode', "'reflect'"),
])
def test_bad_option_names_layer_option_and_value(layer_type, options, option,
                                                 value):
    kwargs = dict(groups=1)
    kwargs.update(options)
    groups = kwargs.pop('groups')
    with pytest.raises(ValueError) as err:
        build_conv_layer(dict(type=layer_type, **kwargs), 8, 16, 3,
                         groups=groups)
    message = str(err.value)
    assert layer_type in message and option in message and value in message


def test_unknown_option_names_layer_option_and_value(layer_type):
    with pytest.raises(TypeError) as err:
        build_conv_layer(dict(type=layer_type, kernal_num=4), 8, 16, 3)
    message = str(err.value)
    assert layer_type in message and 'kernal_num=4' in message
    assert 'num_kernels' in message  # lists what is accepted


def test_temperature_setter_validates(layer_type):
    layer = build_conv_layer(dict(type=layer_type), 8, 8, 3)
    with pytest.raises(ValueError, match=f'{layer_type}.*temperature=0'):
        layer.temperature = 0
    with pytest.raises(ValueError, match='temperature=nan'):
        layer.temperature = float('nan')


def test_batch_one_trains_with_defaults(layer_type):
    layer = build_conv_layer(dict(type=layer_type), 8, 16, 3).train()
    layer(torch.randn(1, 8, 6, 6)).sum().backward()
    assert layer.weight.grad is not None


def test_batchnorm_attention_batch_one_error_is_clear():
    layer = build_conv_layer(
        dict(type='ODConv', attention_norm_cfg=dict(type='BN')), 8, 16,
        3).train()
    with pytest.raises(ValueError, match='ODConv.*attention_norm_cfg.*batch'):
        layer(torch.randn(1, 8, 6, 6))
    layer.eval()(torch.randn(1, 8, 6, 6))  # running statistics: fine


def test_padding_same_and_conv_attributes(layer_type):
    layer = build_conv_layer(dict(type=layer_type), 4, 6, (3, 5),
                             padding='same', dilation=(1, 2))
    assert layer(torch.randn(2, 4, 7, 9)).shape == (2, 6, 7, 9)
    with pytest.raises(ValueError, match="padding='same'"):
        build_conv_layer(dict(type=layer_type), 4, 6, 3, stride=2,
                         padding='same')
    for name in ('in_channels', 'out_channels', 'kernel_size', 'stride',
                 'padding', 'dilation', 'groups', 'transposed',
                 'output_padding', 'weight', 'bias'):
        assert hasattr(layer, name), name


def test_in_conv_module_keeps_its_own_init(layer_type):
    """ConvModule Kaiming-initialises a conv that has no init_weights() as
    if its weight were 4-D: on the 5-D bank that is fan_out = K * C_in * 9,
    four times too small a std here. Ours is per kernel, fan_out = C_out * 9.
    """
    torch.manual_seed(0)
    module = ConvModule(32, 8, 3, padding=1,
                        conv_cfg=dict(type=layer_type, num_kernels=4),
                        norm_cfg=dict(type='BN'))
    module.init_weights()
    ours = (2.0 / (8 * 9))**0.5
    convmodule_kaiming = (2.0 / (4 * 32 * 9))**0.5
    std = module.conv.weight.std().item()
    assert 0.9 * ours < std < 1.1 * ours, (std, ours, convmodule_kaiming)
    assert module.conv.bias is None  # bias='auto' with a norm
    assert module(torch.randn(2, 32, 5, 5)).shape == (2, 8, 5, 5)


class Net(BaseModule):
    """A model whose init_cfg OpenMMLab applies before its children's
    init_weights()."""

    def __init__(self, layer_type, init_cfg):
        super().__init__(init_cfg=init_cfg)
        self.conv = build_conv_layer(dict(type=layer_type), 16, 64, 3)
        self.static = nn.Conv2d(16, 64, 3)


def test_parent_conv2d_init_cfg_leaves_the_layer_as_built(layer_type):
    """A model-wide Conv2d init (mmdet's ResNet has one) must not reach the
    5-D bank, and init_weights() must not re-randomise the layer."""
    torch.manual_seed(0)
    net = Net(layer_type, dict(type='Constant', layer='Conv2d', val=0.0,
                               bias=0.0))
    before = {k: v.clone() for k, v in net.conv.state_dict().items()}
    net.init_weights()
    assert (net.static.weight == 0).all()  # the init_cfg ran
    for name, value in net.conv.state_dict().items():
        assert torch.equal(value, before[name]), name
    std = net.conv.weight.std().item()
    expected = (2.0 / (64 * 9))**0.5  # Kaiming normal, fan_out
    assert 0.9 * expected < std < 1.1 * expected


def test_parent_init_cfg_naming_the_layer_is_honoured(layer_type):
    torch.manual_seed(0)
    class_name = LAYERS[layer_type].__name__
    net = Net(layer_type, dict(type='Constant', layer=class_name, val=0.5,
                               bias=0.25))
    attention = {k: v.clone()
                 for k, v in net.conv.attention.state_dict().items()}
    net.init_weights()
    assert (net.conv.weight == 0.5).all()
    assert (net.conv.bias == 0.25).all()
    for name, value in net.conv.attention.state_dict().items():
        assert torch.equal(value, attention[name]), name  # not a match


def test_own_init_cfg_constant(layer_type):
    class_name = LAYERS[layer_type].__name__
    layer = build_conv_layer(
        dict(type=layer_type,
             init_cfg=dict(type='Constant', layer=class_name, val=0.5,
                           bias=-1.0)), 8, 8, 3)
    assert layer.weight.std() > 0  # built with its own init
    layer.init_weights()
    assert (layer.weight == 0.5).all() and (layer.bias == -1.0).all()


def test_own_init_cfg_pretrained(layer_type, tmp_path):
    torch.manual_seed(1)
    trained = build_conv_layer(dict(type=layer_type), 8, 8, 3)
    trained.temperature = 3.0
    path = tmp_path / 'conv.pth'
    torch.save(trained.state_dict(), path)
    torch.manual_seed(2)
    layer = build_conv_layer(
        dict(type=layer_type,
             init_cfg=dict(type='Pretrained', checkpoint=str(path))), 8, 8,
        3)
    assert not torch.equal(layer.weight, trained.weight)
    layer.init_weights()
    for name, value in trained.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value), name
    assert layer.temperature == 3.0


def test_mmdet_scope_routes_dynamic_conv_by_signature():
    """mmdet has its own `DynamicConv` (Sparse R-CNN); both must build."""
    from mmdet.models.layers import DynamicConv as SparseRCNNDynamicConv
    from mmdet.registry import MODELS

    from dynconv_mm.layers import DynamicConv2d
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours = build_conv_layer(dict(type='DynamicConv', num_kernels=2), 8,
                                8, 3)
    assert isinstance(ours, DynamicConv2d)
    theirs = MODELS.build(
        dict(type='DynamicConv', in_channels=32, feat_channels=8,
             out_channels=32, input_feat_shape=7))
    assert isinstance(theirs, SparseRCNNDynamicConv)
