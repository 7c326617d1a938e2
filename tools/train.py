"""Train a segmentor: ``python tools/train.py CONFIG [--work-dir D] [--resume] [--amp] [--cfg-options k=v ...]``.

Multi-GPU / multi-node: ``tools/dist_train.sh CONFIG GPUS`` (torchrun). Without CUDA the same script
trains on CPU processes over gloo.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

from mmengine.logging import print_log

import mmseg_escnet  # registers our modules; main() registers the checkpoint loaders
from mmseg_escnet.engine import find_resume_checkpoint, remove_stale_temporary_files
from mmseg_escnet.engine.launch import (add_common_arguments, check_train_length, enable_amp,
                                        load_config, prepare_distributed, run_runner,
                                        set_local_rank)
from mmseg_escnet.utils import ensure_writable_dir, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an mmseg_escnet segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest readable checkpoint in the work dir '
                        "(without one, start as without --resume: from the config's load_from "
                        'if it has one)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA only)')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    mmseg_escnet.register_checkpoint_loaders()  # load_from, --resume: safe, verified loading
    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                      launcher=args.launcher)
    check_train_length(cfg)
    if os.environ.get('RANK', '0') == '0' and osp.isdir(cfg.work_dir):
        # before anything is written: a save that failed on a full disk may have left its
        # temporary file, which would keep the disk full
        for path in remove_stale_temporary_files(cfg.work_dir):
            print_log(f'removed {path}, left by an interrupted or failed save', logger='current')
    ensure_writable_dir(cfg.work_dir, 'the work dir (checkpoints and logs)')
    if args.amp:
        cfg = enable_amp(cfg)
    cfg.resume = False
    if args.resume:
        # last_checkpoint if readable, else the newest readable checkpoint (with a warning);
        # the config's load_from (a fine-tuning start) is only where a new run starts
        latest = find_resume_checkpoint(cfg.work_dir)
        if latest is not None:
            cfg.load_from, cfg.resume = latest, True
        else:
            start = (f"the config's load_from {cfg.load_from}" if cfg.get('load_from')
                     else 'the start')
            print_log(f'--resume: no checkpoint in {cfg.work_dir}, training from {start}',
                      logger='current')
    cfg = prepare_distributed(cfg)
    run_runner(cfg, 'train')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/train.py'))
