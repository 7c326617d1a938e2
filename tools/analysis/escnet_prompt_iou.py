"""How well ESC-Net's pseudo prompts cover the true objects, block by block.

``python tools/analysis/escnet_prompt_iou.py CONFIG CHECKPOINT [--split val|test]
[--max-images N] [--out FILE.json] [--cfg-options ...] [--device cpu]``

Over the config's validation (``--split test``: test) dataloader, built by MMEngine's Runner from
the config (the dataset's own pipeline), every image is preprocessed by the model's data
preprocessor and traced through the ESC neck
(:func:`~mmseg_escnet.apis.escnet_prompts.trace_escnet_prompts`): the prompts of the whole image
at the CLIP resolution (the ``whole`` test mode, or the global view of CAT-Seg's sliding + global
protocol, whose crops get prompts of their own that are not counted). For every ground-truth class
present in the image (not the ignore index, nor a metric's ``background_index``) and every ESC
block:

- **foreground IoU**: the IoU of the PPG's foreground (``regions >= 0`` on the CLIP grid) with the
  class's ground-truth mask, compared **at the label map's resolution**: every label pixel takes
  the grid cell its centre falls in (nearest, through the image's resize by the pipeline; the
  grid spans the padded network input, the padding is never reached); ignored pixels count for
  neither side;
- **points inside**: the share of the block's K points (as SAM gets them, duplicates included)
  whose cell centre falls on a label pixel of the class.

The table gives per block the mean IoU over the (image, class) pairs, the share of all points
inside, and the number of pairs; a class the model pruned or filtered for an image has no prompts
and is counted apart (``pruned``). ``--out`` writes the table and every pair as JSON. The model's
mIoU is what ``tools/test.py`` reports.
"""
import argparse
import os.path as osp
import sys
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.apis.escnet_prompts import (ClassPrompts, check_escnet_config, check_escnet_model,
                                              trace_escnet_prompts)
from mmseg_escnet.apis.model_args import check_device
from mmseg_escnet.engine.launch import checkpoint_argument, load_config
from mmseg_escnet.engine.vocabulary_check_hook import VocabularyCheckHook
from mmseg_escnet.utils import ensure_writable_dir, run_cli, write_json

PROG = 'tools/analysis/escnet_prompt_iou.py'
MAPPING = ('label pixels take the grid cell their centre falls in (nearest), through the '
           "pipeline's resize; the grid spans the padded network input; ignored pixels excluded")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description="IoU of ESC-Net's pseudo prompts with the "
                                     'ground truth, per ESC block')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', type=checkpoint_argument,
                        help='checkpoint: local file, http(s) URL or model-zoo name')
    parser.add_argument('--split', choices=('val', 'test'), default='val',
                        help='dataloader of the config to use (default: val)')
    parser.add_argument('--max-images', type=int, default=None, help='stop after N images')
    parser.add_argument('--out', help='write the results to this JSON file')
    parser.add_argument('--device', default=None, help='cpu, cuda... (default: CUDA if '
                        'available, else CPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f'--max-images must be >= 1, got {args.max_images}')
    return args


def label_cells(label_shape: Tuple[int, int], image_shape: Tuple[int, int],
                input_shape: Tuple[int, int], grid: Tuple[int, int]) -> Tuple[np.ndarray, ...]:
    """The grid cell of every label row and column (nearest, at the pixels' centres).

    Label pixel r lies at ``(r + 0.5) * image_h / label_h`` in the network input (the image
    after the pipeline, before padding), i.e. in grid row ``floor(that * h / input_h)``.

    Args:
        label_shape (tuple): (H0, W0) of the label map.
        image_shape (tuple): (H, W) of the image in the network input (``img_shape``).
        input_shape (tuple): (Hp, Wp) of the padded network input.
        grid (tuple): (h, w) of the CLIP grid.

    Returns:
        tuple: rows (H0,) and cols (W0,) int64 grid indices.
    """
    out = []
    for axis in range(2):
        position = (np.arange(label_shape[axis]) + 0.5) * image_shape[axis] / label_shape[axis]
        cell = np.floor(position * grid[axis] / input_shape[axis]).astype(np.int64)
        out.append(np.clip(cell, 0, grid[axis] - 1))
    return tuple(out)


def point_pixels(points: np.ndarray, label_shape: Tuple[int, int], image_shape: Tuple[int, int],
                 input_shape: Tuple[int, int], grid: Tuple[int, int]) -> np.ndarray:
    """The label pixel under each point's cell centre; (-1, -1) when it lies in the padding.

    Args:
        points (np.ndarray): (K, 2) (x, y) in grid cells.
        label_shape, image_shape, input_shape, grid: as in :func:`label_cells`.

    Returns:
        np.ndarray: (K, 2) int64 (row, col) label pixels.
    """
    pixels = np.empty((len(points), 2), np.int64)
    for axis, coord in ((0, points[:, 1]), (1, points[:, 0])):
        position = (coord + 0.5) * input_shape[axis] / grid[axis]        # network input pixels
        pixels[:, axis] = np.floor(position * label_shape[axis] / image_shape[axis])
    outside = (pixels[:, 0] >= label_shape[0]) | (pixels[:, 1] >= label_shape[1])
    pixels[outside] = -1
    return pixels


def pair_scores(cp: ClassPrompts, label: np.ndarray, cls: int, valid: np.ndarray,
                cells: Tuple[np.ndarray, np.ndarray], pixels: Optional[np.ndarray]) -> dict:
    """Foreground IoU and points inside for one (image, class, block).

    Args:
        cp (ClassPrompts): the block's prompts for the class.
        label (np.ndarray): (H0, W0) ground-truth class ids.
        cls (int): the class.
        valid (np.ndarray): (H0, W0) bool, the pixels not ignored.
        cells (tuple): grid rows and cols of the label pixels (:func:`label_cells`).
        pixels (np.ndarray, optional): (K, 2) label pixels of the points (:func:`point_pixels`).

    Returns:
        dict: ``iou``, ``points_inside`` and ``num_points`` (None, 0 without points).
    """
    foreground = cp.foreground[np.ix_(*cells)] & valid                   # (H0, W0)
    truth = (label == cls) & valid
    iou = float((foreground & truth).sum() / (foreground | truth).sum())
    if pixels is None:
        return dict(iou=iou, points_inside=None, num_points=0)
    inside = [bool(r >= 0 and label[r, c] == cls) for r, c in pixels]
    return dict(iou=iou, points_inside=int(sum(inside)), num_points=len(inside))


def _evaluator_index(cfg, split: str, key: str) -> Optional[int]:
    """``ignore_index`` / ``background_index`` of the split's evaluator config, if it sets one."""
    evaluator = cfg.get(f'{split}_evaluator') or {}
    for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
        if isinstance(metric, dict) and metric.get(key) is not None:
            return int(metric[key])
    return None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Compute the table; returns it (and the pairs) as written to ``--out``."""
    args = parse_args(argv)
    if args.device is not None:
        check_device(args.device, what='--device')
    if args.out:
        ensure_writable_dir(osp.dirname(args.out), '--out')
    cfg = load_config(args.config, cfg_options=args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    check_escnet_config(cfg.model)  # a config without ESC blocks stops before any weights
    loader_cfg = cfg.get(f'{args.split}_dataloader')
    if not loader_cfg:
        raise KeyError(f'{args.config} has no {args.split}_dataloader')
    model = OpenVocabInferencer(cfg, weights=args.checkpoint, device=args.device).model.eval()
    check_escnet_model(model)
    dataloader = Runner.build_dataloader(loader_cfg)
    dataset = dataloader.dataset
    VocabularyCheckHook._check(SimpleNamespace(model=model, cfg=cfg), dataset, None, args.split)
    ignore = _evaluator_index(cfg, args.split, 'ignore_index')
    ignore = dataset.metainfo.get('ignore_index', 255) if ignore is None else ignore
    background = _evaluator_index(cfg, args.split, 'background_index')
    names = model.vocabulary.names  # the test vocabulary (eval mode)

    pairs: List[dict] = []
    pruned: Dict[int, int] = {}
    images, grid, num_blocks = 0, None, 0
    for data in dataloader:
        if args.max_images is not None and images >= args.max_images:
            break
        with torch.no_grad():
            data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']          # (B, 3, Hp, Wp)
        trace = trace_escnet_prompts(model, inputs)
        grid, num_blocks = trace.grid, len(trace.blocks)
        for b, sample in enumerate(samples):
            if args.max_images is not None and images >= args.max_images:
                break
            images += 1
            label = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.int64)  # (H0, W0)
            image_shape = tuple(sample.metainfo['img_shape'][:2])
            cells = label_cells(label.shape, image_shape, inputs.shape[-2:], grid)
            valid = label != ignore
            present = [int(c) for c in np.unique(label[valid]) if c != background]
            for cls in present:
                for k in range(len(trace.blocks)):
                    cp = trace.class_prompts(k, b, cls)
                    if cp is None:
                        pruned[k] = pruned.get(k, 0) + 1
                        continue
                    pixels = None if cp.points is None else point_pixels(
                        cp.points, label.shape, image_shape, inputs.shape[-2:], grid)
                    pairs.append(dict(image=sample.metainfo.get('img_path'), class_id=cls,
                                      name=names[cls], block=k + 1,
                                      **pair_scores(cp, label, cls, valid, cells, pixels)))
    if not images:
        raise ValueError(f'the {args.split} dataloader of {args.config} gave no image')
    if not pairs:
        raise ValueError(f'no (image, class) pair has prompts: the model pruned every '
                         f'ground-truth class of the {images} images')

    blocks = []
    for k in range(num_blocks):
        rows = [p for p in pairs if p['block'] == k + 1]
        points = sum(p['num_points'] for p in rows)
        inside = sum(p['points_inside'] or 0 for p in rows)
        blocks.append(dict(block=k + 1, mean_iou=float(np.mean([p['iou'] for p in rows])),
                           points_inside=inside / points if points else None,
                           pairs=len(rows), pruned=pruned.get(k, 0)))
    result = dict(config=args.config, checkpoint=args.checkpoint, split=args.split,
                  images=images, grid=list(grid), mapping=MAPPING, blocks=blocks, pairs=pairs)

    print(f'{args.config} ({args.split}): {images} images, CLIP grid {grid[0]}x{grid[1]}')
    print(f'foreground vs ground truth: {MAPPING}')
    print('| block | mean foreground IoU | points inside | (image, class) pairs |')
    print('|---|---|---|---|')
    for row in blocks:
        share = '-' if row['points_inside'] is None else f'{100 * row["points_inside"]:.1f}%'
        extra = f' ({row["pruned"]} pruned)' if row['pruned'] else ''
        print(f'| {row["block"]} | {row["mean_iou"]:.3f} | {share} | {row["pairs"]}{extra} |')
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
