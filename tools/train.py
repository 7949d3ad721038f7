"""Train a model from an MMDetection/MMPose config with dynconv_mm loaded.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse

import dynconv_mm  # noqa: F401  (registers layers, hook, safe checkpoints)
from dynconv_mm.engine import (add_runner_arguments, build_runner,
                               config_from_args, distributed_teardown,
                               enable_amp, set_resume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CKPT',
        help='resume from CKPT, or from the latest checkpoint in the work '
        'dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (GPU)')
    add_runner_arguments(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    build_runner(cfg).train()


if __name__ == '__main__':
    with distributed_teardown():  # a clean exit for every rank
        main()
