"""ESC-Net's pseudo prompts for one image, as in the paper's Fig. 3 and Fig. 6.

``python tools/analysis/visualize_escnet.py CONFIG CHECKPOINT IMAGE [--vocab VOCAB]
[--classes a,b] [--top 3] --out DIR [--panel-size 160] [--cfg-options ...] [--device cpu]``

The image is read and preprocessed by :class:`~mmseg_escnet.apis.OpenVocabInferencer` (the same
reading, shrinking, test pipeline and data preprocessor as every prediction), segmented once, and
traced through the ESC neck (:func:`~mmseg_escnet.apis.escnet_prompts.trace_escnet_prompts`).
Written into ``DIR``:

- ``fig3_<id>_<class>.png`` per selected class: one row per ESC block, the columns of Fig. 3:
  (a) the network input, (b) the PPG's probability map, (c) its binary foreground, (d) the
  k-means regions, (e) the prompts the model uses (points, boxes, mask) over the image;
- ``fig6.png``: one row per class, the image and the score map each block's PPG read (block 1:
  the Eq. 1 correlation; with ``prompt_source='refined'`` block k > 1: the correlation refined by
  blocks 1..k-1), each coloured from its minimum (blue) to its maximum (red);
- ``overview.png``: one compact figure, per class the image and, per block, its score map and
  prompts.

Everything is on the CLIP grid (h, w) over the network input (the image after the test
pipeline, padded by the data preprocessor, resized to the CLIP resolution: the ``whole`` mode,
or the global view of CAT-Seg's protocol); panels show it upsampled, bilinearly for the
continuous maps and nearest for the foreground and regions (each figure says so).

``--vocab``: comma-separated classes (``|`` between synonyms), a ``.txt``/``.json`` file or a
built-in name (``ade150``), as ``demo/image_demo.py``; default: the config's test vocabulary.
``--classes``: names of the vocabulary (any synonym, any case) to draw; default: the ``--top``
classes with the most pixels in the prediction. A class the model pruned or filtered for this
image has no prompts: it is reported and skipped. Errors (unknown classes, a config without ESC
blocks, unreadable inputs) are one line on stderr (``--debug`` shows the traceback).
"""
import argparse
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import DictAction

from mmseg_escnet.apis import OpenVocabInferencer, read_image
from mmseg_escnet.apis.escnet_prompts import (PromptTrace, check_escnet_config, check_escnet_model,
                                              trace_escnet_prompts)
from mmseg_escnet.apis.image_io import encode_to_file
from mmseg_escnet.apis.model_args import check_device, resolve_model
from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
from mmseg_escnet.utils import ensure_writable_dir, run_cli
from mmseg_escnet.visualization import (binary_panel, draw_prompts, heatmap_panel, image_panel,
                                        regions_panel, tile_panels)

PROG = 'tools/analysis/visualize_escnet.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description="ESC-Net's pseudo prompts (Fig. 3, Fig. 6)")
    parser.add_argument('config', help='config file, model-zoo name or published model folder '
                        '(DIR/: config.py and its weights)')
    parser.add_argument('checkpoint', help='weights: file, URL or model-zoo name')
    parser.add_argument('image', help='image file')
    parser.add_argument('--vocab', help='"cat,dog|puppy,sky", a .txt/.json file or a built-in '
                        "name (default: the config's test vocabulary)")
    parser.add_argument('--classes', help='comma-separated classes to draw (default: the --top '
                        'classes of the prediction)')
    parser.add_argument('--top', type=int, default=3,
                        help='classes drawn without --classes (default: 3)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--panel-size', type=int, default=160,
                        help='panel height in pixels (default: 160)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1... (default: CUDA if '
                        'available, else CPU)')
    parser.add_argument('--max-side', type=int, default=1024,
                        help='shrink larger images to this longer side first (as the inferencer)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.top < 1:
        raise ValueError(f'--top must be >= 1, got {args.top}')
    if args.panel_size < 32:
        raise ValueError(f'--panel-size must be >= 32, got {args.panel_size}')
    return args


def top_classes(label_map: np.ndarray, num_classes: int, top: int) -> List[int]:
    """The ``top`` classes with the most pixels in a label map (ties: lower id first).

    Args:
        label_map (np.ndarray): (H0, W0) predicted class ids in [0, T).
        num_classes (int): T.
        top (int): how many.

    Returns:
        list[int]: class ids, most pixels first.
    """
    counts = np.bincount(label_map.ravel().astype(np.int64), minlength=num_classes)
    present = np.flatnonzero(counts)
    return [int(c) for c in present[np.lexsort((present, -counts[present]))][:top]]


def resolve_classes(vocabulary: Vocabulary, requested: str) -> List[int]:
    """Vocabulary indices of the classes named in ``--classes``.

    Args:
        vocabulary (Vocabulary): the model's test vocabulary.
        requested (str): ``'a,b'``: names matched against every synonym, ignoring case and
            repeated spaces (a synonym shared by several classes means the first).

    Returns:
        list[int]: class ids in the order given, each once.

    Raises:
        ValueError: naming every requested class the vocabulary does not have.
    """
    def norm(text: str) -> str:
        return ' '.join(text.split()).casefold()

    lookup: Dict[str, int] = {}
    for index, synonyms in enumerate(vocabulary.all_synonyms):
        for name in synonyms:
            lookup.setdefault(norm(name), index)
    names = [n for n in (part.strip() for part in requested.split(',')) if n]
    if not names:
        raise ValueError('--classes is empty: give comma-separated class names')
    unknown = [n for n in names if norm(n) not in lookup]
    if unknown:
        shown = ', '.join(vocabulary.names[:10]) + (', ...' if len(vocabulary) > 10 else '')
        raise ValueError(f'--classes: {", ".join(map(repr, unknown))} not in the vocabulary of '
                         f'{len(vocabulary)} classes ({shown})')
    return list(dict.fromkeys(lookup[norm(n)] for n in names))


def network_image(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """The first preprocessed image as the network sees it, back in ``uint8`` RGB.

    Args:
        model (torch.nn.Module): the segmentor (its data preprocessor normalised ``inputs``).
        inputs (torch.Tensor): (B, 3, Hp, Wp) preprocessed, possibly padded images.

    Returns:
        np.ndarray: (Hp, Wp, 3) uint8 RGB (padding shows the normalisation's mean colour).
    """
    pre = model.data_preprocessor
    image = inputs[0].detach().float().cpu()
    if getattr(pre, '_enable_normalize', False):
        image = image * pre.std.cpu() + pre.mean.cpu()
    image = image.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    rgb = getattr(pre, 'channel_conversion', False)  # True: BGR input flipped to RGB
    return np.ascontiguousarray(image if rgb else image[:, :, ::-1])


def pruned_reason(model: torch.nn.Module, trace: PromptTrace) -> str:
    """Why the model dropped classes for the image (class filter or top-``pad_len`` pruning)."""
    kept = len(trace.kept_classes(0))
    rule = model.inference_settings.class_filter
    why = (f'test_cfg.class_filter {rule.to_cfg()}' if rule is not None else
           f'top-{model.neck.pad_len} class pruning')
    return f'the model kept {kept} of {trace.num_classes} classes: {why}'


def _slug(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')[:40] or 'class'


def _grid_note(grid: Tuple[int, int], net: Tuple[int, int], size: Tuple[int, int],
               image: Tuple[int, int]) -> str:
    padded = '' if tuple(image) == tuple(net) else \
        f' (the image is {image[0]}x{image[1]}, the rest padding)'
    return (f'CLIP grid {grid[0]}x{grid[1]} over the {net[0]}x{net[1]} network input{padded}, '
            f'shown at {size[0]}x{size[1]}')


def render(image: np.ndarray, trace: PromptTrace, classes: List[int], names: List[str],
           panel_height: int, threshold: float, num_regions: int, prompt_source: str,
           image_shape: Optional[Tuple[int, int]] = None
           ) -> Tuple[Dict[str, Tuple[np.ndarray, List[List[Tuple[int, int]]]]], Tuple[int, int]]:
    """All figures of one traced image.

    Args:
        image (np.ndarray): (Hp, Wp, 3) uint8 RGB network input.
        trace (PromptTrace): its trace (image 0 of the batch).
        classes (list[int]): kept vocabulary ids to draw.
        names (list[str]): the T display names.
        panel_height (int): panel height in pixels (the width follows the input's aspect).
        threshold (float): the PPG's alpha (for the captions).
        num_regions (int): the PPG's K (region colours).
        prompt_source (str): the neck's ``prompt_source`` (for the captions).
        image_shape (tuple, optional): (H, W) of the image inside the padded input (for the
            captions); None: no padding.

    Returns:
        tuple: file name -> (RGB canvas, panel offsets ``[row][col]`` as (top, left)), and the
        panel size (H, W).
    """
    grid = trace.grid
    size = (panel_height, max(1, round(panel_height * image.shape[1] / image.shape[0])))
    shown = image_panel(image, size)
    blocks = range(len(trace.blocks))
    note = [_grid_note(grid, image.shape[:2], size, image_shape or image.shape[:2]),
            'bilinear: maps, mask prompt; nearest: foreground, regions']
    figures = {}
    overview, overview_caps, fig6, fig6_caps = [], [], [], []
    for cls in classes:
        rows, caps = [], []
        fig6.append([shown])
        fig6_caps.append(['image'])
        overview.append([shown])
        overview_caps.append(['image'])
        for k in blocks:
            cp = trace.class_prompts(k, 0, cls)
            mask = None if cp.mask is None else 1.0 / (1.0 + np.exp(-cp.mask.astype(np.float64)))
            prompts = draw_prompts(shown, grid, cp.points, cp.boxes, mask)
            kinds = [kind for kind, value in (('points', cp.points), ('boxes', cp.boxes),
                                              ('mask', cp.mask)) if value is not None]
            rows.append([shown, heatmap_panel(cp.probability, size, 0.0, 1.0),
                         binary_panel(cp.foreground, size),
                         regions_panel(cp.regions, size, num_regions), prompts])
            caps.append(['(a) image', '(b) probability', f'(c) p >= {threshold:g}',
                         '(d) k-means regions', '(e) ' + ' + '.join(kinds)] if k == 0 else
                        [''] * 5)  # captions once, above the first block
            score = heatmap_panel(cp.score, size)
            low, high = float(cp.score.min()), float(cp.score.max())
            fig6[-1].append(score)
            fig6_caps[-1].append(f'block {k + 1}: {low:.2f}..{high:.2f}')
            overview[-1] += [score, prompts]
            overview_caps[-1] += [f'block {k + 1} class map', f'block {k + 1} prompts']
        figures[f'fig3_{cls}_{_slug(names[cls])}.png'] = tile_panels(
            rows, caps, [f'block {k + 1}' for k in blocks],
            title=f"'{names[cls]}': the PPG of every ESC block (Fig. 3)", footer=note)
    source = ('block 1: Eq. 1 correlation; block k > 1: refined by blocks 1..k-1'
              if prompt_source == 'refined' else 'every block: the Eq. 1 correlation')
    maps = [source + '; each map from its min (blue) to its max (red)']
    row_labels = [names[c] for c in classes]
    figures['fig6.png'] = tile_panels(fig6, fig6_caps, row_labels,
                                      title="The class map each block's PPG read (Fig. 6)",
                                      footer=maps + note)
    overview_caps[1:] = [[''] * len(row) for row in overview_caps[1:]]  # captions once
    figures['overview.png'] = tile_panels(overview, overview_caps, row_labels,
                                          title='ESC-Net pseudo prompts per block',
                                          footer=maps + note)
    return figures, size


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Write the figures; returns what was written (see the module docstring).

    Returns:
        dict: ``files`` (paths), ``classes`` (drawn ids), ``skipped`` (requested ids the model
        pruned), ``layout`` (file name -> panel offsets ``[row][col]`` (top, left)),
        ``panel_size`` (H, W) and ``grid`` (h, w).
    """
    args = parse_args(argv)
    # everything that depends on the user's input is checked before the model is built
    if args.device is not None:
        check_device(args.device, what='--device')
    vocab = None
    if args.vocab is not None:
        vocab = parse_vocabulary_text(args.vocab)
        Vocabulary(vocab)  # validation only: empty, duplicate or missing classes fail here
    ensure_writable_dir(args.out, '--out')
    image = read_image(args.image)
    checkpoint = resolve_checkpoint_arg(args.checkpoint)
    cfg, checkpoint = resolve_model(args.config, checkpoint)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    check_escnet_config(cfg.model)  # a config without ESC blocks stops before any weights
    inferencer = OpenVocabInferencer(cfg, weights=checkpoint, vocabulary=vocab,
                                     device=args.device, max_side=args.max_side)
    model = inferencer.model
    neck = check_escnet_model(model)
    names = inferencer.classes
    requested = None  # unknown names fail before any inference
    if args.classes is not None:
        requested = resolve_classes(inferencer.vocabulary, args.classes)

    _, data = next(inferencer.preprocess([image]))
    label_map = inferencer.forward(data)[0].pred_sem_seg.data[0].numpy()  # (H0, W0)
    with torch.no_grad():
        processed = model.data_preprocessor(data, False)
    inputs = processed['inputs']                                           # (1, 3, Hp, Wp)
    image_shape = tuple(processed['data_samples'][0].metainfo['img_shape'][:2])  # unpadded
    trace = trace_escnet_prompts(model, inputs)
    if requested is None:
        requested = top_classes(label_map, len(names), args.top)
    classes = [c for c in requested if trace.class_slot(0, c) is not None]
    skipped = [c for c in requested if c not in classes]
    for cls in skipped:
        print(f'class {names[cls]!r} (id {cls}) was pruned by the model for this image '
              f'({pruned_reason(model, trace)}): no prompts, not drawn')
    if not classes:
        raise ValueError(f'none of the requested classes has prompts for this image: '
                         f'{pruned_reason(model, trace)}; kept: '
                         f'{", ".join(names[c] for c in trace.kept_classes(0)[:10])}')

    shown = network_image(model, inputs)
    figures, panel_size = render(shown, trace, classes, names, args.panel_size,
                                 neck.ppg.threshold, neck.ppg.num_regions, neck.prompt_source,
                                 image_shape)
    files = {}
    for name, (canvas, _) in figures.items():
        files[name] = encode_to_file(osp.join(args.out, name), canvas[:, :, ::-1], name)
    for cls in classes:
        per_block = []
        for k in range(len(trace.blocks)):
            cp = trace.class_prompts(k, 0, cls)
            per_block.append(f'block {k + 1}: {int(cp.foreground.sum())}/{cp.foreground.size} '
                             'foreground cells')
        print(f'{names[cls]} (id {cls}): ' + '; '.join(per_block))
    print(f'wrote {", ".join(sorted(files))} into {args.out}')
    return dict(files=files, classes=classes, skipped=skipped,
                layout={name: offsets for name, (_, offsets) in figures.items()},
                panel_size=panel_size, grid=trace.grid)


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
