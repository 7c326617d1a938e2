"""Evaluate one checkpoint on the six zero-shot benchmarks and print the paper's Table 1 row.

    python tools/eval_all.py configs/escnet_vitl14.py CHECKPOINT
    python tools/eval_all.py configs/escnet_vitl14.py CHECKPOINT --benchmarks a150 pc59
    tools/torchrun.sh tools/eval_all.py 4 configs/escnet_vitl14.py CHECKPOINT  # 4 processes

For ``configs/<model>.py`` it runs ``configs/<model>_<benchmark>.py`` for each benchmark (A-847,
PC-459, A-150, PC-59, PAS-20, PAS-20b), one after the other, each in
``<work-dir>/<benchmark>/``. After every benchmark the results so far are written to
``<work-dir>/eval_all.json``, so an interrupted run loses nothing: ``--resume`` skips the
benchmarks already evaluated with the same checkpoint and config. The file records the
checkpoint's SHA-256 (a local file; a URL or model-zoo name by itself, their downloads are
verified) and the SHA-256 of the merged config: ``--resume`` refuses a file whose results come
from another checkpoint (e.g. another file now at the same path) or config, instead of mixing two
models in one Table 1 row. A benchmark that fails (e.g. its data is not prepared) is reported on
one line and the others still run; the exit status is then 1 (a collective time-out of a
distributed run stops the tool: its process group is broken). Any
other error (a missing config or checkpoint, an unwritable work dir) stops the tool at once with
one line; ``--debug`` shows the tracebacks.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import traceback
from typing import Dict, List, Optional

from mmengine.dist import get_rank
from mmengine.runner import Runner

import mmseg_escnet  # registers our modules; main() registers the checkpoint loaders
from mmseg_escnet.checkpoints.safe_loading import (file_sha256, read_sha256_sidecar,
                                                   verify_checkpoint_integrity)
from mmseg_escnet.engine.launch import (CollectiveTimeoutError, add_common_arguments,
                                        check_zoo_checkpoint, checkpoint_argument,
                                        collective_timeout_message, is_collective_timeout,
                                        load_config, prepare_distributed, quiet_log_file_errors,
                                        set_local_rank, shutdown_distributed)
from mmseg_escnet.utils import ensure_writable_dir, run_cli

BENCHMARKS = dict(a847='A-847', pc459='PC-459', a150='A-150', pc59='PC-59', pas20='PAS-20',
                  pas20b='PAS-20b')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (``--local-rank`` exported as ``LOCAL_RANK``)."""
    parser = argparse.ArgumentParser(description='Zero-shot evaluation on all benchmarks')
    parser.add_argument('config', help='the model config, e.g. configs/escnet_vitl14.py')
    parser.add_argument('checkpoint', type=checkpoint_argument,
                        help='checkpoint: local file, http(s) URL or model-zoo name')
    parser.add_argument('--benchmarks', nargs='+', choices=list(BENCHMARKS),
                        default=list(BENCHMARKS), help='subset to run (default: all six)')
    parser.add_argument('--resume', action='store_true',
                        help='skip benchmarks already in <work-dir>/eval_all.json for this '
                        'checkpoint')
    add_common_arguments(parser)
    if parser.get_default('debug') is None:  # unless the shared arguments already have it
        parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def benchmark_config(config: str, benchmark: str) -> str:
    """``configs/escnet_vitl14.py`` + ``'a847'`` -> ``configs/escnet_vitl14_a847.py`` (must exist)."""
    stem, ext = osp.splitext(config)
    path = f'{stem}_{benchmark}{ext}'
    if not osp.isfile(path):
        raise FileNotFoundError(f'no {BENCHMARKS[benchmark]} config for {config}: expected {path}')
    return path


def evaluate(path: str, args: argparse.Namespace, work_dir: str) -> Dict[str, float]:
    """Run MMEngine's test loop for one benchmark config; returns its metrics."""
    cfg = load_config(path, cfg_options=args.cfg_options, work_dir=work_dir,
                      launcher=args.launcher)
    cfg.load_from = args.checkpoint
    if 'visualizer' in cfg:  # one visualizer instance per benchmark (MMEngine keeps them by name)
        cfg.visualizer.name = f'visualizer_{osp.basename(work_dir)}'
    cfg = prepare_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    try:
        return runner.test()
    finally:
        del runner  # one benchmark's model and loaders are gone before the next is built


def checkpoint_id(checkpoint: str) -> str:
    """``sha256:<hex>`` of a local checkpoint (verified against its sidecar, if any), else the
    URL or ``zoo://`` name itself (their downloads are verified by hash)."""
    if '://' in checkpoint or not osp.isfile(checkpoint):
        return checkpoint
    verify_checkpoint_integrity(checkpoint)
    return 'sha256:' + (read_sha256_sidecar(checkpoint) or file_sha256(checkpoint))


def config_id(args: argparse.Namespace) -> str:
    """``sha256:<hex>`` of the model config merged with ``--cfg-options``."""
    cfg = load_config(args.config, cfg_options=args.cfg_options).to_dict()
    text = json.dumps(cfg, sort_keys=True, default=repr)
    return 'sha256:' + hashlib.sha256(text.encode('utf-8')).hexdigest()


def read_summary(path: str) -> dict:
    """Read ``eval_all.json``.

    Raises:
        ValueError: Naming the file, if it is not a JSON object (a corrupt or foreign file).
    """
    try:
        with open(path, encoding='utf-8') as f:
            summary = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f'{path} is not a readable eval_all summary ({error}); remove it or '
                         'run without --resume to start over') from error
    if not isinstance(summary, dict) or not isinstance(summary.get('results', {}), dict):
        raise ValueError(f'{path} is not an eval_all summary (expected a JSON object with '
                         '"results"); remove it or run without --resume')
    return summary


def check_same_run(previous: dict, summary: dict, path: str) -> None:
    """Refuse to resume from results of another checkpoint or config.

    Raises:
        ValueError: Naming the file, what differs and both values.
    """
    for key, what in (('checkpoint_id', 'checkpoint'), ('config_id', 'config')):
        if previous.get(key) != summary[key]:
            name = 'checkpoint' if key == 'checkpoint_id' else 'config'
            raise ValueError(
                f'{path} holds results of another {what}: {previous.get(name)} '
                f'({previous.get(key) or "no recorded hash"}), this run is {summary[name]} '
                f'({summary[key]}); --resume would mix two models in one row. Use another '
                '--work-dir, or run without --resume to start over')


def format_row(name: str, results: Dict[str, dict]) -> str:
    """Markdown header and row: mIoU per benchmark in Table 1's order ('-' if not run)."""
    header = '| Model | ' + ' | '.join(BENCHMARKS.values()) + ' |'
    rule = '|---|' + '---|' * len(BENCHMARKS)
    cells = [f'{results[b]["mIoU"]:.1f}' if 'mIoU' in results.get(b, {}) else '-'
             for b in BENCHMARKS]
    return '\n'.join([header, rule, f'| {name} | ' + ' | '.join(cells) + ' |'])


def main(argv: Optional[List[str]] = None) -> int:
    """Evaluate every requested benchmark; returns 1 if one of them failed, else 0.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    mmseg_escnet.register_checkpoint_loaders()  # zoo://, verified URLs, safe local loading
    quiet_log_file_errors()
    model = osp.splitext(osp.basename(args.config))[0]
    configs = {b: benchmark_config(args.config, b) for b in args.benchmarks}  # fail early
    check_zoo_checkpoint(load_config(args.config), args.checkpoint)
    work_dir = ensure_writable_dir(args.work_dir or osp.join('work_dirs', f'{model}_eval_all'),
                                   'the work dir (results and logs)')
    summary_path = osp.join(work_dir, 'eval_all.json')
    summary = dict(config=args.config, config_id=config_id(args), checkpoint=args.checkpoint,
                   checkpoint_id=checkpoint_id(args.checkpoint), results={})
    if args.resume and osp.isfile(summary_path):
        previous = read_summary(summary_path)
        check_same_run(previous, summary, summary_path)
        summary['results'] = previous.get('results', {})
    failures = {}
    for benchmark, path in configs.items():
        if 'mIoU' in summary['results'].get(benchmark, {}):
            print(f'{BENCHMARKS[benchmark]}: already evaluated (--resume), skipped')
            continue
        try:
            metrics = evaluate(path, args, osp.join(work_dir, benchmark))
        except Exception as err:  # keep going: report it and evaluate the other benchmarks
            if is_collective_timeout(err):  # the process group is broken: stop
                raise CollectiveTimeoutError(collective_timeout_message(
                    err, load_config(path, cfg_options=args.cfg_options))) from err
            if args.debug:
                traceback.print_exc()
            failures[benchmark] = f'{type(err).__name__}: {" ".join(str(err).split())}'
            continue
        summary['results'][benchmark] = {k: float(v) for k, v in metrics.items()}
        if get_rank() == 0:
            tmp = summary_path + '.tmp'
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(summary, f, indent=2)
            os.replace(tmp, summary_path)
    if get_rank() == 0:
        print(format_row(model, summary['results']))
        for benchmark, message in failures.items():
            hint = '' if args.debug else ' (--debug shows the traceback)'
            print(f'{BENCHMARKS[benchmark]} failed: {message}{hint}', file=sys.stderr)
    shutdown_distributed()
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/eval_all.py'))
