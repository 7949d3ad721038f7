"""Evaluate a checkpoint with the config's test dataloader and metrics.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse

import dynconv_mm  # noqa: F401  (registers layers, hook, safe checkpoints)
from dynconv_mm.engine import (add_runner_arguments, build_runner,
                               config_from_args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='also dump the raw predictions to this '
                        '.pkl file')
    add_runner_arguments(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            parser.error(f'--out must be a .pkl file, got {args.out!r}')
        evaluators = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [
            *evaluators, dict(type='DumpResults', out_file_path=args.out)
        ]
    build_runner(cfg).test()


if __name__ == '__main__':
    main()
