"""Evaluate a checkpoint with the config's test dataloader and metrics.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
        [--allow-partial-load] [--fuse-conv-bn]

A checkpoint that does not fit the config's model (missing or unexpected
keys, other shapes) is refused before anything is evaluated, as is one that
cannot be read; each gives one line naming the file and exits 1.
"""
import argparse
import sys

import dynconv_mm  # noqa: F401  (registers layers, hook, safe checkpoints)
from dynconv_mm.engine import (add_runner_arguments, build_runner,
                               config_from_args)
from dynconv_mm.engine.checkpoint_fit import (CheckpointError,
                                              CheckpointMismatchError,
                                              check_checkpoint_fits,
                                              read_checkpoint_shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='also dump the raw predictions to this '
                        '.pkl file')
    parser.add_argument(
        '--allow-partial-load', action='store_true',
        help='evaluate a checkpoint that does not fit the model: what fits '
        'is loaded, the rest keeps its initial values (a warning names it)')
    parser.add_argument(
        '--fuse-conv-bn', action='store_true',
        help='fold each BatchNorm that follows a conv, dynamic ones included, '
        'into the conv before testing (faster inference; the same function '
        'up to rounding)')
    add_runner_arguments(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.fuse_conv_bn:  # after the checkpoint is loaded, before testing
        cfg.custom_hooks = [*cfg.get('custom_hooks', []),
                            dict(type='FuseConvBNHook')]
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            parser.error(f'--out must be a .pkl file, got {args.out!r}')
        evaluators = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [
            *evaluators, dict(type='DumpResults', out_file_path=args.out)
        ]
    try:
        # read before the Runner is built, so a bad file fails at once
        shapes = read_checkpoint_shapes(args.checkpoint)
        runner = build_runner(cfg)
        check_checkpoint_fits(runner.model, args.checkpoint,
                              args.allow_partial_load, shapes)
    except CheckpointMismatchError as error:
        sys.exit(f'{parser.prog}: error: {error}; --allow-partial-load '
                 'evaluates it anyway')
    except CheckpointError as error:
        sys.exit(f'{parser.prog}: error: {error}')
    runner.test()


if __name__ == '__main__':
    with dynconv_mm.engine.distributed_teardown():  # clean exit, every rank
        main()
