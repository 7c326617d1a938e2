"""Time the CAT-Seg ViT-B/16 aggregator (random weights) on one view at T classes.

    python tools/analysis/benchmark_aggregator.py [--classes 150] [--runs 3] [--threads 2]

Prints the median seconds of ``--runs`` forward passes (eval mode, float32) and the mean of the
output, so that two revisions (e.g. a ``git worktree`` of the base commit, run with
``PYTHONPATH=<worktree>``) can be compared on the same weights and inputs (seed 0).
"""
import argparse
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregator
from mmseg_escnet.utils import positive_int, run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--classes', type=positive_int, default=150)
    parser.add_argument('--runs', type=positive_int, default=3)
    parser.add_argument('--threads', type=positive_int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    neck = CATSegAggregator(embed_dim=512, prompt_channel=1, pad_len=256).eval()
    img = torch.randn(1, 512, 24, 24)                   # dense CLIP ViT-B/16 features at 384 px
    text = torch.randn(1, args.classes, 1, 512)         # (B, T, P, C)
    seconds = []
    with torch.no_grad():
        neck(img, text, img)  # warm-up
        for _ in range(args.runs):
            start = time.perf_counter()
            out = neck(img, text, img)
            seconds.append(time.perf_counter() - start)
    print(f'{args.classes} classes: {statistics.median(seconds):.3f} s (median of {args.runs}); '
          f'output mean {float(out.cost.abs().mean()):.6f}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/benchmark_aggregator.py'))
