"""Measure inference speed and peak memory of a config through :class:`OpenVocabInferencer`.

``python tools/analysis/benchmark_inference.py CONFIG [--vocab ade150] [--size 480 640] [--runs 3]
[--cfg-options model.test_cfg.views_per_batch=1] [--json OUT]``

The model is built with random weights (speed and memory do not depend on them) and segments a
random image of ``--size`` (H W) with the vocabulary ``--vocab`` (a built-in name, a file or
comma-separated names), with the config's own test mode (the paper configs: CAT-Seg's
sliding + global protocol). Reported, as one markdown table row:

- first image: includes encoding the vocabulary's text (cached afterwards);
- per image: the mean over ``--runs`` further images with the cached text;
- peak memory: the process's peak resident set size (CPU) or ``torch.cuda.max_memory_allocated``.

``--json OUT`` writes the row as ``{"config", "classes", "mode", "device", "threads",
"first_image_s", "per_image_s", "peak_memory_gb"}``. Speed and memory are measured here, not in the test suite; docs/inference.md lists the results.
Errors are one line on stderr (``--debug`` shows the traceback).
"""
import argparse
import resource
import sys
import os.path as osp
import time
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config, DictAction

from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.utils import ensure_writable_dir, run_cli, write_json


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; ``--runs`` must be at least 1."""
    parser = argparse.ArgumentParser(description='Benchmark inference speed and memory')
    parser.add_argument('config', help='config file or model-zoo name')
    parser.add_argument('--vocab', default='ade150',
                        help='built-in vocabulary, .txt file or comma-separated names')
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'),
                        help='image size (default 480 640)')
    parser.add_argument('--runs', type=int, default=3, help='timed images after the first')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: CUDA if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.test_cfg.views_per_batch=1')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f'--runs must be at least 1, got {args.runs}')
    return args


def peak_memory_gb(device: str) -> float:
    """Peak memory so far: CUDA allocations, or the process's peak RSS (Linux: KiB)."""
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Print the markdown row of the benchmark.

    Args:
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).

    Returns:
        dict: The results (the ``--json`` keys).
    """
    args = parse_args(argv)
    if args.json:
        ensure_writable_dir(osp.dirname(args.json), '--json')
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = args.vocab if ',' not in args.vocab else [c.strip() for c in args.vocab.split(',')]
    model = args.config
    if args.cfg_options:
        model = Config.fromfile(args.config)
        model.merge_from_dict(args.cfg_options)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "no weights given": random weights are intended here
        inferencer = OpenVocabInferencer(model, vocabulary=vocab, device=args.device)
    device = str(next(inferencer.model.parameters()).device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*args.size, 3), dtype=np.uint8) for _ in range(args.runs + 1)]

    start = time.perf_counter()
    inferencer(images[0])
    first = time.perf_counter() - start
    start = time.perf_counter()
    for image in images[1:]:
        inferencer(image)
    per_image = (time.perf_counter() - start) / args.runs
    settings = inferencer.model.inference_settings
    mode = settings.mode
    if mode == 'sliding_global':
        mode += f' (views_per_batch={settings.views_per_batch})'
    result = dict(config=args.config, classes=len(inferencer.vocabulary), mode=mode,
                  device=device, threads=torch.get_num_threads(), first_image_s=first,
                  per_image_s=per_image, peak_memory_gb=peak_memory_gb(device))
    print('| config | classes | image | mode | device | threads | first image (s) | per image (s) '
          '| peak memory (GB) |')
    print('|---|---|---|---|---|---|---|---|---|')
    print(f'| {args.config} | {result["classes"]} | {args.size[0]}x{args.size[1]} | {mode} '
          f'| {device} | {result["threads"]} | {first:.2f} | {per_image:.2f} '
          f'| {result["peak_memory_gb"]:.2f} |')
    write_json(args.json, result)
    return result


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/benchmark_inference.py'))
