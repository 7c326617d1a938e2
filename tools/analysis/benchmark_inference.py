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
"first_image_s", "per_image_s", "peak_memory_gb", "package"}``.

``--random-text`` gives the model random unit vectors as class embeddings instead of encoding the
vocabulary (the image path's cost depends on the number of classes and prompts, which are kept, not
on their values, except with class filters that keep a text-dependent number of classes:
``pixel_topk`` and ``sed_cer`` are refused): for models whose text encoding alone takes minutes on a
CPU (SED: 80 templates per class); the first image then excludes the text encoding.

``--profile N`` runs ``torch.profiler`` on one more image and prints its N operators with the most
self CPU time. ``--base REV`` times the same benchmark at git revision ``REV`` too: the revision is checked out in
a temporary ``git worktree``, and each side runs in its own process (``PYTHONPATH`` = the worktree
for the base, the base's own config file, both in this tree's folder, whose ``data/`` they share),
alternating ``--rounds`` times; the table gives the
median per-image time and the largest peak of each side and their ratio. Speed and memory are measured here, not in the test suite; docs/inference.md lists the results.
Errors are one line on stderr (``--debug`` shows the traceback).
"""
import argparse
import json
import os
import os.path as osp
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from mmengine.config import DictAction

import mmseg_escnet
from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.apis.model_args import resolve_model
from mmseg_escnet.utils import ensure_writable_dir, run_cli, write_json

PROG = 'tools/analysis/benchmark_inference.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; ``--runs`` must be at least 1."""
    parser = argparse.ArgumentParser(description='Benchmark inference speed and memory')
    parser.add_argument('config', help='config file, model-zoo name or published model folder '
                        '(DIR/)')
    parser.add_argument('--vocab', default='ade150',
                        help='built-in vocabulary, .txt file or comma-separated names')
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'),
                        help='image size (default 480 640)')
    parser.add_argument('--runs', type=int, default=3, help='timed images after the first')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: CUDA if any)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.test_cfg.views_per_batch=1')
    parser.add_argument('--base', metavar='REV',
                        help='also time this config at git revision REV (a temporary worktree)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='with --base: alternated runs of each side (default 1)')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='profile one more image and print its N most expensive operators')
    parser.add_argument('--random-text', action='store_true',
                        help='random class embeddings instead of encoding the vocabulary')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f'--runs must be at least 1, got {args.runs}')
    if args.rounds < 1:
        parser.error(f'--rounds must be at least 1, got {args.rounds}')
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
    if args.base:
        return compare_with_base(args, list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = args.vocab if ',' not in args.vocab else [c.strip() for c in args.vocab.split(',')]
    model = args.config
    if args.cfg_options:  # the config of a file, zoo name or model folder (random weights here)
        model, _ = resolve_model(args.config, None)
        model.merge_from_dict(args.cfg_options)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "no weights given": random weights are intended here
        inferencer = OpenVocabInferencer(model, vocabulary=vocab, device=args.device)
    device = str(next(inferencer.model.parameters()).device)
    if args.random_text:
        rule = inferencer.model.inference_settings.class_filter
        if rule is not None and rule.type in TEXT_DEPENDENT_FILTERS:
            raise ValueError(f'--random-text: class_filter {rule.type!r} keeps a number of '
                             'classes that depends on the class embeddings; measure it with the '
                             'real text, or without the filter (--cfg-options '
                             'model.test_cfg.class_filter=None)')
        use_random_text(inferencer.model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*args.size, 3), dtype=np.uint8) for _ in range(args.runs + 1)]

    start = time.perf_counter()
    inferencer(images[0])
    first = time.perf_counter() - start
    start = time.perf_counter()
    for image in images[1:]:
        inferencer(image)
    per_image = (time.perf_counter() - start) / args.runs
    if args.profile > 0:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            inferencer(images[-1])
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=args.profile))
    settings = inferencer.model.inference_settings
    mode = settings.mode
    if mode == 'sliding_global':
        mode += f' (views_per_batch={settings.views_per_batch})'
    result = dict(config=args.config, classes=len(inferencer.vocabulary), mode=mode,
                  device=device, threads=torch.get_num_threads(), first_image_s=first,
                  per_image_s=per_image, peak_memory_gb=peak_memory_gb(device),
                  package=osp.dirname(osp.abspath(mmseg_escnet.__file__)))
    print('| config | classes | image | mode | device | threads | first image (s) | per image (s) '
          '| peak memory (GB) |')
    print('|---|---|---|---|---|---|---|---|---|')
    print(f'| {args.config} | {result["classes"]} | {args.size[0]}x{args.size[1]} | {mode} '
          f'| {device} | {result["threads"]} | {first:.2f} | {per_image:.2f} '
          f'| {result["peak_memory_gb"]:.2f} |')
    write_json(args.json, result)
    return result


def use_random_text(model: torch.nn.Module) -> torch.Tensor:
    """Make ``model`` use fixed random unit vectors (T, P, C) as its test vocabulary's class
    embeddings (T classes, P prompts per class, C the CLIP width); returns them."""
    vocabulary = model.test_text.vocabulary
    shape = (len(vocabulary), vocabulary.num_prompts, model.backbone.embed_dim)
    generator = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(shape, generator=generator), dim=-1)
    text = text.to(next(model.parameters()).device)
    model.text_embeddings = lambda: text  # the segmentor's one source of class embeddings
    return text


#: Class filters that keep a number of classes that depends on the text (refused with
#: ``--random-text``: random embeddings would time another amount of work).
TEXT_DEPENDENT_FILTERS = ('pixel_topk', 'sed_cer')


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _without(argv: list, option: str, takes_value: bool) -> list:
    """``argv`` without ``option`` (and its value)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == option:
            skip = takes_value
        elif not arg.startswith(option + '='):
            out.append(arg)
    return out


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: unwind (so the worktree is removed), then exit with 128 + the signal number."""
    print(f'{PROG}: stopped by signal {signum}; removing the temporary worktree',
          file=sys.stderr)
    raise SystemExit(128 + signum)


def _forget_worktree(tree: str) -> None:
    """Remove git's record of the worktree at ``tree`` (and only that one), e.g. one that a
    ``git worktree add`` interrupted halfway left locked and half-made."""
    common = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--git-common-dir'],
                            capture_output=True, text=True).stdout.strip()
    admin = osp.join(ROOT, common, 'worktrees') if common else ''
    for name in os.listdir(admin) if osp.isdir(admin) else []:
        try:
            with open(osp.join(admin, name, 'gitdir'), encoding='utf-8') as f:
                points_to = f.read().strip()
        except OSError:
            continue
        if osp.realpath(osp.dirname(points_to)) == osp.realpath(tree):
            shutil.rmtree(osp.join(admin, name), ignore_errors=True)


@contextmanager
def _temporary_worktree(rev: str) -> Iterator[str]:
    """A detached git worktree of ``rev`` in a temporary folder, removed afterwards: also after
    Ctrl-C, SIGTERM (a scheduler's time limit, ``kill``) or a ``git worktree add`` interrupted
    halfway (which leaves a locked, half-made worktree). The cleanup itself ignores further
    Ctrl-C and SIGTERM, and touches no other worktree. (SIGKILL leaves it for
    ``git worktree prune``.)"""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _interrupt)
    folder = tempfile.mkdtemp(prefix='benchmark_base_')
    tree = osp.join(folder, 'base')
    try:
        subprocess.run(['git', '-C', ROOT, 'worktree', 'add', '--detach', '-q', tree, rev],
                       check=True)
        yield tree
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for command in (['unlock', tree], ['remove', '--force', tree]):
            subprocess.run(['git', '-C', ROOT, 'worktree', *command], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)
        _forget_worktree(tree)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def compare_with_base(args: argparse.Namespace, argv: list) -> dict:
    """Time the benchmark at this tree and at ``args.base`` (a temporary git worktree),
    alternating ``args.rounds`` times, each run in its own process."""
    rev = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--verify', f'{args.base}^{{commit}}'],
                         capture_output=True, text=True)
    if rev.returncode != 0:
        raise ValueError(f'--base {args.base!r} is not a git revision of {ROOT}')
    argv = _without(_without(_without(argv, '--base', True), '--rounds', True), '--json', True)
    relative = osp.relpath(osp.abspath(args.config), ROOT)
    results = {'this tree': [], args.base: []}
    with tempfile.TemporaryDirectory() as tmp, _temporary_worktree(rev.stdout.strip()) as tree:
        # the base runs its own package and config; a zoo name is passed through
        base_config = (osp.join(tree, relative) if osp.isfile(args.config)
                       and not relative.startswith('..') else args.config)
        sides = {'this tree': (ROOT, argv),
                 args.base: (tree, [base_config if a == args.config else a for a in argv])}
        for _ in range(args.rounds):
            for name, (path, side_argv) in sides.items():
                out = osp.join(tmp, 'result.json')
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [path] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
                              if p]))
                # both run in this tree's folder: data/ (not versioned) is shared
                subprocess.run([sys.executable, osp.abspath(__file__), *side_argv, '--json',
                                out], check=True, env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL)
                with open(out) as f:
                    result = json.load(f)
                if osp.realpath(result['package']) != osp.realpath(
                        osp.join(path, 'mmseg_escnet')):
                    raise RuntimeError(f'{name} imported mmseg_escnet from '
                                       f'{result["package"]}, not from {path}')
                results[name].append(result)
    summary = {name: dict(per_image_s=statistics.median(r['per_image_s'] for r in runs),
                          peak_memory_gb=max(r['peak_memory_gb'] for r in runs),
                          runs=[r['per_image_s'] for r in runs])
               for name, runs in results.items()}
    this, base = summary['this tree'], summary[args.base]
    speedup = base['per_image_s'] / this['per_image_s']
    first = results['this tree'][0]
    print(f'{args.config}, {first["classes"]} classes, {first["mode"]}, {first["device"]}, '
          f'{first["threads"]} threads, median of {args.rounds} alternated rounds')
    print('| revision | per image (s) | peak memory (GB) |')
    print('|---|---|---|')
    for name, row in summary.items():
        print(f'| {name} | {row["per_image_s"]:.2f} | {row["peak_memory_gb"]:.2f} |')
    print(f'faster by {speedup:.2f}x, peak memory {this["peak_memory_gb"] / base["peak_memory_gb"]:.2f}x')
    comparison = dict(config=args.config, base=args.base, sides=summary, speedup=speedup)
    write_json(args.json, comparison)
    return comparison


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
