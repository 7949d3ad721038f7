"""Linear annealing of the attention temperature, per iteration."""
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..layers import DynamicAttention
from ..layers.options import check_int, check_positive

_OWNER = 'TemperatureAnnealingHook'


@HOOKS.register_module()
class TemperatureAnnealingHook(Hook):
    """Anneal every dynamic attention's temperature linearly per iteration.

    Dynamic Convolution (Chen et al. 2020) and ODConv (Li et al. 2022) train
    with ``tau`` decayed linearly from 30 to 1 over the first 10 epochs;
    afterwards it stays at ``end``. The value is computed from
    ``runner.iter`` before every training iteration, so a resumed run
    continues the schedule where it stopped; it acts on the unwrapped model
    (DDP included). The current value is logged as ``temperature``.

    Enable with ``custom_hooks=[dict(type='TemperatureAnnealingHook')]``.

    Args:
        start: temperature at iteration 0.
        end: temperature from the end of the annealing on.
        epochs: anneal over this many epochs of the train dataloader ...
        iters: ... or over this many iterations (give exactly one).
    """

    priority = 'NORMAL'

    def __init__(self,
                 start: float = 30.0,
                 end: float = 1.0,
                 epochs: Optional[int] = 10,
                 iters: Optional[int] = None) -> None:
        self.start = check_positive(_OWNER, 'start', start)
        self.end = check_positive(_OWNER, 'end', end)
        if (epochs is None) == (iters is None):
            raise ValueError(f'{_OWNER}: give exactly one of epochs and '
                             f'iters, got epochs={epochs!r}, iters={iters!r}')
        self.epochs = None if epochs is None else check_int(
            _OWNER, 'epochs', epochs, 1)
        self.iters = None if iters is None else check_int(
            _OWNER, 'iters', iters, 1)
        self._attentions: List[DynamicAttention] = []
        self._anneal_iters = 0

    def temperature_at(self, iteration: int) -> float:
        """The temperature of 0-based training iteration ``iteration``."""
        progress = min(iteration / self._anneal_iters, 1.0)
        return self.start + (self.end - self.start) * progress

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
        self._anneal_iters = self.iters if self.iters is not None else (
            self.epochs * len(runner.train_dataloader))
        self._set(self.temperature_at(runner.iter))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        value = self.temperature_at(runner.iter)
        self._set(value)
        runner.message_hub.update_scalar('train/temperature', value)

    def _set(self, value: float) -> None:
        for attention in self._attentions:
            attention.set_temperature(value)
