"""Print a config's parameter counts: ``python tools/analysis/count_params.py CONFIG [--by-module]``.

The model is built from the config without loading any weights. Errors are one line on stderr
(``--debug`` shows the traceback).
"""
import argparse
import os.path as osp
import sys
from collections import defaultdict
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_escnet  # noqa: F401
from mmseg.registry import MODELS
from mmseg_escnet.utils import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print the total and trainable parameter counts of the config's model.

    Args:
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description='Count the parameters of a config\'s model')
    parser.add_argument('config', help='model config file, e.g. configs/escnet_vitl14.py')
    parser.add_argument('--by-module', action='store_true', help='also list the top-level modules')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f'total: {total:,} ({total / 1e6:.2f}M)')
    print(f'trainable: {trainable:,} ({trainable / 1e6:.2f}M)')
    if args.by_module:
        counts = defaultdict(lambda: [0, 0])
        for name, p in model.named_parameters():
            counts[name.split('.')[0]][0] += p.numel()
            counts[name.split('.')[0]][1] += p.numel() if p.requires_grad else 0
        for name, (n, t) in counts.items():
            print(f'  {name}: {n:,} (trainable {t:,})')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/count_params.py'))
