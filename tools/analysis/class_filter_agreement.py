"""How much test-time class filtering changes the labels, and how much time it saves.

``python tools/analysis/class_filter_agreement.py CONFIG CHECKPOINT --images DIR
[--num-classes 200] [--filters topk:32 pixel_topk:8] [--annotations DIR] [--json OUT]``

The vocabulary is the config's test vocabulary padded to ``--num-classes`` classes with
distractors (ADE20K-847 classes none of whose names is already in it, in order). Every image of ``--images`` is
segmented without a filter and with each ``model.test_cfg.class_filter`` of ``--filters``
(``topk:K``: LMSeg's top-k classes of the image; ``pixel_topk:K``: SED's union of every pixel's
top-k on the initial correlation; ``sed_cer:K``: SED's category early rejection, for SED). Reported
per filter:

- ``unchanged``: the share of pixels whose label equals the unfiltered one;
- ``speedup``: unfiltered seconds per image over filtered seconds per image (the first image,
  which encodes the vocabulary, is not timed);
- ``kept``: the mean number of classes that reach the output (for ``sed_cer``: the survivors of
  its last stage);
- with ``--annotations`` (label PNGs named like the images, 255 ignored): ``recall``, the share of
  annotated pixels whose true class the filter kept, and the pixel accuracy, so that a change
  can be judged as a loss or a gain.
"""
import argparse
import glob
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.models.segmentors.class_sparse import kept_classes
from mmseg_escnet.models.structures import ClassFilter
from mmseg_escnet.text import Vocabulary
from mmseg_escnet.utils import ensure_writable_dir, run_cli, write_json


def parse_filter(text: str) -> dict:
    """``'topk:32'`` -> ``dict(type='topk', k=32)``, checked like the model checks it."""
    kind, _, k = text.partition(':')
    if not k.isdigit():
        raise ValueError(f'a filter is TYPE:K (e.g. topk:32), got {text!r}')
    return ClassFilter.from_cfg(dict(type=kind, k=int(k))).to_cfg()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Class-filter agreement and speed-up')
    parser.add_argument('config', help='config file, model-zoo name or published model folder '
                        '(DIR/: config.py and its weights)')
    parser.add_argument('checkpoint', help='trained weights')
    parser.add_argument('--images', required=True, help='folder of images')
    parser.add_argument('--annotations', help='folder of label PNGs named like the images')
    parser.add_argument('--num-classes', type=int, default=200,
                        help='vocabulary size after padding with distractors')
    parser.add_argument('--filters', nargs='+', default=['topk:32', 'pixel_topk:8'])
    parser.add_argument('--json', help='write the results to this JSON file')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    args.filters = [parse_filter(f) for f in args.filters]
    return args


def padded_vocabulary(classes: Sequence[str], size: int) -> List[str]:
    """``classes`` followed by ADE20K-847 classes (whole entries, synonyms included) none of whose
    names is one of ``classes``, ``size`` entries in all."""
    if size < len(classes):
        raise ValueError(f'--num-classes {size} is below the {len(classes)} classes of the model')
    taken = {c.lower() for c in classes}
    distractors = [', '.join(synonyms) for synonyms in Vocabulary(classes='ade847').all_synonyms
                   if not taken & {s.lower() for s in synonyms}]
    return list(classes) + distractors[:size - len(classes)]


def _segment(inferencer: OpenVocabInferencer, images: List[str], rule: Optional[dict]):
    """Label maps of every image with ``rule``; seconds per image after the first."""
    model = inferencer.model
    model.set_inference_settings(model.inference_settings.replace(class_filter=rule))
    labels, start = [], None
    for i, image in enumerate(images):
        if i == 1:
            start = time.perf_counter()
        labels.append(inferencer(image, return_datasamples=True).pred_sem_seg.data[0].numpy())
    seconds = (time.perf_counter() - start) / (len(images) - 1)
    return labels, seconds


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    if args.json:
        ensure_writable_dir(osp.dirname(args.json), '--json')
    images = sorted(p for ext in ('jpg', 'jpeg', 'png') for p in
                    glob.glob(osp.join(args.images, f'*.{ext}')))
    if len(images) < 2:
        raise FileNotFoundError(f'--images {args.images}: need at least 2 images, found '
                                f'{len(images)}')
    inferencer = OpenVocabInferencer(args.config, args.checkpoint)
    classes = list(inferencer.classes)
    inferencer.set_vocabulary(padded_vocabulary(classes, args.num_classes))
    truth = None
    if args.annotations:
        truth = [np.array(Image.open(osp.join(
            args.annotations, osp.splitext(osp.basename(p))[0] + '.png'))) for p in images]
    reference, base_seconds = _segment(inferencer, images, None)

    def accuracy(labels):
        if truth is None:
            return None
        valid = [t != 255 for t in truth]
        return float(sum(((l == t) & v).sum() for l, t, v in zip(labels, truth, valid))
                     / sum(v.sum() for v in valid))

    results = {'none': dict(unchanged=1.0, speedup=1.0, seconds=base_seconds,
                            kept=float(args.num_classes), accuracy=accuracy(reference),
                            recall=None if truth is None else 1.0)}
    for rule in args.filters:
        kept = []  # per forward: the class indices that reach the output
        model = inferencer.model
        network = model._forward

        def record(*args, **kwargs):  # the network's logits (B, T, H, W)
            logits = network(*args, **kwargs)
            kept.append(set(kept_classes(logits[:1]).tolist()))
            return logits

        model._forward = record
        try:
            labels, seconds = _segment(inferencer, images, rule)
        finally:
            del model._forward  # back to the class's method
        unchanged = sum((a == b).sum() for a, b in zip(labels, reference)) / sum(
            a.size for a in reference)
        recall = None
        if truth is not None and len(kept) == len(truth):  # one forward per image
            hits = sum(np.isin(t[t != 255], sorted(k)).sum() for t, k in zip(truth, kept))
            recall = float(hits / sum((t != 255).sum() for t in truth))
        counts = [len(k) for k in kept]
        results[f'{rule["type"]}:{rule["k"]}'] = dict(
            unchanged=float(unchanged), speedup=base_seconds / seconds, seconds=seconds,
            kept=float(np.mean(counts)), accuracy=accuracy(labels), recall=recall)
    print(f'{args.config}: {len(images)} images, {args.num_classes} classes '
          f'({len(classes)} of the model, {args.num_classes - len(classes)} distractors)')
    print('| filter | kept classes | true classes kept | unchanged pixels | s / image | speed-up '
          '| pixel accuracy |')
    print('|---|---|---|---|---|---|---|')

    def percent(value):
        return '-' if value is None else f'{100 * value:.2f}%'

    for name, r in results.items():
        print(f'| {name} | {r["kept"]:.1f} | {percent(r["recall"])} | {percent(r["unchanged"])} '
              f'| {r["seconds"]:.3f} | {r["speedup"]:.2f}x | {percent(r["accuracy"])} |')
    write_json(args.json, results)
    return results


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/class_filter_agreement.py'))
