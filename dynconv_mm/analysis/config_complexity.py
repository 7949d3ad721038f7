"""Complexity of the model an MMDetection / MMPose config builds, at a
given input size, without any dataset: what ``tools/analysis/get_flops.py``
runs.

A detector or pose estimator runs its ``mode='tensor'`` forward (backbone,
neck, heads) on one random image of the requested size, after the model's
own data preprocessor (which pads it, e.g. to a multiple of 32). A
two-stage detector's RoI head is counted on exactly
``test_cfg.rpn.max_per_img`` proposals (the RPN's own, truncated, or padded
with whole-image boxes): how many an untrained RPN keeps after NMS on a
random image is arbitrary (from 0 to that maximum), the maximum is what the
config budgets.
With ``imagenet_classifier`` only the config's backbone is counted, with a
global-pool + FC classifier on its last output, as the papers' ImageNet
tables count it.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel, revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings

from .complexity import ComplexityReport, count_complexity
from .imagenet_classifier import ImageNetClassifier

#: Input size ``(H, W)`` when neither the caller nor the config's test
#: pipeline gives one (the papers' ImageNet size).
DEFAULT_SHAPE = (224, 224)


@dataclass
class ConfigComplexity:
    """A :class:`ComplexityReport` and what it was measured on."""

    report: ComplexityReport
    input_shape: Tuple[int, int]  # (H, W) the model saw, after padding
    model_type: str
    notes: Dict[str, Any] = field(default_factory=dict)


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None) -> Config:
    """Read a config (a path, or ``'mmdet::faster_rcnn/....py'`` for one a
    toolbox ships), apply overrides and its ``custom_imports``; import
    ``dynconv_mm`` so that its types are registered either way."""
    import dynconv_mm  # noqa: F401  (registers layers and backbones)
    if isinstance(config, str):
        if '::' in config:  # 'mmdet::faster_rcnn/...py', a package's config
            from mmengine.hub import get_config
            cfg = get_config(config)
        else:
            cfg = Config.fromfile(config)
    else:
        cfg = config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def test_input_shape(cfg: Config) -> Optional[Tuple[int, int]]:
    """``(H, W)`` the config's test pipeline resizes to: mmdet's ``Resize``
    ``scale=(W, H)`` (the long/short edges of a keep-ratio resize, which is
    the size a 4:3-or-wider image is padded around), mmpose's
    ``TopdownAffine`` ``input_size=(W, H)``; ``None`` if neither is there."""
    pipeline = None
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('dataset'):
            pipeline = loader.dataset.get('pipeline')
            if pipeline:
                break
    for step in pipeline or []:
        if step.get('type') == 'Resize' and step.get('scale'):
            width, height = step['scale']
            return int(height), int(width)
        if step.get('type') == 'TopdownAffine' and step.get('input_size'):
            width, height = step['input_size']
            return int(height), int(width)
    return None


def build_model(cfg: Config) -> nn.Module:
    """``cfg.model`` built in the config's default scope, in eval mode, with
    SyncBN replaced by BN (no process group is needed to count). Weights
    stay as constructed: ``init_weights()`` (which may download a
    pretrained checkpoint) is not called; counts do not depend on values."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def _data_sample(scope: str, height: int, width: int):
    """An empty data sample of the toolbox, with the image meta the
    ``tensor`` forward reads."""
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                scale_factor=(1.0, 1.0))
    if scope == 'mmpose':
        from mmpose.structures import PoseDataSample
        meta.update(input_size=(width, height))
        return PoseDataSample(metainfo=meta)
    from mmdet.structures import DetDataSample
    return DetDataSample(metainfo=meta)


def _exactly(results, count: int, height: int, width: int):
    """``results`` (an ``InstanceData`` of proposals) cut or padded to
    ``count`` entries; padding boxes cover the whole image."""
    if len(results) >= count:
        return results[:count]
    missing = count - len(results)
    padding = type(results)(metainfo=results.metainfo)
    for key, value in results.items():
        if not isinstance(value, torch.Tensor):
            return results  # an unknown box type: leave the RPN's own
        filler = value.new_zeros((missing, ) + tuple(value.shape[1:]))
        if key == 'bboxes':
            filler[:] = filler.new_tensor([0, 0, width, height])
        padding[key] = filler
    return results.cat([results, padding])


@contextlib.contextmanager
def _fixed_proposals(model: nn.Module, notes: Dict[str, Any],
                     height: int, width: int) -> Iterator[None]:
    """Make a two-stage detector's RPN hand exactly
    ``test_cfg.rpn.max_per_img`` proposals to the RoI head while counting;
    note how many it produced itself."""
    rpn_head = getattr(model, 'rpn_head', None)
    test_cfg = getattr(rpn_head, 'test_cfg', None) or {}
    count = test_cfg.get('max_per_img')
    if getattr(model, 'roi_head', None) is None or count is None:
        yield
        return
    predict = rpn_head.predict
    produced: List[int] = []

    def fixed_predict(*args, **kwargs):
        results = predict(*args, **kwargs)
        produced.extend(len(r) for r in results)
        return [_exactly(r, count, height, width) for r in results]

    rpn_head.predict = fixed_predict
    try:
        yield
    finally:
        del rpn_head.predict  # the class's method again
        notes['rpn_proposals'] = produced


def _last_channels(backbone: nn.Module) -> int:
    with torch.no_grad():
        outputs = backbone(torch.zeros(1, 3, 64, 64))
    last = outputs if isinstance(outputs, torch.Tensor) else outputs[-1]
    return int(last.shape[1])


def count_config_complexity(config: Union[str, Config],
                            shape: Optional[Tuple[int, int]] = None,
                            *,
                            convention: str = 'paper',
                            strict: bool = True,
                            imagenet_classifier: Optional[int] = None,
                            classifier_hidden: Optional[int] = None,
                            cfg_options: Optional[dict] = None,
                            seed: int = 0) -> ConfigComplexity:
    """Count the model of ``config`` on one image of ``shape`` = (H, W).

    Args:
        config: a config path or :class:`mmengine.config.Config`.
        shape: input ``(H, W)``; default: the test pipeline's resize size,
            else 224x224 (always 224x224 with ``imagenet_classifier``
            unless given).
        convention: dynamic convolutions' counting (``'paper'`` /
            ``'executed'``).
        strict: raise on operators of unknown cost (else list them).
        imagenet_classifier: if a number of classes, count only the
            config's backbone plus a global-pool + FC classifier.
        classifier_hidden: width of a hidden FC in that classifier
            (MobileNetV3's head), or ``None``.
        cfg_options: overrides merged into the config.
        seed: seed of the random image.
    """
    cfg = load_config(config, cfg_options)
    model = build_model(cfg)
    scope = cfg.get('default_scope', 'mmdet')
    torch.manual_seed(seed)
    notes: Dict[str, Any] = {}
    if imagenet_classifier is not None:
        backbone = getattr(model, 'backbone', model)
        wrapped = ImageNetClassifier(backbone, _last_channels(backbone),
                                     imagenet_classifier,
                                     classifier_hidden).eval()
        height, width = shape or DEFAULT_SHAPE
        report = count_complexity(
            wrapped, (3, height, width), convention=convention,
            strict=strict)
        return ConfigComplexity(report, (height, width),
                                type(backbone).__name__, notes)
    height, width = shape or test_input_shape(cfg) or DEFAULT_SHAPE
    if not isinstance(model, BaseModel):  # e.g. a bare backbone config
        report = count_complexity(
            model, (3, height, width), convention=convention, strict=strict)
        return ConfigComplexity(report, (height, width),
                                type(model).__name__, notes)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=[image],
                 data_samples=[_data_sample(scope, height, width)]),
            training=False)
    padded = tuple(int(size) for size in data['inputs'].shape[-2:])
    # Report how many RoIs the RoI head ran on.
    extractor = getattr(getattr(model, 'roi_head', None),
                        'bbox_roi_extractor', None)
    if isinstance(extractor, nn.Module):
        handle = extractor.register_forward_pre_hook(
            lambda module, args: notes.__setitem__('rois',
                                                   int(args[1].shape[0])))

    def forward():
        return model(data['inputs'], data['data_samples'], mode='tensor')

    try:
        with _fixed_proposals(model, notes, *padded):
            report = count_complexity(
                model, forward=forward, convention=convention,
                strict=strict)
    finally:
        if isinstance(extractor, nn.Module):
            handle.remove()
    return ConfigComplexity(report, padded, type(model).__name__, notes)
