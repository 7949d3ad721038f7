"""Linear annealing of the attention temperature, per iteration."""
import math
from typing import List, Optional

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from ..layers import DynamicAttention
from ..layers.options import check_int, check_positive

_OWNER = 'TemperatureAnnealingHook'
DEFAULT_EPOCHS = 10


@HOOKS.register_module()
class TemperatureAnnealingHook(Hook):
    """Anneal every dynamic attention's temperature linearly per iteration.

    Dynamic Convolution (Chen et al. 2020) and ODConv (Li et al. 2022) train
    with ``tau`` decayed linearly from 30 to 1 over the first 10 epochs;
    afterwards it stays at ``end``. The value is computed from
    ``runner.iter`` before every training iteration and acts on the
    unwrapped model (DDP included). The current value is logged as
    ``temperature``.

    The length of the annealing is fixed once per run, in iterations, at
    the start of its first training: ``iters``, or ``epochs`` times the
    iterations of one epoch (the train loop's ``len(train_dataloader)`` when
    it is epoch-based; otherwise, e.g. under ``IterBasedTrainLoop`` with an
    infinite sampler, one pass over the dataset by all processes:
    ``ceil(len(dataset) / (world_size * batch_size))``). It is stored in the
    message hub's runtime info, which goes into every checkpoint, so a
    resumed run continues exactly the same schedule even with another batch
    size or number of processes (a different value it would compute is
    logged, not used). Loading weights with ``load_from`` without resuming
    starts a new schedule.

    Enable with ``custom_hooks=[dict(type='TemperatureAnnealingHook')]``.

    Args:
        start: temperature at iteration 0.
        end: temperature from the end of the annealing on.
        epochs: anneal over this many epochs ...
        iters: ... or over this many iterations. Give at most one; with
            neither, the papers' 10 epochs.
    """

    priority = 'NORMAL'
    #: message hub runtime-info key of the run's annealing length
    INFO_KEY = 'temperature_annealing_iters'

    def __init__(self,
                 start: float = 30.0,
                 end: float = 1.0,
                 epochs: Optional[int] = None,
                 iters: Optional[int] = None) -> None:
        self.start = check_positive(_OWNER, 'start', start)
        self.end = check_positive(_OWNER, 'end', end)
        if epochs is not None and iters is not None:
            raise ValueError(f'{_OWNER}: give epochs or iters, not both; got '
                             f'epochs={epochs!r}, iters={iters!r}')
        if epochs is None and iters is None:
            epochs = DEFAULT_EPOCHS
        self.epochs = None if epochs is None else check_int(
            _OWNER, 'epochs', epochs, 1)
        self.iters = None if iters is None else check_int(
            _OWNER, 'iters', iters, 1)
        self._attentions: List[DynamicAttention] = []
        self._anneal_iters: Optional[int] = None

    @property
    def anneal_iters(self) -> int:
        """Iterations over which this run anneals (known from the start of
        training on)."""
        if self._anneal_iters is None:
            raise RuntimeError(f'{_OWNER}: the annealing length is known '
                               'once training has started')
        return self._anneal_iters

    def temperature_at(self, iteration: int) -> float:
        """The temperature of 0-based training iteration ``iteration``."""
        progress = min(iteration / self.anneal_iters, 1.0)
        return self.start + (self.end - self.start) * progress

    def iters_per_epoch(self, runner) -> int:
        """Training iterations of one epoch of ``runner``'s train loop."""
        dataloader = runner.train_dataloader
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return len(dataloader)
        # An infinite sampler's len() is the whole dataset whatever the
        # number of processes; an epoch is one pass over it by all of them.
        batch_size = dataloader.batch_size
        if batch_size is None:  # a batch sampler decides the batches
            batch_size = getattr(dataloader.batch_sampler, 'batch_size',
                                 None)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f'{_OWNER}: cannot tell the batch size of the train '
                f'dataloader (got {batch_size!r}) to count epochs='
                f'{self.epochs} in iterations; give iters instead')
        return math.ceil(
            len(dataloader.dataset) / (get_world_size() * batch_size))

    def _planned_iters(self, runner) -> int:
        if self.iters is not None:
            return self.iters
        return self.epochs * self.iters_per_epoch(runner)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self._attentions = [
            m for m in model.modules() if isinstance(m, DynamicAttention)
        ]
        if not self._attentions:
            raise RuntimeError(
                f'{_OWNER}: the model has no dynamic convolution attention '
                '(DynamicConv, ODConv, DyNetConv) whose temperature could be '
                'annealed; remove the hook or use a dynamic conv_cfg')
        planned = self._planned_iters(runner)
        # A resumed run finds the length its first start fixed (restored
        # with the message hub); a run at iteration 0 starts a new schedule
        # whatever a message hub of the same name still holds.
        stored = (runner.message_hub.get_info(self.INFO_KEY)
                  if runner.iter > 0 else None)
        if stored is None:
            self._anneal_iters = planned
            runner.message_hub.update_info(self.INFO_KEY, planned)
        else:
            self._anneal_iters = check_int(_OWNER, self.INFO_KEY, stored, 1)
            if stored != planned:
                print_log(
                    f'{_OWNER}: continuing the resumed schedule of {stored} '
                    f'annealing iterations (this configuration alone would '
                    f'give {planned})', logger='current')
        self._set(self.temperature_at(runner.iter))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        value = self.temperature_at(runner.iter)
        self._set(value)
        runner.message_hub.update_scalar('train/temperature', value)

    def _set(self, value: float) -> None:
        for attention in self._attentions:
            attention.set_temperature(value)
