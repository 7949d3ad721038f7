"""The layers and backbones under ``torch.compile``.

Compiled code takes branches eager code does not (``mixes_in_place`` is
always true there, and the kernels are re-formed in backward through a
checkpointed region, not saved-tensor hooks: what that keeps is checked in
test_kernel_recompute.py), so compiled layers are checked against the
oracle themselves, outputs and gradients, at batch-1 inference and in
training.
Every compile is ``fullgraph=True``: a graph break, which would silently
send part of a layer back to eager (and cost a round trip per layer in a
compiled network), fails the test. Most cases use the ``aot_eager``
backend (Dynamo's trace and AOTAutograd's joint graph, without Inductor's
minute-long C++ builds); one layer runs through Inductor, the backend the
benchmark's compiled figures use.
"""
import pytest
import torch
from mmengine.registry import MODELS
from torch._dynamo.utils import counters

import dynconv_mm  # noqa: F401  (registers the types)
from oracle import assert_layer_matches_oracle, reference_layer_forward
from test_layer_execution import LAYERS, build


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch, and counts only its own graphs: a
    cache shared across tests would hit Dynamo's recompile limit, after
    which it runs eager silently."""
    torch._dynamo.reset()
    counters['stats'].clear()
    yield
    torch._dynamo.reset()


def compiled(module, backend='aot_eager'):
    """``module`` compiled as one graph (a graph break raises)."""
    return torch.compile(module, backend=backend, fullgraph=True)


def compiled_graphs() -> int:
    """How many graphs Dynamo has compiled in this test (as
    ``benchmark.py --compile`` counts them)."""
    return counters['stats']['unique_graphs']


def check_inference(layer, run):
    layer.eval()
    x = torch.randn(1, 4, 9, 8, dtype=torch.float64,
                    device=layer.weight.device)
    with torch.no_grad():
        torch.testing.assert_close(run(x), reference_layer_forward(layer, x))


def check_training(layer, run):
    layer.train()
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True,
                    device=layer.weight.device)
    assert_layer_matches_oracle(layer, x, run)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('check', [check_inference, check_training],
                         ids=['inference_b1', 'training_b3'])
def test_compiled_layer_matches_oracle(name, check):
    layer = build(name)
    check(layer, compiled(layer))
    assert compiled_graphs() == 1


@pytest.mark.parametrize('freezing', [False, True])
@pytest.mark.parametrize('layer_type,num_kernels', [('ODConv', 1),
                                                    ('ODConv', 4),
                                                    ('DynamicConv', 4)])
def test_compiled_pointwise_matrix_product(layer_type, num_kernels, freezing,
                                           monkeypatch):
    """On an Intel CPU a batch-1 float32 1x1 layer at inference runs its
    convolution as one matrix product, compiled too: one graph, no
    convolution in it, equal to the oracle. Not under Inductor's freezing,
    where it stays a convolution (the products measured slower there)."""
    from torch._inductor import config as inductor_config

    from dynconv_mm.execution import attentions
    monkeypatch.setattr(attentions, 'CPU_VENDOR', 'GenuineIntel')
    layer = MODELS.build(dict(type=layer_type, in_channels=6, out_channels=5,
                              kernel_size=1, num_kernels=num_kernels)).eval()
    ops = []

    def recording_backend(graph_module, example_inputs):
        ops.extend(str(node.target) for node in graph_module.graph.nodes
                   if node.op == 'call_function')
        return graph_module.forward

    run = torch.compile(layer, backend=recording_backend, fullgraph=True)
    x = torch.randn(1, 6, 7, 9)
    with torch.no_grad(), inductor_config.patch(freezing=freezing):
        torch.testing.assert_close(run(x), reference_layer_forward(layer, x))
    assert compiled_graphs() == 1
    has_conv = any('conv' in op for op in ops)
    has_product = any('mm' in op for op in ops)
    assert (has_conv, has_product) == (freezing, not freezing), ops


@pytest.mark.parametrize('name', ['DynamicConv', 'ODConv_4x'])
def test_compiled_layer_follows_temperature_changes(name):
    """TemperatureAnnealingHook changes the temperature every iteration: a
    compiled layer must use the new value without being traced again (a
    retrace per value would soon hit Dynamo's recompile limit, after which
    it runs eager)."""
    layer = build(name).eval()
    run = compiled(layer)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        for temperature in (30.0, 0.5):
            layer.temperature = temperature
            torch.testing.assert_close(run(x),
                                       reference_layer_forward(layer, x))
    assert compiled_graphs() == 1


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_compiled_attention_runs_in_fp32_under_autocast(name, dtype):
    """As eager (tests/test_layers/test_mixed_precision.py): under autocast
    the attention computes in float32, inside the one graph."""
    layer = build(name).float()
    run = compiled(layer.attention)
    x = torch.randn(2, 4, 9, 8)
    with torch.no_grad():
        want = layer.attention(x)
        with torch.autocast('cpu', dtype=dtype):
            got = run(x)
    for field, value in zip(got._fields, got):
        if value is None:
            assert getattr(want, field) is None, field
            continue
        assert value.dtype == torch.float32, field
        torch.testing.assert_close(value, getattr(want, field))
    assert compiled_graphs() == 1


@pytest.mark.slow
def test_inductor_compiled_layer_matches_oracle():
    layer = build('ODConv_4x')
    run = compiled(layer, 'inductor')
    check_inference(layer, run)
    check_training(layer, run)
    assert compiled_graphs() == 2  # the eval and the train graph


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
@pytest.mark.parametrize('name', LAYERS)
def test_inductor_compiled_layer_on_gpu_matches_oracle(name):
    """On a GPU Inductor writes Triton kernels for the glue (float64, so
    that neither TF32 nor rounding blurs the comparison)."""
    layer = build(name).cuda()
    run = compiled(layer, 'inductor')
    check_inference(layer, run)
    check_training(layer, run)
    assert compiled_graphs() == 2


BACKBONES = {
    'resnet18_odconv_attention_bn': dict(
        type='DynamicResNet', depth=18, base_channels=8,
        dynamic_conv_cfg=dict(type='ODConv', num_kernels=4,
                              attention_norm_cfg=dict(type='BN'))),
    'resnet50_dynet_shared': dict(
        type='DynamicResNet', depth=50, stem_channels=16, base_channels=4,
        dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=3),
        dynet_shared_coefficients=True),
    'mobilenetv2_dyconv': dict(
        type='DynamicMobileNetV2', widen_factor=0.5,
        dynamic_conv_cfg=dict(type='DynamicConv', num_kernels=4)),
}


@pytest.mark.slow
@pytest.mark.parametrize('name,train', [
    ('resnet18_odconv_attention_bn', False),
    ('resnet18_odconv_attention_bn', True),
    ('resnet50_dynet_shared', True),
    ('mobilenetv2_dyconv', False),
])
def test_compiled_backbone_is_one_graph_equal_to_eager(name, train):
    """A whole backbone traces as one graph and computes what it computes
    eagerly (its layers being checked against the oracle above)."""
    torch.manual_seed(0)
    backbone = MODELS.build(BACKBONES[name]).double().train(train)
    run = compiled(backbone)
    x = torch.randn(1 if not train else 2, 3, 32, 32, dtype=torch.float64)
    params = [p for p in backbone.parameters() if p.requires_grad]
    buffers = {k: v.clone() for k, v in backbone.named_buffers()}

    def outputs_and_gradients(forward):
        with torch.set_grad_enabled(train):
            outputs = forward(x)
        if not train:
            return outputs, ()
        loss = sum(o.square().sum() for o in outputs)
        return outputs, torch.autograd.grad(loss, params)

    got = outputs_and_gradients(run)
    assert compiled_graphs() == 1
    # the compiled run updated BN running statistics in training: start the
    # eager run from the same ones
    for key, buffer in backbone.named_buffers():
        buffer.copy_(buffers[key])
    want = outputs_and_gradients(backbone)
    for g, w in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        torch.testing.assert_close(g, w)
