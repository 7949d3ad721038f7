"""Dynamic convolution against static convolution, in one run.

Measures, as ratios to a static baseline timed in the same process:

* ``layer``: one layer's forward + backward at ResNet-50 and detection
  shapes (DynamicConv K=4, ODConv 1x and 4x, DyNet g=6);
* ``train``: a backbone training step (ResNet-50 body + pooled linear
  classifier, SGD with momentum at learning rate 0, so that every step
  and the inference figures run the initial weights) in images/s, and its
  memory: peak allocated memory on a
  GPU; on the CPU, which has no allocator statistics, the bytes of the
  tensors autograd saves for backward, parameters not counted (the
  activation memory that sets a training step's peak);
* ``infer``: batch-1 inference latency of the backbone;
* for DyNet's Dy-ResNet-50 (``--networks "DyNet-ResNet-50 g=6"``), whose
  static network is half as wide as ResNet-50, both also against the
  static ResNet-50 that DyNet's FLOP cut is measured from;

each for the layers as they run here (``execution='auto'``) and, as a
second reference, the plain form public implementations use: every sample's
kernel materialised through the ``[B, K, ...]`` product of attentions and
kernels, the batch folded into the groups of one convolution.

Timings alternate static / dynamic / reference call by call within a
process, and the ratio is taken per round, so that a noisy machine slows
all three alike; the figures are medians over several processes (``--
processes``). Writes ``benchmark.json`` and ``benchmark.md`` to ``--out``.

    python tools/analysis/benchmark.py               # CPU, full (~1 h)
    python tools/analysis/benchmark.py --quick       # CPU, a few minutes
    python tools/analysis/benchmark.py --device cuda # GPU, bf16 autocast
    python tools/analysis/benchmark.py --quick --figures network --compile
    python tools/analysis/benchmark.py --quick --figures network --freeze
    python tools/analysis/benchmark.py --figures network --fuse-conv-bn
"""
import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# (C_in, C_out, kernel, stride, H, W, batch on CPU, batch on GPU)
RESNET_LAYERS = [
    (64, 64, 3, 1, 56, 56, 8, 64),
    (128, 128, 3, 1, 28, 28, 8, 64),
    (256, 256, 3, 1, 14, 14, 8, 64),
    (512, 512, 3, 1, 7, 7, 8, 64),
    (256, 64, 1, 1, 56, 56, 8, 64),
    (1024, 256, 1, 1, 14, 14, 8, 64),
    (512, 2048, 1, 1, 7, 7, 8, 64),
]
# Mask R-CNN R50-FPN at 800x1333 (C3/C4/C5 3x3 at stride 8/16/32, batch 2),
# and the mask head's 256-channel 3x3 on 14x14 RoIs (64 of them)
DETECTION_LAYERS = [
    (128, 128, 3, 1, 100, 168, 2, 16),
    (256, 256, 3, 1, 50, 84, 2, 16),
    (512, 512, 3, 1, 25, 42, 2, 16),
    (256, 256, 3, 1, 14, 14, 64, 512),
]
QUICK_LAYERS = [RESNET_LAYERS[0], RESNET_LAYERS[3], RESNET_LAYERS[5],
                DETECTION_LAYERS[1], DETECTION_LAYERS[3]]
LAYER_TYPES = {
    'DynamicConv K=4': dict(type='DynamicConv', num_kernels=4),
    'ODConv 1x': dict(type='ODConv', num_kernels=1),
    'ODConv 4x': dict(type='ODConv', num_kernels=4),
    'DyNetConv g=6': dict(type='DyNetConv', num_kernels=6),
}
# name: (backbone, its dynamic conv config)
NETWORKS = {
    'OD-ResNet-50 1x': ('resnet50', dict(type='ODConv', num_kernels=1)),
    'OD-ResNet-50 4x': ('resnet50', dict(type='ODConv', num_kernels=4)),
    'DY-ResNet-50 K=4': ('resnet50', dict(type='DynamicConv',
                                          num_kernels=4)),
    # the ODConv paper's detection backbone (width 1.0), its depthwise
    # convs dynamic too: where grouped layers are measured
    'OD-MobileNetV2 1x': ('mobilenet_v2', dict(type='ODConv', num_kernels=1)),
    'OD-MobileNetV2 4x': ('mobilenet_v2', dict(type='ODConv', num_kernels=4)),
    # DyNet's Dy-ResNet-50 (g=6, every stage half as wide, one coefficient
    # module per block); its static network is a half-wide ResNet-50, and
    # it is also timed against the ResNet-50 that DyNet's FLOP cut is
    # measured from (``replaced``)
    'DyNet-ResNet-50 g=6': ('dynet_resnet50',
                            dict(type='DyNetConv', num_kernels=6)),
}
# what --networks runs unless told: the target networks
DEFAULT_NETWORKS = ('OD-ResNet-50 1x', 'OD-ResNet-50 4x', 'DY-ResNet-50 K=4')


# --------------------------------------------------------------------------
# the second reference: materialise [B, K, ...] and fold the batch
def materialised_forward(layer: nn.Module,
                         x: torch.Tensor,
                         attentions=None) -> torch.Tensor:
    """The public implementations' form of a layer (ODConv authors' code):
    ``sum_k (a_bk * s_b * W_k)`` built as a ``[B, K, O, I, kh, kw]``
    product, summed over K, the batch folded into the groups; the channel
    and filter attentions on the activations. A 1x1, single-kernel ODConv
    runs as a static conv, as the authors' ``_forward_impl_pw1x`` does.
    ``attentions``: those a DyNet block's coefficient module passes to its
    convs (which have no attention of their own)."""
    att = layer.attention(x) if attentions is None else attentions
    batch, channels, height, width = x.shape
    weight = layer.weight
    if att.input is not None:
        x = x * att.input[:, :, None, None].to(x.dtype)
    if att.kernel is None and att.spatial is None:
        y = F.conv2d(x, weight[0], None, layer.stride, layer.padding,
                     layer.dilation, layer.groups)
    else:
        w = weight[None]  # [1, K, O, I, kh, kw]
        if att.spatial is not None:
            w = w * att.spatial[:, None, None, None].to(w.dtype)
        if att.kernel is not None:
            a = att.kernel if att.kernel.dim() == 3 else \
                att.kernel[:, None, :]  # [B, O or 1, K]
            w = w * a.transpose(1, 2)[..., None, None, None].to(w.dtype)
        w = w.sum(1)  # [B, O, I, kh, kw]
        y = F.conv2d(x.reshape(1, batch * channels, height, width),
                     w.reshape(-1, *w.shape[2:]), None, layer.stride,
                     layer.padding, layer.dilation, layer.groups * batch)
        y = y.view(batch, -1, *y.shape[2:])
    if att.output is not None:
        y = y * att.output[:, :, None, None].to(y.dtype)
    if layer.bias is not None:
        if att.kernel is None:
            bias = layer.bias[0].expand(batch, -1)
        elif att.kernel.dim() == 2:
            bias = att.kernel @ layer.bias
        else:
            bias = (att.kernel * layer.bias.t()).sum(-1)
        y = y + bias[:, :, None, None].to(y.dtype)
    return y


def use_materialised_form(model: nn.Module) -> nn.Module:
    from dynconv_mm.layers import DynamicConv2dBase
    for module in model.modules():
        if isinstance(module, DynamicConv2dBase):
            module.forward = types.MethodType(materialised_forward, module)
    return model


# --------------------------------------------------------------------------
# subjects
def build_layer(cfg: Optional[dict], shape, groups: int = 1) -> nn.Module:
    """A layer of ``shape`` ``(C_in, C_out, kernel, stride, ...)``: a
    static ``nn.Conv2d`` (``cfg=None``) or the dynamic layer of ``cfg``."""
    from mmcv.cnn import build_conv_layer

    import dynconv_mm  # noqa: F401  (registers the conv types)
    c_in, c_out, k, stride = shape[:4]
    kwargs = dict(stride=stride, padding=k // 2, groups=groups, bias=False)
    if cfg is None:
        return nn.Conv2d(c_in, c_out, k, **kwargs)
    return build_conv_layer(dict(cfg), c_in, c_out, k, **kwargs)


class Classifier(nn.Module):
    """A backbone's last feature map + global average pool + linear, for a
    training step."""

    def __init__(self, backbone: nn.Module, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.fc(feats.mean(dim=(2, 3)))


# backbone: (its config but the dynamic conv's, its last map's channels,
# options of the dynamic network only)
BACKBONES = {
    'resnet50': (dict(type='DynamicResNet', depth=50, out_indices=(3, )),
                 2048, {}),
    'mobilenet_v2': (dict(type='DynamicMobileNetV2', widen_factor=1.0,
                          out_indices=(7, )), 1280, {}),
    'dynet_resnet50': (dict(type='DynamicResNet', depth=50, stem_channels=64,
                            base_channels=32, out_indices=(3, )), 1024,
                       dict(dynet_shared_coefficients=True)),
}
# backbone: the static network its paper compares it with, where that is
# not the static network of its own shape
REPLACED = {'dynet_resnet50': 'resnet50'}


def build_network(backbone: str, cfg: Optional[dict]) -> nn.Module:
    """A classifier on one of the project's dynamic backbones: ``resnet50``
    (``DynamicResNet``: stem and downsample static, every residual-block
    conv dynamic, as in the ODConv paper), ``mobilenet_v2``
    (``DynamicMobileNetV2`` at width 1.0: every inverted-residual conv and
    the last 1x1 dynamic, the depthwise ones as the conv type's paper
    says) or ``dynet_resnet50`` (DyNet's Dy-ResNet-50, ``PAPER_BACKBONES``'
    ``dynet_resnet50``); ``cfg=None`` is the static network of the same
    shape."""
    from mmengine.registry import MODELS

    import dynconv_mm  # noqa: F401  (registers the backbones)
    if backbone not in BACKBONES:
        raise ValueError(f'benchmark: unknown backbone {backbone!r}')
    body, channels, dynamic_options = BACKBONES[backbone]
    if cfg is not None:
        body = dict(body, **dynamic_options)
    return Classifier(MODELS.build(
        dict(body, dynamic_conv_cfg=cfg, norm_eval=False)), channels)


# --------------------------------------------------------------------------
# timing
def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


CLOCKS = dict(wall=time.perf_counter, cpu=time.process_time)
CLOCK = CLOCKS['wall']


def alternate(fns: Dict[str, Callable[[], None]],
              rounds: int,
              warmup: int,
              device: torch.device,
              warm_each: bool = False) -> Dict[str, List[float]]:
    """Seconds per call of each function, called in turn each round;
    with ``warm_each``, each timed call follows an untimed one of the same
    function, so that none is timed in the caches another left."""
    times = {name: [] for name in fns}
    for i in range(warmup + rounds):
        for name, fn in fns.items():
            if warm_each and i >= warmup:
                fn()
            synchronize(device)
            start = CLOCK()
            fn()
            synchronize(device)
            if i >= warmup:
                times[name].append(CLOCK() - start)
    return times


def summarise(times: Dict[str, List[float]]) -> dict:
    """Median ms of each, and the median over rounds of each one's ratio
    to the static baseline of the same round."""
    out = {}
    for name, values in times.items():
        out[name] = dict(ms=statistics.median(values) * 1e3)
        if name != 'static':
            out[name]['x_static'] = statistics.median(
                v / s for v, s in zip(values, times['static']))
    if 'replaced' in times:  # ours against the network its paper replaces
        out['dynamic']['x_replaced'] = statistics.median(
            v / r for v, r in zip(times['dynamic'], times['replaced']))
    return out


def saved_bytes(step: Callable[[], torch.Tensor], model: nn.Module) -> int:
    """Bytes of the distinct storages autograd saves for backward, but the
    parameters and buffers of ``model``: they are held whether or not a
    step runs, and a dynamic layer's bank of ``K`` kernels, which its
    convolutions save, would count ``K`` times a static weight as
    activations (OD-ResNet-50 4x: 1.54x a static network's with them,
    1.24x without)."""
    held = {t.untyped_storage().data_ptr()
            for t in (*model.parameters(), *model.buffers())}
    storages = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() not in held:
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(storages.values())


# --------------------------------------------------------------------------
# the three figures
def layer_figures(args, device, autocast) -> List[dict]:
    shapes = QUICK_LAYERS if args.quick else RESNET_LAYERS + DETECTION_LAYERS
    gpu = device.type == 'cuda'
    rows = []
    for shape in shapes:
        c_in, c_out, k, stride, h, w, cpu_batch, gpu_batch = shape
        batch = gpu_batch if gpu else cpu_batch
        x = torch.randn(batch, c_in, h, w, device=device,
                        requires_grad=True)
        static = build_layer(None, shape).to(device)
        for name, cfg in LAYER_TYPES.items():
            dynamic = build_layer(dict(cfg, execution=args.execution),
                                  shape).to(device)
            reference = use_materialised_form(
                build_layer(cfg, shape).to(device))
            reference.load_state_dict(dynamic.state_dict())
            # the three compute the same function (in full fp32: cuDNN's
            # default TF32 convolutions alone differ by more than 1e-3)
            with torch.no_grad(), torch.backends.cudnn.flags(
                    enabled=True, allow_tf32=False):
                torch.testing.assert_close(
                    dynamic(x[:2]), reference(x[:2]), rtol=1e-3, atol=1e-3)

            def step(module):
                def run():
                    # as a training step's zero_grad(set_to_none=True):
                    # gradients are written, not added to the last ones
                    module.zero_grad(set_to_none=True)
                    x.grad = None
                    with autocast():
                        out = module(x)
                    out.float().sum().backward()
                return run

            times = alternate(
                dict(static=step(static), dynamic=step(dynamic),
                     reference=step(reference)), args.rounds, 2, device,
                warm_each=True)
            rows.append(dict(
                figure='layer', layer=name, batch=batch,
                shape=f'{c_in}->{c_out} k{k} {h}x{w}', **summarise(times)))
            print(f'  layer {rows[-1]["shape"]} b{batch} {name}: '
                  f'{fmt(rows[-1])}', flush=True)
    return rows


def training_row(network: str, models: Dict[str, nn.Module],
                 loss_of: Callable[[nn.Module], torch.Tensor], batch: int,
                 size: int, args, device: torch.device,
                 compiled: bool = False) -> dict:
    """Training step images/s and memory of ``models`` (``static`` among
    them), as ratios to the static network; ``compiled``: the models are
    ``torch.compile``'d, and their graphs are counted in the first step.

    SGD with momentum at lr 0: each step does all of SGD's work but leaves
    the weights at their init. Even lr 1e-4 on random labels saturates
    OD-ResNet-50 4x's sigmoid attentions within three steps (to 0 and
    denormals), and denormal kernels then slow oneDNN's convolutions (by
    ~7% for that network's batch-1 latency on an Intel CPU): every figure
    is of the initial weights."""
    gpu = device.type == 'cuda'
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9)
        for k, m in models.items()
    }

    def train_step(key):
        def run():
            models[key].train()
            optimizers[key].zero_grad(set_to_none=True)
            loss_of(models[key]).backward()
            optimizers[key].step()
        return run

    steps = {k: train_step(k) for k in models}
    graphs = {k: compiled_graphs(steps[k]) for k in models} \
        if compiled else {}
    times = alternate(steps, args.train_rounds, 1, device)
    row = dict(figure='train', network=network, batch=batch, size=size,
               **summarise(times))
    for key in models:
        row[key]['img_s'] = batch / (row[key]['ms'] / 1e3)
        if key != 'static':
            row[key]['img_s_x_static'] = 1 / row[key]['x_static']
    if 'x_replaced' in row['dynamic']:
        row['dynamic']['img_s_x_replaced'] = 1 / row['dynamic']['x_replaced']
    for key, count in graphs.items():
        row[key]['graphs'] = count
    for key, model in models.items():
        model.train()
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            optimizers[key].zero_grad(set_to_none=True)
            loss_of(model).backward()
            row[key]['peak_mem_mb'] = (
                torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:  # a compiled graph's saved tensors pass the same hooks
            row[key]['saved_mb'] = saved_bytes(
                lambda: loss_of(model), model) / 2**20
        optimizers[key].zero_grad(set_to_none=True)
    mem = 'peak_mem_mb' if gpu else 'saved_mb'
    for key in models:
        if key != 'static':
            row[key]['mem_x_static'] = row[key][mem] / row['static'][mem]
    if 'replaced' in row:
        row['dynamic']['mem_x_replaced'] = (row['dynamic'][mem] /
                                            row['replaced'][mem])
    print(f'  train {network} b{batch} {size}px: {fmt(row)}', flush=True)
    return row


def network_figures(args, device, autocast) -> List[dict]:
    gpu = device.type == 'cuda'
    batch = args.train_batch or (64 if gpu else (4 if args.quick else 8))
    size = args.image_size
    rows = []
    statics = {}

    def static_network(backbone: str) -> nn.Module:
        # one per backbone: DyNet's replaced ResNet-50 is the static one of
        # the ResNet-50 networks
        if backbone not in statics:
            torch.manual_seed(0)
            statics[backbone] = build_network(backbone, None).to(device)
        return statics[backbone]

    for name in args.networks:
        backbone, cfg = NETWORKS[name]
        static = static_network(backbone)
        dynamic = build_network(backbone, dict(
            cfg, execution=args.execution)).to(device)
        reference = use_materialised_form(
            build_network(backbone, cfg).to(device))
        reference.load_state_dict(dynamic.state_dict())
        check_same_function(dynamic, reference, device)
        models = dict(static=static, dynamic=dynamic, reference=reference)
        if backbone in REPLACED:
            models['replaced'] = static_network(REPLACED[backbone])
        images = torch.randn(batch, 3, size, size, device=device)
        labels = torch.randint(0, 1000, (batch, ), device=device)

        def loss_of(model):
            with autocast():
                return F.cross_entropy(model(images).float(), labels)

        rows.append(training_row(name, models, loss_of, batch, size, args,
                                 device))
        # batch-1 inference
        image = torch.randn(1, 3, 224, 224, device=device)
        for model in models.values():
            model.eval()
        rows.append(inference_row(name, models, image, autocast, args,
                                  device))
        if args.fuse_conv_bn:  # both with their BatchNorms folded
            from dynconv_mm.engine import fuse_conv_bn
            fused = {k: fuse_conv_bn(copy.deepcopy(models[k]))
                     for k in ('static', 'dynamic')}
            rows.append(inference_row(f'{name} (conv-BN fused)', fused,
                                      image, autocast, args, device))
        if args.compile:  # static and ours, both through torch.compile
            compiled = compile_models(models, mode=args.compile_mode)
            rows.append(inference_row(f'{name} (compiled)', compiled, image,
                                      autocast, args, device, compiled=True))
            rows.append(training_row(f'{name} (compiled)', compiled, loss_of,
                                     batch, size, args, device,
                                     compiled=True))
        if args.freeze:  # Inductor's CPU inference recipe
            compiled = compile_models(models, freezing=True)
            rows.append(inference_row(f'{name} (compiled, frozen)', compiled,
                                      image, autocast, args, device,
                                      compiled=True))
    return rows


def check_same_function(dynamic: nn.Module, reference: nn.Module,
                        device: torch.device) -> None:
    """Ours and the materialised form compute the same network: copies of
    both in float64, two small images, in training mode. In float32 deep
    networks are too ill-conditioned for a tolerance that a broken form
    would not meet too: OD-MobileNetV2 4x's outputs differed by 5e-2 of
    their largest at 64x64 (BatchNorm over a few values of its 2x2 maps)
    and 2e-3 at 224x224, and at initialisation an eval-mode BatchNorm
    normalises nothing (Dy-ResNet-50's outputs reach 1e8). In float64 the
    six networks agree to 5e-11 of the largest output or better, and with
    each layer's kernel (or filter) attention reversed, the public form
    differs by 0.5-0.75 of it."""
    ours, public = (copy.deepcopy(m).double().train()
                    for m in (dynamic, reference))
    images = torch.randn(2, 3, 64, 64, device=device, dtype=torch.float64)
    with torch.no_grad():
        expected = public(images)
        error = (ours(images) - expected).abs().max() / expected.abs().max()
    if not error <= 1e-6:
        raise AssertionError(
            f'benchmark: our network and its materialised form differ by '
            f'{error:.2e} of the largest output (float64; at most 1e-6)')


def compile_models(models: Dict[str, nn.Module],
                   freezing: bool = False,
                   mode: Optional[str] = None) -> Dict[str, nn.Module]:
    """The static network and ours through ``torch.compile`` (in eval
    mode), compiled afresh: the static ResNet's code would otherwise reuse
    its graph (no count), and every network's entries add up towards
    Dynamo's recompile limit. ``freezing``: Inductor's inference freezing,
    which folds parameters into the graph as constants and prepacks the
    weights of convolutions and linear layers whose weight is one."""
    torch._dynamo.reset()
    # Set globally, not as a torch.compile option: Dynamo reads it when it
    # traces (whether parameters become constants), outside the option's
    # scope; as an option it left both networks unfrozen.
    from torch._inductor import config as inductor_config
    inductor_config.freezing = freezing
    # Static shapes: inference (batch 1, 224x224) and training (its batch
    # and --image-size) each get a graph of their own, as a model compiled
    # for one of them would; with automatic dynamic shapes the second one
    # became symbolic, and Inductor failed on a symbolic image size.
    compiled = {k: torch.compile(models[k], dynamic=False, mode=mode)
                for k in ('static', 'dynamic')}
    for model in compiled.values():
        model.eval()
    return compiled


def inference_row(network: str, models: Dict[str, nn.Module],
                  image: torch.Tensor, autocast, args, device: torch.device,
                  compiled: bool = False) -> dict:
    """Batch-1 inference latency of ``models`` (``static`` among them, in
    eval mode), as ratios to the static network; ``compiled``: the models
    are ``torch.compile``'d, and their graphs are counted in the first
    call."""
    def infer(key):
        def run():
            with torch.no_grad(), autocast():
                models[key](image)
        return run

    calls = {k: infer(k) for k in models}
    graphs = {k: compiled_graphs(run) for k, run in calls.items()} \
        if compiled else {}
    times = alternate(calls, args.infer_rounds, 3, device, warm_each=True)
    row = dict(figure='infer', network=network, batch=1, size=224,
               **summarise(times))
    for key, count in graphs.items():
        row[key]['graphs'] = count
    print(f'  infer {network} b1 224px: {fmt(row)}', flush=True)
    return row


def compiled_graphs(first_call: Callable[[], None]) -> int:
    """How many graphs Dynamo compiles in ``first_call``: 1 when the whole
    network is one graph; each graph break adds pieces with eager Python
    between them, which a compiled figure should be read with."""
    from torch._dynamo.utils import counters
    counters['stats'].clear()
    first_call()
    return counters['stats']['unique_graphs']


def fmt(row: dict) -> str:
    """One row for the log: times, and memory and graph counts where
    measured."""
    ours, ref = row['dynamic'], row.get('reference')
    text = (f'static {row["static"]["ms"]:.1f} ms, dynamic '
            f'{ours["x_static"]:.2f}x')
    if ref:
        text += f', materialised {ref["x_static"]:.2f}x'
    if 'mem_x_static' in ours:
        text += f'; memory {ours["mem_x_static"]:.2f}x'
        if ref:
            text += f' (materialised {ref["mem_x_static"]:.2f}x)'
    if 'graphs' in ours:
        text += (f' (graphs: static {row["static"]["graphs"]}, dynamic '
                 f'{ours["graphs"]})')
    if 'x_replaced' in ours:
        text += (f'; against the network it replaces '
                 f'({row["replaced"]["ms"]:.1f} ms): '
                 f'{ours["x_replaced"]:.2f}x')
        if 'mem_x_replaced' in ours:
            text += f', memory {ours["mem_x_replaced"]:.2f}x'
    return text


def worker(args) -> dict:
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    device = torch.device(args.device)
    if device.type == 'cpu':
        torch.set_num_threads(args.threads)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(
        args.amp if args.amp != 'auto' else
        ('bf16' if device.type == 'cuda' else 'none'))

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else \
            nullcontext()

    torch.manual_seed(0)
    rows = []
    if 'layer' in args.figures:
        rows += layer_figures(args, device, autocast)
    if 'network' in args.figures:
        rows += network_figures(args, device, autocast)
    return dict(rows=rows, amp=str(dtype), threads=torch.get_num_threads())


# --------------------------------------------------------------------------
# several processes, medians, JSON and markdown
def key_of(row: dict) -> tuple:
    return (row['figure'], row.get('layer', row.get('network')),
            row.get('shape', ''), row['batch'])


def aggregate(runs: List[dict]) -> List[dict]:
    merged = {}
    for run in runs:
        for row in run['rows']:
            merged.setdefault(key_of(row), []).append(row)
    out = []
    for rows in merged.values():
        first = dict(rows[0])
        for key in ('static', 'dynamic', 'reference', 'replaced'):
            if key not in rows[0]:
                continue
            first[key] = {}
            for metric in rows[0][key]:
                values = [r[key][metric] for r in rows]
                first[key][metric] = statistics.median(values)
                first[key][metric + '_range'] = [min(values), max(values)]
        first['processes'] = len(rows)
        out.append(first)
    return out


ISA_LIMITS = ('ONEDNN_MAX_CPU_ISA', 'MKL_ENABLE_INSTRUCTIONS')


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    # Both change CPU timings a lot: with OMP_WAIT_POLICY=PASSIVE every
    # small op pays a thread wake-up (a 2048x7x7 mean: 10 -> 55 us), and
    # without kept memory large tensors page-fault anew on every call.
    from dynconv_mm.execution import cpu_memory_state
    from dynconv_mm.execution.cpu_ops import CPU_OPS_ERROR
    info = dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__,
                python=platform.python_version(),
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY', 'default'),
                freed_memory_kept=cpu_memory_state()['applied'],
                # without them batch-1 CPU inference runs a slower path
                cpu_ops='compiled' if CPU_OPS_ERROR is None else
                CPU_OPS_ERROR,
                # the widest vectors torch's kernels (and the compiled
                # ops) use, and the limits set on oneDNN's and MKL's:
                # ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
                # MKL_ENABLE_INSTRUCTIONS=AVX2 time an AVX2 CPU
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                isa_limits={name: os.environ[name] for name in ISA_LIMITS
                            if name in os.environ})
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def _vector_instructions(m: dict) -> str:
    """torch's CPU capability and the limits set on oneDNN and MKL, e.g.
    ``AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)``."""
    limits = ', '.join(f'{k}={v}' for k, v in m.get('isa_limits', {}).items())
    return m.get('cpu_capability', '?') + (f' ({limits})' if limits else '')


def markdown(result: dict) -> str:
    m = result['machine']
    device = m.get('gpu') if result['device'] == 'cuda' else m['cpu']
    lines = [
        f'Device: {result["device"]} ({device}), '
        f'{result["threads"]} threads, torch {m["torch"]}, amp '
        f'{result["amp"]}, {result["clock"]} clock, OMP_WAIT_POLICY '
        f'{m.get("omp_wait_policy", "?")}, freed CPU memory kept: '
        f'{m.get("freed_memory_kept", "?")}, CPU ops: '
        f'{m.get("cpu_ops", "?")}, vector instructions '
        f'{_vector_instructions(m)}; medians over '
        f'{result["processes"]} processes '
        f'(min-max in brackets); command: `{result["command"]}`', ''
    ]

    def rng(d, metric):  # '-' where not measured (compiled: no reference)
        if d is None:
            return '-'
        lo, hi = d[metric + '_range']
        return f'{d[metric]:.2f}× ({lo:.2f}-{hi:.2f})'

    def graphs(r):
        return '' if 'graphs' not in r['dynamic'] else (
            f' ({r["static"]["graphs"]:.0f} / '
            f'{r["dynamic"]["graphs"]:.0f} graphs)')

    layers = [r for r in result['rows'] if r['figure'] == 'layer']
    if layers:
        lines += ['| layer fwd+bwd | batch | layer | static ms | ours | '
                  'materialised + batch folded |', '|---|---|---|---|---|---|']
        for r in layers:
            lines.append(f'| {r["shape"]} | {r["batch"]} | {r["layer"]} | '
                         f'{r["static"]["ms"]:.1f} | '
                         f'{rng(r["dynamic"], "x_static")} | '
                         f'{rng(r["reference"], "x_static")} |')
        lines.append('')
    train = [r for r in result['rows'] if r['figure'] == 'train']
    if train:
        mem = 'peak memory' if result['device'] == 'cuda' else \
            'saved activations'
        lines += [f'| training step | batch, size | static img/s | ours '
                  f'img/s | materialised img/s | ours {mem} | materialised '
                  f'{mem} |', '|---|---|---|---|---|---|---|']
        for r in train:
            lines.append(
                f'| {r["network"]}{graphs(r)} | {r["batch"]}, {r["size"]}² '
                f'| {r["static"]["img_s"]:.1f} | '
                f'{rng(r["dynamic"], "img_s_x_static")} | '
                f'{rng(r.get("reference"), "img_s_x_static")} | '
                f'{rng(r["dynamic"], "mem_x_static")} | '
                f'{rng(r.get("reference"), "mem_x_static")} |')
        lines.append('')
    infer = [r for r in result['rows'] if r['figure'] == 'infer']
    if infer:
        lines += ['| batch-1 inference, 224² | static ms | ours | '
                  'materialised |', '|---|---|---|---|']
        for r in infer:
            lines.append(f'| {r["network"]}{graphs(r)} | '
                         f'{r["static"]["ms"]:.1f} | '
                         f'{rng(r["dynamic"], "x_static")} | '
                         f'{rng(r.get("reference"), "x_static")} |')
        lines.append('')
    replacing = [r for r in result['rows'] if 'replaced' in r]
    if replacing:
        lines += ['| against the static network the paper replaces | '
                  'its ms | ours: time | ours: memory |',
                  '|---|---|---|---|']
        for r in replacing:
            what = ('training step, ' if r['figure'] == 'train' else
                    'batch-1 inference, ')
            memory = ('-' if 'mem_x_replaced' not in r['dynamic'] else
                      rng(r['dynamic'], 'mem_x_replaced'))
            lines.append(f'| {what}{r["network"]} | '
                         f'{r["replaced"]["ms"]:.1f} | '
                         f'{rng(r["dynamic"], "x_replaced")} | {memory} |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--quick', action='store_true',
                        help='fewer shapes, rounds and processes')
    parser.add_argument('--processes', type=int,
                        help='separate processes to take medians over '
                        '(default 5, quick 3)')
    parser.add_argument('--threads', type=int, default=2,
                        help='CPU threads (default 2)')
    parser.add_argument('--amp', default='auto',
                        choices=['auto', 'none', 'bf16', 'fp16'],
                        help='autocast dtype (auto: bf16 on cuda, none on '
                        'cpu)')
    parser.add_argument('--figures', default='layer,network',
                        help='comma list of: layer, network')
    parser.add_argument('--networks', default=','.join(DEFAULT_NETWORKS),
                        help='comma list of the network figures to take: ' +
                        ', '.join(NETWORKS) + ' (default: ' +
                        ', '.join(DEFAULT_NETWORKS) + ')')
    parser.add_argument('--rounds', type=int, help='layer rounds')
    parser.add_argument('--train-rounds', type=int)
    parser.add_argument('--infer-rounds', type=int)
    parser.add_argument('--train-batch', type=int)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument(
        '--clock', choices=['wall', 'cpu'], default='wall',
        help='wall time (default), or the process CPU time: steadier on a '
        'machine shared with other jobs (run with OMP_WAIT_POLICY=PASSIVE '
        'so that idle threads do not burn it); img/s then count CPU '
        'seconds. For wall time keep the default OMP_WAIT_POLICY: PASSIVE '
        'makes every small op wait for sleeping threads')
    parser.add_argument(
        '--execution', default='auto',
        help="our layers' execution option, e.g. triton on a GPU (default "
        'auto)')
    parser.add_argument(
        '--compile', action='store_true',
        help='also time batch-1 inference and the training step with the '
        'static network and ours both through torch.compile (minutes of '
        'compilation per network)')
    parser.add_argument(
        '--compile-mode',
        choices=['default', 'reduce-overhead', 'max-autotune',
                 'max-autotune-no-cudagraphs'],
        help="torch.compile's mode for --compile: reduce-overhead captures "
        'CUDA graphs (the launch-bound batch-1 case on a GPU)')
    parser.add_argument(
        '--freeze', action='store_true',
        help='also time batch-1 inference with both networks compiled with '
        "Inductor's freezing (parameters folded in as constants, static "
        'weights prepacked: its recipe for CPU inference)')
    parser.add_argument(
        '--fuse-conv-bn', action='store_true',
        help='also time batch-1 inference with every BatchNorm that follows '
        'a conv folded into it, in the static network and ours '
        "(dynconv_mm.engine.fuse_conv_bn; DyNet's layers keep theirs)")
    parser.add_argument('--out', default='work_dirs/benchmark')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.processes = args.processes or (3 if quick else 5)
    args.rounds = args.rounds or (5 if quick else 10)
    args.train_rounds = args.train_rounds or (2 if quick else 4)
    args.infer_rounds = args.infer_rounds or (10 if quick else 20)
    args.figures = args.figures.split(',')
    args.networks = args.networks.split(',')
    unknown = [n for n in args.networks if n not in NETWORKS]
    if unknown:
        parser.error(f'--networks: unknown network(s) {unknown}; choose '
                     f'from {list(NETWORKS)}')
    if args.worker:
        with open(args.worker, 'w') as f:
            json.dump(worker(args), f)
        return
    os.makedirs(args.out, exist_ok=True)
    command = 'python tools/analysis/benchmark.py ' + ' '.join(sys.argv[1:])
    runs = []
    for i in range(args.processes):
        print(f'process {i + 1}/{args.processes}', flush=True)
        path = os.path.join(args.out, f'process{i}.json')
        cmd = [sys.executable, __file__, '--worker', path] + sys.argv[1:]
        subprocess.run(cmd, check=True)
        with open(path) as f:
            runs.append(json.load(f))
        os.remove(path)
    result = dict(device=args.device, command=command, machine=machine(),
                  clock=args.clock,
                  processes=len(runs), amp=runs[0]['amp'],
                  threads=runs[0]['threads'], rows=aggregate(runs))
    with open(os.path.join(args.out, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    table = markdown(result)
    with open(os.path.join(args.out, 'benchmark.md'), 'w') as f:
        f.write(table)
    print(table)


if __name__ == '__main__':
    main()
