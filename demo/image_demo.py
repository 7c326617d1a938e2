"""Segment one image with any vocabulary; write an overlay with a legend and the raw label map.

    python demo/image_demo.py IMAGE CONFIG --checkpoint CKPT [--vocab "cat,dog|puppy,sky"] \
        --out out.png [--opacity 0.5] [--device cpu] [--max-side 1024] [--max-pixels N]

``--vocab``: comma-separated classes with ``|`` between synonyms, a ``.txt`` file (one class per
line, synonyms comma-separated) or ``.json`` list, or a built-in vocabulary name (``ade150``...); without it, the config's test vocabulary (the classes a
model was fine-tuned on, e.g. a config of ``tools/misc/make_custom_config.py``).
CONFIG: a config file, a model-zoo name or a published model folder (``DIR/``; then
``--checkpoint`` is optional). Writes ``OUT`` (the
image, the coloured classes and a legend of the classes present, largest first) and
``<OUT stem>_labels.png`` (class ids: uint8, or uint16 above 256 classes). Exits with status 1 and a
one-line message (``--debug`` for the traceback) for an unreadable or too large image (more than
``--max-pixels``, 40 Mpixels by default, read from the file's header before decoding; formats
whose size is unknown before decoding, such as Radiance ``.hdr``, are refused unless
``--max-pixels 0``), a bad or mistyped vocabulary, a missing config, a checkpoint that is
truncated, not a checkpoint or made for another model, a failed checkpoint download, an unwritable ``--out`` (checked before inference), or
``--device cuda`` without CUDA. ``--cfg-options`` overrides config keys, e.g.
``model.neck.class_chunk_size=64`` to bound the memory of a large vocabulary.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    from mmengine.config import DictAction

    from mmseg_escnet.utils import add_prompting_arguments

    from mmseg_escnet.apis.image_limits import MAX_IMAGE_PIXELS
    parser = argparse.ArgumentParser(
        description='Open-vocabulary segmentation of one image (CAT-Seg / ESC-Net)')
    parser.add_argument('image', help='image file (grayscale, RGB(A), 8 or 16 bit)')
    parser.add_argument('config', help='config file, model-zoo name or published model folder '
                        '(DIR/: config.py and its weights)')
    parser.add_argument('--checkpoint', help='weights: file, URL or model-zoo name (optional for '
                        'a model-zoo CONFIG; without any, the weights are random)')
    parser.add_argument('--vocab', default=None,
                        help='"cat,dog|puppy,sky", a .txt/.json file or a built-in name '
                        "(default: the config's test vocabulary, e.g. the classes a model was "
                        'fine-tuned on)')
    parser.add_argument('--out', default='out.png', help='overlay file (default: out.png)')
    parser.add_argument('--opacity', type=float, default=0.5, help='colour weight in [0, 1]')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1... (default: CUDA if '
                        'available, else CPU)')
    parser.add_argument('--max-side', type=int, default=1024,
                        help='shrink larger images to this longer side before inference')
    parser.add_argument('--max-pixels', type=int, default=MAX_IMAGE_PIXELS,
                        help='refuse image files with more pixels, from their header, before '
                        f'decoding them (default {MAX_IMAGE_PIXELS}; 0: no limit)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.neck.class_chunk_size=64 for a '
                        'large vocabulary')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    add_prompting_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_pixels < 0:
        parser.error(f'--max-pixels must be >= 0 (0: no limit), got {args.max_pixels}')
    return args


def labels_path(out: str) -> str:
    """``dir/name.ext`` -> ``dir/name_labels.png``."""
    return osp.splitext(out)[0] + '_labels.png'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status. Errors are raised (:func:`cli` prints them)."""
    args = parse_args(argv)
    # Everything that depends on the user's input is checked before the model is built.
    from mmseg_escnet.apis.outputs import OVERLAY_SUFFIXES, write_overlay
    if osp.splitext(args.out)[1].lower() not in OVERLAY_SUFFIXES:
        raise ValueError(f'--out {args.out}: expected one of {", ".join(OVERLAY_SUFFIXES)}')
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f'--opacity must be in [0, 1], got {args.opacity}')
    from mmseg_escnet.apis import OpenVocabInferencer, read_image, write_label_map
    from mmseg_escnet.apis.model_args import check_device, resolve_model
    from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
    from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
    from mmseg_escnet.utils import ensure_writable_dir, prompting_overrides
    if args.device is not None:
        check_device(args.device, what='--device')  # before any work: no GPU, no CUDA torch
    vocab = None  # None: the config's test vocabulary
    if args.vocab is not None:
        vocab = parse_vocabulary_text(args.vocab)
        Vocabulary(vocab)  # validation only: empty, duplicate or missing classes fail here
    ensure_writable_dir(osp.dirname(args.out), '--out')
    image = read_image(args.image, max_pixels=args.max_pixels or None)
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_arg(args.checkpoint)
    model = args.config
    if args.cfg_options:
        model, checkpoint = resolve_model(args.config, checkpoint)  # (Config, weights)
        model.merge_from_dict(args.cfg_options)
    inferencer = OpenVocabInferencer(model, weights=checkpoint, vocabulary=vocab,
                                     device=args.device, max_side=args.max_side,
                                     **prompting_overrides(args))

    result = inferencer(image, return_vis=True, opacity=args.opacity)
    prediction, canvas = result['predictions'], result['visualization']
    write_overlay(args.out, canvas)
    write_label_map(labels_path(args.out), prediction['sem_seg'], len(prediction['classes']))

    height, width = prediction['sem_seg'].shape
    print(f'{args.image} ({width} x {height}): {len(prediction["scores"])} of '
          f'{len(prediction["classes"])} classes present')
    name_width = max(len(s['name']) for s in prediction['scores'])
    for score in prediction['scores']:
        print(f'  {score["name"]:<{name_width}}  {score["fraction"]:7.2%}  '
              f'(mean probability {score["mean_probability"]:.3f})')
    print(f'wrote {args.out} and {labels_path(args.out)}')
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` with one-line errors and exit status 1 (``--debug``: the traceback)."""
    from mmseg_escnet.utils import run_cli
    return run_cli(main, 'image_demo.py', argv)


if __name__ == '__main__':
    sys.exit(cli())
