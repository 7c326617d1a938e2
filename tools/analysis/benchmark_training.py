"""Measure the time and peak memory of one training step of a config.

``python tools/analysis/benchmark_training.py CONFIG [--vocab coco_stuff171] [--batch-size 1]
[--cfg-options model.neck.class_chunk_size=32 model.neck.with_cp=True ...]``

The model is built with random weights (time and memory do not depend on them; a config that
loads official SAM weights gets randomly initialised SAM blocks instead, the same graph) and runs
one forward and backward pass of its training loss on random images at the CLIP resolution with
random labels over the vocabulary ``--vocab`` (a built-in name, a file or comma-separated names).
Reported, as one markdown table row: the step time and the process's peak resident set size
(CPU) or ``torch.cuda.max_memory_allocated``.

Speed and memory are measured here, not in the test suite; docs/escnet.md lists the results.
Errors are one line on stderr (``--debug`` shows the traceback).
"""
import argparse
import sys
import time
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_escnet  # noqa: F401  (registers our modules)
from benchmark_inference import peak_memory_gb
from mmseg_escnet.utils import run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; ``--batch-size`` must be at least 1."""
    parser = argparse.ArgumentParser(description='Benchmark one training step')
    parser.add_argument('config', help='config file')
    parser.add_argument('--vocab', default='coco_stuff171',
                        help='built-in vocabulary, .txt file or comma-separated names')
    parser.add_argument('--batch-size', type=int, default=1, help='images in the step')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: CUDA if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.neck.class_chunk_size=32')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print the markdown row of the benchmark.

    Args:
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    if cfg.model.neck.get('sam_init') == 'pretrained':
        cfg.model.neck.sam_init = 'random'  # no download: same graph, random SAM weights
    cfg.model.backbone.pretrained = None
    vocab = args.vocab if ',' not in args.vocab else [c.strip() for c in args.vocab.split(',')]
    cfg.model.vocabulary = vocab
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).to(device).train()
    num_classes = model.num_classes
    h, w = model.clip_resolution
    images = torch.randn(args.batch_size, 3, h, w, device=device)
    samples = []
    for _ in range(args.batch_size):
        label = torch.randint(0, num_classes, (1, h, w), device=device)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    start = time.perf_counter()
    losses = model.loss(images, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print('| config | classes | batch | step (s) | peak memory (GB) |')
    print('|---|---|---|---|---|')
    print(f'| {args.config} | {num_classes} | {args.batch_size} | {seconds:.1f} | '
          f'{peak_memory_gb(device):.1f} |')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/benchmark_training.py'))
