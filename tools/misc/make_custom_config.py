"""Write a ready config for your own data: zero-shot evaluation or fine-tuning of a zoo model.

Your folder (images, PNG masks, a classes file)::

    python tools/misc/make_custom_config.py --data-root DIR --classes classes.txt \\
        --model catseg_vitb16 [--fine-tune] --out configs/my_data.py
    python tools/test.py configs/my_data.py zoo://catseg_vitb16       # zero-shot
    tools/dist_train.sh configs/my_data.py 4                          # --fine-tune

Any dataset type of MMSegmentation, zero-shot, its class names as the vocabulary::

    python tools/misc/make_custom_config.py --mmseg-dataset cityscapes \\
        --data-root data/cityscapes --model catseg_vitb16 --out configs/cityscapes_zs.py

The config inherits (``_base_``, relative to its own folder) the model's config and the model's
own zero-shot protocol (``configs/_base_/benchmarks/``; ``--protocol config`` keeps the test
pipeline and ``test_cfg`` of a config given as ``--model``). The folder is checked first (one
error listing every problem, nothing written); nothing is ever written into the data folder:
split lists and the classes file of ``--mmseg-dataset`` go next to the config. Errors are one
line (``--debug`` shows the traceback).
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.registry import init_default_scope

import mmseg_escnet  # noqa: F401  (registers the dataset types)
from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
from mmseg_escnet.datasets.custom_folder import CustomFolderDataset
from mmseg_escnet.datasets.folder_check import (FolderProblemsError, pairing_problems,
                                                scan_folder)
from mmseg_escnet.engine.custom_config import (BENCHMARKS, DEFAULT_SEC_PER_ITER, PROTOCOLS,
                                               SEC_PER_ITER, Expr, Folder, assign,
                                               detect_folder, plan_schedule, py,
                                               relative_bases, resolve_model, scaled_schedulers,
                                               split_stems, write_lines)
from mmseg_escnet.engine.mmseg_datasets import mmseg_dataset, prompt_problems
from mmseg_escnet.utils import positive_int, run_cli

PROG = 'tools/misc/make_custom_config.py'


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write a config for your own data or an '
                                     'MMSegmentation dataset (zero-shot or fine-tuning)')
    parser.add_argument('--data-root', required=True, help='the dataset folder')
    parser.add_argument('--classes', help='classes file: one class per line, synonyms '
                        'comma-separated (your folder; not with --mmseg-dataset)')
    parser.add_argument('--mmseg-dataset', help='a dataset of mmseg instead, e.g. cityscapes, '
                        'CityscapesDataset, loveda, isaid, mapillary_v1 (zero-shot)')
    parser.add_argument('--model', required=True, help='a model-zoo name (catseg_vitb16, ...) '
                        'or a config file')
    parser.add_argument('--out', required=True, help='the config to write (.py)')
    parser.add_argument('--fine-tune', action='store_true', help='a fine-tuning config '
                        '(default: zero-shot evaluation)')
    parser.add_argument('--checkpoint', help='fine-tuning start (default: zoo://MODEL)')
    parser.add_argument('--protocol', choices=['auto', 'paper', 'config'], default='auto',
                        help="test pipeline and test_cfg: 'paper' (the family's zero-shot "
                        "protocol), 'config' (the model config's own); auto: paper for "
                        'model-zoo models')
    parser.add_argument('--layout', choices=['mmseg', 'flat'], help='default: detected')
    parser.add_argument('--split', help='mmseg layout, zero-shot: the split to evaluate '
                        '(default: val, or the only one)')
    parser.add_argument('--img-suffix', help='default: detected, e.g. .jpg')
    parser.add_argument('--seg-suffix', help='mask suffix (default: detected; flat: e.g. '
                        '_mask.png)')
    parser.add_argument('--ignore-index', type=int, default=255,
                        help='label value of unlabelled pixels (default: 255)')
    parser.add_argument('--reduce-zero-label', action='store_true',
                        help='mask value 0 is unlabelled, k is class k-1')
    parser.add_argument('--descriptions', help='LMSeg: the descriptions file of your classes '
                        '(default: <out stem>_descriptions.json next to --out)')
    parser.add_argument('--fix-names', action='store_true', help='--mmseg-dataset: write '
                        '"<suggested prompt>, <name>" for names that make poor prompts')
    tune = parser.add_argument_group('fine-tuning')
    tune.add_argument('--epochs', type=float, default=20.0, help='default: 20')
    tune.add_argument('--min-iters', type=positive_int, default=500, help='default: 500')
    tune.add_argument('--iters', type=positive_int, help='exact iterations (no epochs, no clamp)')
    tune.add_argument('--batch-size', type=positive_int,
                      help="images per GPU (default: the recipe's total batch / --gpus)")
    tune.add_argument('--gpus', type=positive_int, default=4, help='for the batch and the '
                      'estimate (default: 4)')
    tune.add_argument('--val-fraction', type=float, default=0.1,
                      help='validation share when the folder has no val split (default: 0.1)')
    tune.add_argument('--seed', type=int, default=0, help='seed of that split (default: 0)')
    tune.add_argument('--sec-per-iter', type=float, help='seconds per iteration and image per '
                      'GPU for the estimate (default: an assumption per model)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if (args.classes is None) == (args.mmseg_dataset is None):
        parser.error('give either --classes (your folder) or --mmseg-dataset NAME')
    if not args.out.endswith('.py'):
        parser.error(f'--out must be a .py file, got {args.out}')
    return args


def check_user_folder(args, folder: Folder, split: Optional[str]) -> List[str]:
    """Run the dataset's own folder check (one :class:`FolderProblemsError` listing every
    problem) on a split (None: the flat folder) and return its sample stems."""
    CustomFolderDataset(**folder_kwargs(args, folder), split=split or 'val', pipeline=[],
                        test_mode=True)
    img_dir, seg_dir = folder.dirs(split)
    return scan_folder(img_dir, seg_dir, folder.img_suffix,
                       folder.seg_map_suffix).paired_stems()


def folder_kwargs(args, folder: Folder) -> dict:
    """The :class:`CustomFolderDataset` arguments every split shares."""
    return dict(data_root=folder.data_root, classes_file=osp.abspath(args.classes),
                layout=folder.layout, img_suffix=folder.img_suffix,
                seg_map_suffix=folder.seg_map_suffix, ignore_index=args.ignore_index,
                reduce_zero_label=args.reduce_zero_label)


def mmseg_source(args, classes_file: str, pending: Dict[str, List[str]]) -> Tuple[dict, int]:
    """--mmseg-dataset: check the folder's pairing, the classes file to write, warn about names.

    Returns:
        tuple: the test dataset and its ignore index.
    """
    info = mmseg_dataset(args.mmseg_dataset)
    print(f'mmseg dataset: {info.type} (layout from {info.config}; '
          f'{", ".join(f"{k}={v!r}" for k, v in info.defaults.items())})')
    root = osp.abspath(args.data_root)
    prefix = info.dataset.get('data_prefix') or {}
    img_dir = osp.join(root, prefix.get('img_path', ''))
    seg_dir = osp.join(root, prefix.get('seg_map_path', ''))
    ann_file = info.dataset.get('ann_file') or ''
    stems = None
    if ann_file.endswith('.txt'):
        path = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
        stems = []
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                stems = [line.strip() for line in f if line.strip()]
    if not ann_file or stems is not None:  # other sample lists (json) are the dataset's own
        scan = scan_folder(img_dir, seg_dir, info.defaults['img_suffix'],
                           info.defaults['seg_map_suffix'])
        problems = pairing_problems(scan, stems, root, ann_file)
        if problems:
            raise FolderProblemsError(problems, f'{info.type} {args.data_root}')
        print(f'found {len(stems if stems is not None else scan.paired_stems())} samples')
    entries = []
    for name in info.classes:
        problems, suggestion = prompt_problems(name)
        if problems:
            hint = (f'try {suggestion!r}, e.g. the line "{suggestion}, {name}" in the classes '
                    f'file (keep {name!r} among the synonyms: the test checks it)'
                    if not any(len(w) > 1 and w.isupper() for w in suggestion.split())
                    else f'write {suggestion!r} out in plain words, keeping {name!r} as a '
                    f'synonym ("<plain words>, {name}")')
            print(f'warning: class name {name!r} may make a poor prompt ({"; ".join(problems)})'
                  f': {hint}', file=sys.stderr)
        entries.append(f'{suggestion}, {name}' if problems and args.fix_names else name)
    pending[classes_file] = [f'# {info.type} classes (mmseg METAINFO), one per line: add '
                             'synonyms after a comma; the dataset\'s name must stay among them',
                             *entries]
    dataset = dict(type=info.type, data_root=root, **info.dataset)
    return dataset, info.defaults.get('ignore_index') or 255


def folder_sets(args, splits_dir: str, pending: Dict[str, List[str]]
                ) -> Tuple[dict, Optional[dict], int]:
    """Your folder: detect, check; the test (or val) and train datasets, the training size."""
    folder = detect_folder(args.data_root, args.layout, args.img_suffix, args.seg_suffix)
    for note in folder.notes:
        print(f'{args.data_root}: {note}')
    base = dict(type='CustomFolderDataset', **folder_kwargs(args, folder))
    if not args.fine_tune:
        split = None
        if folder.layout == 'mmseg':
            split = args.split or ('val' if 'val' in folder.splits else (
                folder.splits[0] if len(folder.splits) == 1 else None))
            if split not in folder.splits:
                raise ValueError(f'--split: choose the split to evaluate among '
                                 f'{", ".join(folder.splits)} (img_dir/<split>)')
        stems = check_user_folder(args, folder, split)
        print(f'evaluating {len(stems)} samples' + (f' of split {split!r}' if split else ''))
        return (dict(base, split=split) if split else base), None, 0
    if folder.layout == 'mmseg' and 'train' not in folder.splits:
        raise ValueError(f'--fine-tune: {args.data_root}/img_dir has no train split (found '
                         f'{", ".join(folder.splits)})')
    split = 'train' if folder.layout == 'mmseg' else None
    stems = check_user_folder(args, folder, split)
    train_set = dict(base, split=split) if split else dict(base)
    if folder.layout == 'mmseg' and 'val' in folder.splits:
        check_user_folder(args, folder, 'val')
        return dict(base, split='val'), train_set, len(stems)
    train_stems, val_stems = split_stems(stems, args.val_fraction, args.seed)
    lists = {name: osp.join(splits_dir, f'{name}.txt') for name in ('train', 'val')}
    pending[lists['train']], pending[lists['val']] = train_stems, val_stems
    train_set['ann_file'] = lists['train']
    val_set = dict(train_set, ann_file=lists['val'])
    print(f'no validation split: {len(val_stems)} of {len(stems)} samples held out '
          f'(--val-fraction {args.val_fraction}, --seed {args.seed}), listed in {splits_dir}')
    return val_set, train_set, len(train_stems)


def vocabularies(args, model, here: str, stem: str) -> Tuple[Any, dict]:
    """``model.test_vocabulary`` and ``model.vocabulary`` for the classes file; LMSeg's
    descriptions file replaces the model's."""
    classes = osp.abspath(args.classes)
    templates = model.cfg.model.get('vocabulary', {}).get('templates')
    if not (isinstance(templates, dict) and templates.get('type') == 'descriptions'):
        return classes, dict(classes=classes)
    desc = osp.abspath(args.descriptions or osp.join(here, f'{stem}_descriptions.json'))
    if not osp.isfile(desc):
        print(f'warning: {model.family} prompts with descriptions; write them before running: '
              f'python tools/generate_descriptions.py --vocab {classes} --out {desc} --model '
              f'MODEL (docs/lmseg.md)', file=sys.stderr)
    return (dict(_delete_=True, classes=classes, templates=dict(templates.to_dict(), file=desc)),
            dict(classes=classes, templates=dict(file=desc)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Check the folder, then write the config (and split lists or a classes file)."""
    args = parse_args(argv)
    init_default_scope('mmseg')
    out = osp.abspath(args.out)
    stem, here = osp.splitext(osp.basename(out))[0], osp.dirname(out)
    if args.fine_tune and args.mmseg_dataset:
        raise ValueError('--mmseg-dataset writes zero-shot configs only: drop --fine-tune')
    if out.startswith(osp.abspath(args.data_root) + osp.sep):
        raise ValueError(f'--out {args.out} is inside the data folder {args.data_root}: nothing '
                         f'is written there; write the config elsewhere')
    model = resolve_model(args.model)
    checkpoint = f'zoo://{model.zoo_name}' if model.has_weights else None
    if args.checkpoint:  # a file (absolute in the config), a URL or a model-zoo name
        checkpoint = resolve_checkpoint_arg(args.checkpoint)
        checkpoint = osp.abspath(checkpoint) if osp.isfile(checkpoint) else checkpoint
    if args.fine_tune and checkpoint is None:
        what = (f'the model zoo publishes no weights for {model.zoo_name}' if model.zoo_name
                else f'{args.model} is not a model-zoo model')
        raise ValueError(f'--fine-tune needs the weights to start from: {what}; give '
                         f'--checkpoint FILE')
    protocol = args.protocol if args.protocol != 'auto' else (
        'paper' if model.zoo_name else 'config')
    bases, test_cfg = [model.config], None
    test_pipeline = Expr('_base_.test_dataloader.dataset.pipeline')
    paper = PROTOCOLS[model.family] if protocol == 'paper' else None
    if paper is not None:
        bases += [osp.join(BENCHMARKS, f) for f in paper.files]
        test_cfg, test_pipeline = paper.test_cfg, Expr(paper.pipeline)
    print(f'model: {model.zoo_name or model.config} ({model.family}); test protocol: {protocol}')
    pending: Dict[str, List[str]] = {}  # written only once everything is checked
    ignore_index, train_set, train_size = args.ignore_index, None, 0
    if args.mmseg_dataset:
        args.classes = osp.join(here, f'{stem}_classes.txt')
        test_set, ignore_index = mmseg_source(args, args.classes, pending)
    else:
        test_set, train_set, train_size = folder_sets(args, osp.join(here, f'{stem}_splits'),
                                                      pending)
    test_vocabulary, vocabulary = vocabularies(args, model, here, stem)
    model_cfg = dict(test_vocabulary=test_vocabulary)
    if test_cfg:
        model_cfg['test_cfg'] = Expr(test_cfg)
    if paper is not None and model.size == 'L':
        model_cfg.update({key: Expr(value) for key, value in paper.large_model})
    shared = {k: v for k, v in test_set.items() if k not in ('split', 'ann_file')}

    def subset(dataset: dict, pipeline: str = 'test_pipeline') -> Expr:
        """``dict(_delete_=True, **custom_dataset, <own keys>, pipeline=...)``, wrapped at the
        depth of ``<loader> = dict(dataset=...)``."""
        parts = ['_delete_=True', '**custom_dataset',
                 *(f'{k}={v!r}' for k, v in dataset.items() if k not in shared),
                 f'pipeline={pipeline}']
        line = f'dict({", ".join(parts)})'
        return Expr(line if len(line) <= 80 else 'dict(\n' + ',\n'.join(
            ' ' * 8 + p for p in parts) + ')')

    evaluator = py(dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'],
                        ignore_index=ignore_index))
    command = ' '.join([PROG, *(argv if argv is not None else sys.argv[1:])])
    text = [f'# Written by {PROG} ({"fine-tuning" if args.fine_tune else "zero-shot"}):',
            f'#   python {command}']
    if args.fine_tune:
        text += [f'# Train:    tools/dist_train.sh {args.out} GPUS   (or python tools/train.py '
                 f'{args.out})',
                 f'# Resume:   python tools/train.py {args.out} --resume   (the latest '
                 'checkpoint of the work dir; load_from is only where a new run starts)',
                 f'# Evaluate: python tools/test.py {args.out} work_dirs/{stem}/iter_N.pth']
    else:
        text.append(f'# Evaluate: python tools/test.py {args.out} {checkpoint or "CHECKPOINT"}')
    text += [assign('_base_', relative_bases(out, bases)), '',
             f'test_pipeline = {test_pipeline}', assign('custom_dataset', shared)]
    if args.fine_tune:
        model_cfg['vocabulary'] = vocabulary
        schedule = fine_tune_schedule(args, model, train_size)
        iters, every = schedule.max_iters, schedule.val_interval
        schedulers = scaled_schedulers(model.cfg.get('param_scheduler'),
                                       model.cfg.train_cfg.get('max_iters'), iters)
        loader = dict(batch_size=schedule.batch_per_gpu, dataset=subset(
            train_set, '_base_.train_dataloader.dataset.pipeline'))
        hooks = dict(checkpoint=dict(interval=every),
                     logger=dict(interval=max(1, min(50, iters // 10))))
        text += [assign('model', model_cfg), assign('train_dataloader', loader),
                 assign('val_dataloader', dict(dataset=subset(test_set))),
                 'test_dataloader = val_dataloader', f'val_evaluator = {evaluator}',
                 'test_evaluator = val_evaluator', '',
                 f'# {schedule.epochs:.1f} epochs of {train_size} images at a total batch of '
                 f'{schedule.batch_per_gpu * schedule.gpus}; the optimizer and learning rates '
                 "are the paper's (inherited)",
                 f'load_from = {checkpoint!r}',
                 assign('train_cfg', dict(max_iters=iters, val_interval=every)),
                 assign('param_scheduler', schedulers), assign('default_hooks', hooks)]
        print(schedule.summary())
    else:
        text += [assign('model', model_cfg),
                 assign('test_dataloader', dict(dataset=subset(test_set))),
                 f'test_evaluator = {evaluator}']
    for path, lines in pending.items():
        write_lines(path, lines)
        print(f'wrote {path}')
    write_lines(out, text)
    print(f'wrote {out}')
    if args.fine_tune:
        print(f'next: tools/dist_train.sh {args.out} {schedule.gpus}   (one GPU or CPU: python '
              f'tools/train.py {args.out})')
    else:
        print(f'next: python tools/test.py {args.out} {checkpoint or "CHECKPOINT"}')


def fine_tune_schedule(args, model, train_size: int):
    """The schedule of ``--fine-tune`` from the recipe's batch and length."""
    loader = model.cfg.get('train_dataloader') or {}
    base_batch = (model.cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    batch = args.batch_size or (max(1, -(-base_batch // args.gpus)) if base_batch
                                else loader.get('batch_size', 1))
    paper_iters = model.cfg.train_cfg.get('max_iters') or 80000
    if args.sec_per_iter:
        sec, assumed = args.sec_per_iter, '--sec-per-iter'
    elif model.zoo_name:
        sec = SEC_PER_ITER[(model.family, model.size)]
        assumed = (f'ASSUMED for {model.family} {model.size} on one A100-class GPU, not '
                   f'measured; --sec-per-iter to change')
    else:
        sec, assumed = DEFAULT_SEC_PER_ITER, 'ASSUMED, unknown model: give --sec-per-iter'
    schedule = plan_schedule(train_size, batch, args.gpus, args.epochs, paper_iters,
                             min(args.min_iters, paper_iters), args.iters, sec, assumed)
    if base_batch and batch * args.gpus != base_batch:
        schedule.notes.append(f'the recipe\'s learning rates are for a total batch of '
                              f'{base_batch}, this one is {batch * args.gpus}')
    return schedule


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
