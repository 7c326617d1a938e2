"""Cost against vocabulary size: GMACs, CPU latency and peak memory of configs, side by side.

``python tools/analysis/benchmark_vocabulary.py CONFIG [CONFIG ...] --out-dir DIR
[--num-classes 20 59 150 459 847] [--size 480 640] [--runs 1] [--threads N] [--no-latency]
[--cfg-options ...] [--cfg-options-of CONFIG ...] [--random-text] [--resume]``, or
``--from-json DIR/vocabulary_sweep.json --out-dir DIR`` to redraw the table and plot of an earlier
sweep without measuring again.

For every config and vocabulary size N (the first N classes of ADE20K-847, so the prompts have
real lengths):

- GMACs of the image path (and of the text tower, once per vocabulary) from
  ``tools/analysis/get_flops.py``, on shapes only;
- unless ``--no-latency``: seconds per image (text cached) and peak memory from
  ``tools/analysis/benchmark_inference.py``, each point in its own process so that its peak
  resident memory is its own. The points run one after the other, on the same machine, so the
  ratios between configs are measured in one run.

Written to ``--out-dir``: ``vocabulary_sweep.json`` (every number), ``vocabulary_sweep.md`` (a
markdown table with the ratio of every config to the first) and ``vocabulary_sweep.png`` (cost
against the number of classes, one line per config). ``--cfg-options`` applies to every config
(e.g. ``model.test_cfg.mode=whole``), ``--cfg-options-of CONFIG KEY=VALUE ...`` to one config only
(e.g. SED without its data-dependent early rejection, which the GMACs cannot count); ``--random-text``
times the image path with random class embeddings (see benchmark_inference.py). The JSON file is rewritten after every point, and
``--resume`` measures only the points it does not hold yet, so an interrupted sweep loses
nothing.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config, DictAction

from mmseg_escnet.text import Vocabulary
from mmseg_escnet.utils import ensure_writable_dir, run_cli, write_json

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
import get_flops  # noqa: E402  (the counter of this folder)

#: (key, column title, format) of the reported quantities
QUANTITIES = (('gmacs', 'GMACs', '{:.1f}'), ('official_gmacs', 'official GMACs', '{:.1f}'),
              ('per_image_s', 's / image', '{:.2f}'),
              ('peak_memory_gb', 'peak memory (GB)', '{:.2f}'))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; vocabulary sizes must be within 1..847."""
    parser = argparse.ArgumentParser(description='Cost against vocabulary size')
    parser.add_argument('configs', nargs='*', help='config files (the first is the baseline)')
    parser.add_argument('--from-json', help='redraw an earlier sweep from its JSON file')
    parser.add_argument('--out-dir', required=True, help='folder for the table, JSON and plot')
    parser.add_argument('--num-classes', type=int, nargs='+', default=[20, 59, 150, 459, 847])
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'),
                        help='image size for the latency (default 480 640)')
    parser.add_argument('--runs', type=int, default=1, help='timed images per point')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--no-latency', action='store_true', help='count GMACs only')
    parser.add_argument('--resume', action='store_true',
                        help='keep the points already in --out-dir and measure the others')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys of every config')
    parser.add_argument('--cfg-options-of', nargs='+', action='append', default=[],
                        metavar='CONFIG KEY=VALUE',
                        help='override config keys of one of the configs (after --cfg-options), '
                             'e.g. --cfg-options-of configs/sed_convnext_base.py '
                             'model.test_cfg.class_filter=None; may be repeated')
    parser.add_argument('--random-text', action='store_true',
                        help='latency with random class embeddings (benchmark_inference.py)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if bool(args.configs) == bool(args.from_json):
        parser.error('give either configs to measure or --from-json, not both')
    if args.from_json and not osp.isfile(args.from_json):
        parser.error(f'--from-json: file not found: {args.from_json}')
    for n in args.num_classes:
        if not 1 <= n <= 847:
            parser.error(f'--num-classes must be within 1..847 (ADE20K-847 names), got {n}')
    for config in args.configs:
        if not osp.isfile(config):
            parser.error(f'config file not found: {config}')
    options_of = {}
    for words in args.cfg_options_of:
        if words[0] not in args.configs or len(words) < 2:
            parser.error(f'--cfg-options-of takes one of the configs and KEY=VALUE pairs, got '
                         f'{words}')
        one = argparse.ArgumentParser()
        one.add_argument('--o', nargs='+', action=DictAction)
        options_of.setdefault(words[0], {}).update(one.parse_args(['--o', *words[1:]]).o)
    args.cfg_options_of = options_of
    return args


def config_options(args: argparse.Namespace, config: str) -> dict:
    """The overrides of ``config``: ``--cfg-options``, then its ``--cfg-options-of``."""
    return {**args.cfg_options, **args.cfg_options_of.get(config, {})}


def _options(cfg_options: dict) -> List[str]:
    """``--cfg-options`` back to command-line words."""
    if not cfg_options:
        return []
    return ['--cfg-options'] + [f'{key}={value!r}' if isinstance(value, str) else
                                f'{key}={value}' for key, value in cfg_options.items()]


def _latency(config: str, vocabulary_file: str, args: argparse.Namespace) -> dict:
    """Run one benchmark_inference point in its own process; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'point.json')
        command = [sys.executable, osp.join(HERE, 'benchmark_inference.py'), config, '--vocab',
                   vocabulary_file, '--size', *map(str, args.size), '--runs', str(args.runs),
                   '--device', 'cpu', '--json', out] + _options(config_options(args, config))
        if args.random_text:
            command.append('--random-text')
        if args.threads:
            command += ['--threads', str(args.threads)]
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f'benchmark of {config} failed: {finished.stderr.strip()[-500:]}')
        with open(out, encoding='utf-8') as f:
            return json.load(f)


def sweep(args: argparse.Namespace, json_path: str, command: str) -> List[dict]:
    """Every (config, N) point: GMACs, and latency and memory unless ``--no-latency``.

    The points so far are written to ``json_path`` after each one; ``--resume`` keeps the points
    of that file (same config and N) and measures only the others.
    """
    # whole entries (synonyms too): ADE20K-847 has distinct classes with the same first name
    entries = [', '.join(s) for s in Vocabulary(classes='ade847').all_synonyms]
    points = []
    if args.resume and osp.isfile(json_path):
        with open(json_path, encoding='utf-8') as f:
            points = json.load(f)['points']
    done = {(p['config'], p['num_classes']) for p in points}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.num_classes:
            vocabulary_file = osp.join(tmp, f'first_{n}.txt')
            with open(vocabulary_file, 'w', encoding='utf-8') as f:
                f.write('\n'.join(entries[:n]) + '\n')
            for config in args.configs:
                if (config, n) in done:
                    continue
                cfg = Config.fromfile(config)
                cfg.merge_from_dict(config_options(args, config))
                counts = get_flops.count(cfg, n)
                point = dict(config=config, num_classes=n, params=counts['params'],
                             views=counts['views'], gmacs=counts['gmacs'],
                             official_gmacs=counts['official_gmacs'],
                             text_gmacs=counts['text_gmacs'])
                if not args.no_latency:
                    timing = _latency(config, vocabulary_file, args)
                    point.update(per_image_s=timing['per_image_s'],
                                 first_image_s=timing['first_image_s'],
                                 peak_memory_gb=timing['peak_memory_gb'],
                                 threads=timing['threads'], mode=timing['mode'])
                print(json.dumps(point), flush=True)
                points.append(point)
                write_json(json_path, dict(command=command, points=points))
    return points


def table(points: List[dict], configs: Sequence[str]) -> str:
    """Markdown: one row per vocabulary size, each quantity per config and its ratio to the
    first config."""
    keys = [q for q in QUANTITIES if q[0] in points[0]]
    by = {(p['config'], p['num_classes']): p for p in points}
    short = [osp.splitext(osp.basename(c))[0] for c in configs]
    header = ['classes']
    for key, title, _ in keys:
        header += [f'{title}: {s}' for s in short]
        header += [f'{title}: {s} / {short[0]}' for s in short[1:]]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for n in sorted({p['num_classes'] for p in points}):
        row = [str(n)]
        for key, _, fmt in keys:
            values = [by[(c, n)][key] for c in configs]
            row += [fmt.format(v) for v in values]
            row += [f'{v / values[0]:.2f}x' for v in values[1:]]
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines) + '\n'


def plot(points: List[dict], configs: Sequence[str], path: str) -> None:
    """One panel per quantity, cost against the number of classes, one line per config."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [q for q in QUANTITIES if q[0] in points[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, (key, title, _) in zip(axes[0], keys):
        for config in configs:
            mine = sorted((p['num_classes'], p[key]) for p in points if p['config'] == config)
            ax.plot(*zip(*mine), marker='o', label=osp.splitext(osp.basename(config))[0])
        ax.set_xlabel('classes in the vocabulary')
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the sweep and write its files; returns their paths."""
    args = parse_args(argv)
    ensure_writable_dir(args.out_dir, '--out-dir')
    paths = {ext: osp.join(args.out_dir, f'vocabulary_sweep.{ext}') for ext in ('json', 'md',
                                                                              'png')}
    if args.from_json:
        with open(args.from_json, encoding='utf-8') as f:
            recorded = json.load(f)
        command, points = recorded['command'], recorded['points']
        args.configs = list(dict.fromkeys(p['config'] for p in points))
    else:
        command = ' '.join(['python'] + sys.argv)
        points = sweep(args, paths['json'], command)
    write_json(paths['json'], dict(command=command, points=points))
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(table(points, args.configs))
    plot(points, args.configs, paths['png'])
    print(open(paths['md'], encoding='utf-8').read())
    print('written: ' + ', '.join(paths.values()))
    return paths


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/benchmark_vocabulary.py'))
