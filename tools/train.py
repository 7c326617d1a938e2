"""Train a segmentor: ``python tools/train.py CONFIG [--work-dir D] [--resume] [--amp] [--cfg-options k=v ...]``.

Multi-GPU / multi-node: ``tools/dist_train.sh CONFIG GPUS`` (torchrun). Without CUDA the same script
trains on CPU processes over gloo.
"""
import argparse

import mmseg_escnet  # noqa: F401  (registers our modules; safe checkpoint loading)
from mmseg_escnet.engine.launch import (add_common_arguments, enable_amp, load_config,
                                        prepare_distributed, run_runner, set_local_rank)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an mmseg_escnet segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA only)')
    add_common_arguments(parser)
    args = parser.parse_args()
    set_local_rank(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                      launcher=args.launcher)
    if args.amp:
        cfg = enable_amp(cfg)
    cfg.resume = args.resume
    cfg = prepare_distributed(cfg)
    run_runner(cfg, 'train')


if __name__ == '__main__':
    main()
