"""Print a config's parameter counts: ``python tools/analysis/count_params.py CONFIG [--by-module]``.

The model is built from the config without loading any weights.
"""
import argparse
from collections import defaultdict

from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_escnet  # noqa: F401
from mmseg.registry import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description='Count the parameters of a config\'s model')
    parser.add_argument('config')
    parser.add_argument('--by-module', action='store_true', help='also list the top-level modules')
    args = parser.parse_args()
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
    main()
