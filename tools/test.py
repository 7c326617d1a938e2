"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out D] [--show-dir D] [--cfg-options ...]``.

CHECKPOINT is a local file, an http(s) URL (downloaded once into a verified cache) or a model-zoo
name such as ``catseg_vitb16`` (see ``model-index.yml``; weights fetched and, if needed, converted
on first use).

Zero-shot on another vocabulary, e.g.
``python tools/test.py configs/catseg_vitb16.py ckpt.pth --cfg-options model.test_vocabulary=ade150``
(the test dataset must have as many classes as the vocabulary).
Multi-GPU: ``tools/dist_test.sh CONFIG CHECKPOINT GPUS``.
"""
import argparse
import sys
from typing import Optional, Sequence

import mmseg_escnet  # registers our modules; main() registers the checkpoint loaders
from mmseg_escnet.engine.launch import (add_common_arguments, check_zoo_checkpoint,
                                        checkpoint_argument, load_config, prepare_distributed,
                                        run_runner, set_local_rank)
from mmseg_escnet.utils import ensure_writable_dir, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) an mmseg_escnet segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', type=checkpoint_argument,
                        help='checkpoint: local file, http(s) URL or model-zoo name')
    parser.add_argument('--out', help='folder to write the predicted label maps to')
    parser.add_argument('--show-dir', help='folder to write visualised predictions to')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    mmseg_escnet.register_checkpoint_loaders()  # zoo://, verified URLs, safe local loading
    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                      launcher=args.launcher)
    check_zoo_checkpoint(cfg, args.checkpoint)
    # outputs are checked before the model is built
    ensure_writable_dir(cfg.work_dir, 'the work dir (logs)')
    for folder, what in ((args.out, '--out'), (args.show_dir, '--show-dir')):
        if folder:
            ensure_writable_dir(folder, what)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        if 'visualization' not in cfg.get('default_hooks', {}):
            raise KeyError('--show-dir needs default_hooks.visualization in the config')
        cfg.default_hooks.visualization.draw = True
        cfg.visualizer.save_dir = args.show_dir
    if args.out:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    cfg = prepare_distributed(cfg)
    run_runner(cfg, 'test')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/test.py'))
