"""The keypoint configs (configs/pose): what they inherit, where their
dynamic convolutions are, the dataset switch, and -- through the real
Runner, our tools and MMPose's own tools -- that each family trains and is
evaluated by MMPose's CocoMetric."""
import os
import os.path as osp
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch.nn as nn
from mmengine.config import Config

import dynconv_mm  # noqa: F401  (registers layers, backbones, heads)
from dynconv_mm.datasets import generate_synthetic_coco
from dynconv_mm.layers import DynamicConv2d, DyNetConv2d, ODConv2d

mmpose = pytest.importorskip('mmpose')

REPO = Path(__file__).resolve().parents[2]
POSE = REPO / 'configs' / 'pose'
MMPOSE_TOOLS = Path(mmpose.__file__).parent / '.mim' / 'tools'
SUFFIX = '_4xb32-210e_coco-256x192.py'
BACKBONES = ('mobilenetv3-small', 'mobilenetv2-x1.0', 'mobilenetv2-x0.5',
             'resnet18')
SETTINGS = ('static', 'dy-head', 'dy-backbone', 'dy-both')
STUDY = {(b, s): POSE / 'dynamic_conv' / f'td-hm_{b}_{s}{SUFFIX}'
         for b in BACKBONES for s in SETTINGS}
OD_MV2 = POSE / 'odconv' / f'td-hm_od-mobilenetv2-x1.0-4x{SUFFIX}'
OD_R50 = POSE / 'odconv' / f'td-hm_od-resnet50-4x{SUFFIX}'
DYNET = POSE / 'dynet' / f'td-hm_dynet-resnet50{SUFFIX}'
DEMO = (POSE / 'demo' /
        'td-hm_mobilenetv2-x0.5_dy-both_synthetic-coco-128x96.py')
ALL = sorted(STUDY.values()) + [OD_MV2, OD_R50, DYNET]
DYNAMIC_TYPES = (DynamicConv2d, ODConv2d, DyNetConv2d)
# One representative per family for the Runner runs.
FAMILIES = {
    'dy-mobilenetv3-small': STUDY['mobilenetv3-small', 'dy-both'],
    'dy-mobilenetv2': STUDY['mobilenetv2-x0.5', 'dy-head'],
    'dy-resnet18': STUDY['resnet18', 'dy-backbone'],
    'od-mobilenetv2': OD_MV2,
    'od-resnet50': OD_R50,
    'dynet-resnet50': DYNET,
}
COCO_DETECTIONS = ('data/coco/person_detection_results/'
                   'COCO_val2017_detections_AP_H_56_person.json')


def load(path, monkeypatch, synthetic=False) -> Config:
    if synthetic:
        monkeypatch.setenv('DYNCONV_MM_DATA', 'synthetic_coco')
    else:
        monkeypatch.delenv('DYNCONV_MM_DATA', raising=False)
    return Config.fromfile(str(path))


def build_model(cfg: Config) -> nn.Module:
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    init_default_scope('mmpose')
    return MODELS.build(cfg.model)


def dynamic_convs(module: nn.Module, kind=DYNAMIC_TYPES) -> list:
    return [m for m in module.modules() if isinstance(m, kind)]


def hook_types(cfg: Config) -> list:
    return [h['type'] for h in cfg.get('custom_hooks', [])]


# ------------------------------------------------------------ the files
def test_the_config_set():
    """The 16 study configs, ODConv MobileNetV2 and ResNet-50, DyNet, the
    demo; no other config under configs/pose (so the documented list is
    complete)."""
    found = sorted(p for p in POSE.rglob('*.py') if '_base_' not in p.parts)
    assert found == sorted(ALL + [DEMO])
    assert len(STUDY) == 16


@pytest.mark.parametrize('path', ALL, ids=lambda p: p.name[6:-len(SUFFIX)])
def test_mmpose_bases_and_the_recipe(path, monkeypatch):
    cfg = load(path, monkeypatch)
    # From mmpose::_base_/default_runtime.py.
    assert cfg.default_scope == 'mmpose'
    assert cfg.visualizer.type == 'PoseLocalVisualizer'
    assert 'SyncBuffersHook' in hook_types(cfg)
    assert cfg.custom_imports.imports == ['dynconv_mm']
    # SimpleBaseline's 210 epochs, Adam lr 1e-3 / 10 at 170 and 200.
    assert cfg.train_cfg.max_epochs == 210
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=1e-3)
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
    assert step[0].milestones == [170, 200] and step[0].gamma == 0.1
    assert cfg.model.test_cfg.flip_test is True
    # 256x192 crops, heatmaps at stride 4, one codec for data and head.
    assert cfg.codec.input_size == (192, 256)
    assert cfg.codec.heatmap_size == (48, 64)
    assert cfg.model.head.decoder == cfg.codec
    assert cfg.model.head.out_channels == 17
    affine = [t for t in cfg.train_pipeline if t.type == 'TopdownAffine']
    assert affine[0].input_size == (192, 256)


@pytest.mark.parametrize('path', [STUDY['resnet18', 'dy-both'], OD_MV2])
def test_coco_layout_and_the_synthetic_switch(path, monkeypatch):
    coco = load(path, monkeypatch)
    val = coco.val_dataloader.dataset
    assert coco.train_dataloader.dataset.data_root == 'data/coco/'
    assert coco.train_dataloader.dataset.ann_file == \
        'annotations/person_keypoints_train2017.json'
    assert val.data_root == 'data/coco/'
    assert val.bbox_file == COCO_DETECTIONS  # a detector's person boxes
    assert coco.val_evaluator.type == 'CocoMetric'
    assert coco.val_evaluator.ann_file == \
        'data/coco/annotations/person_keypoints_val2017.json'
    assert coco.test_dataloader == coco.val_dataloader

    synthetic = load(path, monkeypatch, synthetic=True)
    root = 'data/synthetic_coco_keypoints/'
    assert synthetic.train_dataloader.dataset.data_root == root
    assert synthetic.val_dataloader.dataset.data_root == root
    assert synthetic.val_dataloader.dataset.bbox_file is None  # GT boxes
    assert synthetic.test_dataloader.dataset.bbox_file is None
    assert synthetic.val_evaluator.ann_file == \
        root + 'annotations/person_keypoints_val2017.json'
    # Nothing but the data changes.
    differ = {k for k in set(coco) | set(synthetic)
              if coco.get(k) != synthetic.get(k)}
    assert differ == {'data_root', 'train_dataloader', 'val_dataloader',
                      'test_dataloader', 'val_evaluator', 'test_evaluator'}


@pytest.mark.parametrize('backbone', BACKBONES)
def test_four_settings_place_the_dynamic_convs(backbone, monkeypatch):
    """static / dy-head / dy-backbone / dy-both differ only in where
    DynamicConv (K=4) is: the other part is the same static module."""
    models, cfgs = {}, {}
    for setting in SETTINGS:
        cfgs[setting] = load(STUDY[backbone, setting], monkeypatch)
        models[setting] = build_model(cfgs[setting])
    for setting, model in models.items():
        in_backbone = dynamic_convs(model.backbone)
        in_head = dynamic_convs(model.head)
        want_backbone = setting in ('dy-backbone', 'dy-both')
        want_head = setting in ('dy-head', 'dy-both')
        assert bool(in_backbone) == want_backbone, setting
        assert bool(in_head) == want_head, setting
        for conv in in_backbone + in_head:
            assert type(conv) is DynamicConv2d and conv.num_kernels == 4
        # The paper's temperature schedule wherever something is dynamic.
        annealing = 'TemperatureAnnealingHook' in hook_types(cfgs[setting])
        assert annealing == (want_backbone or want_head), setting
        if want_head:  # every head conv but the final 1x1 heatmap conv
            static = [m for m in model.head.modules()
                      if type(m) is nn.Conv2d and m.groups == 1]
            assert static == [model.head.final_layer]

    def params(module):
        return sum(p.numel() for p in module.parameters())

    static = models['static']
    assert params(models['dy-head'].backbone) == params(static.backbone)
    assert params(models['dy-backbone'].head) == params(static.head)
    assert params(models['dy-both'].head) == params(models['dy-head'].head)
    assert params(models['dy-both'].backbone) == params(
        models['dy-backbone'].backbone)
    assert params(models['dy-both']) > params(static)


def test_odconv_and_dynet_configs(monkeypatch):
    od_mv2 = build_model(load(OD_MV2, monkeypatch))
    assert dynamic_convs(od_mv2.backbone, ODConv2d)
    head_od = dynamic_convs(od_mv2.head, ODConv2d)
    # ODConv's MobileNetV2 placement in the head too: depthwise included.
    assert any(c.groups > 1 for c in head_od)
    assert all(isinstance(c, ODConv2d) for c in dynamic_convs(od_mv2))
    assert all(c.num_kernels == 4 for c in head_od)

    od_r50 = build_model(load(OD_R50, monkeypatch))
    assert len(dynamic_convs(od_r50.backbone, ODConv2d)) == 16 * 3
    assert not dynamic_convs(od_r50.head)  # "type A": static head

    dynet_cfg = load(DYNET, monkeypatch)
    dynet = build_model(dynet_cfg)
    assert dynamic_convs(dynet.backbone, DyNetConv2d)
    assert not dynamic_convs(dynet.head)
    assert 'TemperatureAnnealingHook' not in hook_types(dynet_cfg)
    assert dynet.head.in_channels == 1024


def test_demo_config_is_the_dynamic_study_config_on_synthetic_data(
        monkeypatch):
    """`bash tools/demo.sh pose` trains the MobileNetV2 x0.5 dy-both model
    on the synthetic set with ground-truth boxes, without the switch."""
    demo = load(DEMO, monkeypatch)
    study = load(STUDY['mobilenetv2-x0.5', 'dy-both'], monkeypatch)
    root = 'data/synthetic_coco_keypoints/'
    assert demo.train_dataloader.dataset.data_root == root
    assert demo.val_dataloader.dataset.bbox_file is None
    assert demo.test_dataloader.dataset.bbox_file is None
    assert demo.val_evaluator.ann_file.startswith(root)
    assert demo.model.head.decoder == demo.codec
    assert demo.codec.input_size == (96, 128)
    for key in ('backbone', 'data_preprocessor', 'test_cfg'):
        assert demo.model[key] == study.model[key], key
    head = {k: v for k, v in demo.model.head.items() if k != 'decoder'}
    assert head == {k: v for k, v in study.model.head.items()
                    if k != 'decoder'}
    assert 'TemperatureAnnealingHook' in hook_types(demo)


# ------------------------------------------------- through the Runner
TINY = """
_base_ = {base!r}
data_root = {data_root!r}
codec = dict(type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(16, 16),
             sigma=2)
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomHalfBody'),
    dict(type='RandomBBoxTransform'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs')
]
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    **loader, dataset=dict(data_root=data_root, pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/person_keypoints_val2017.json')
test_evaluator = val_evaluator
model = dict(head=dict(decoder=codec))
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
default_hooks = dict(logger=dict(interval=1))
"""


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('pose_data')
    data_root = str(root / 'synthetic_coco_keypoints') + '/'
    generate_synthetic_coco(data_root, num_train=2, num_val=2, width=128,
                            height=96, seed=3, preset='keypoints')
    return data_root


def tiny_config(base: Path, data_root: str, where: Path) -> str:
    path = where / f'tiny_{base.stem}.py'
    path.write_text(TINY.format(base=str(base), data_root=data_root))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_family_trains_and_reports_keypoint_ap(family, tiny_data, tmp_path,
                                               monkeypatch):
    from mmpose.evaluation import CocoMetric

    from dynconv_mm.engine import build_runner, load_run_config
    monkeypatch.setenv('DYNCONV_MM_DATA', 'synthetic_coco')
    cfg = load_run_config(
        tiny_config(FAMILIES[family], tiny_data, tmp_path),
        str(tmp_path / 'work'))
    assert cfg.val_dataloader.dataset.bbox_file is None  # the switch
    cfg.experiment_name = f'pose_{family}_{uuid.uuid4().hex[:8]}'
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter >= 1
    assert isinstance(runner.val_evaluator.metrics[0], CocoMetric)
    metrics = runner.val()
    assert 0.0 <= metrics['coco/AP'] <= 1.0
    assert 'coco/AR' in metrics
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))


def run(args, env):
    proc = subprocess.run(args, cwd=str(REPO), capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_mmpose_tools_and_ours_run_a_config(tiny_data, tmp_path):
    """MMPose's own tools/train.py and tools/test.py run our config (the
    plugin loads through custom_imports), and our tools/test.py evaluates
    the checkpoint MMPose's train.py wrote."""
    config = tiny_config(FAMILIES['dy-mobilenetv3-small'], tiny_data,
                         tmp_path)
    work_dir = str(tmp_path / 'work')
    env = dict(DYNCONV_MM_DATA='synthetic_coco')
    out = run([sys.executable, str(MMPOSE_TOOLS / 'train.py'), config,
               '--work-dir', work_dir], env)
    assert 'coco/AP' in out and 'temperature' in out
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    out = run([sys.executable, str(MMPOSE_TOOLS / 'test.py'), config,
               checkpoint, '--work-dir', work_dir], env)
    assert 'Epoch(test)' in out and 'coco/AP' in out
    out = run([sys.executable, 'tools/test.py', config, checkpoint,
               '--work-dir', work_dir], env)
    assert 'Epoch(test)' in out and 'coco/AP' in out
