"""OpenMMLab glue for the engine: hooks, checkpoint loading, runner setup."""
from .checkpoint import (allow_mmengine_checkpoint_globals,
                         mmengine_checkpoint_globals)
from .fuse_conv_bn import FuseConvBNHook, fuse_conv_bn
from .runner_config import (add_runner_arguments, build_runner,
                            config_from_args, distributed_teardown,
                            enable_amp, load_run_config, set_resume)
from .temperature_annealing_hook import TemperatureAnnealingHook

__all__ = [
    'allow_mmengine_checkpoint_globals', 'mmengine_checkpoint_globals',
    'add_runner_arguments', 'build_runner', 'config_from_args',
    'distributed_teardown', 'enable_amp', 'load_run_config', 'set_resume',
    'TemperatureAnnealingHook', 'FuseConvBNHook', 'fuse_conv_bn'
]
