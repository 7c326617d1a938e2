"""Segment one image with any vocabulary; write an overlay with a legend and the raw label map.

    python demo/image_demo.py IMAGE CONFIG --checkpoint CKPT --vocab "cat,dog|puppy,sky" \
        --out out.png [--opacity 0.5] [--device cpu] [--max-side 1024]

``--vocab``: comma-separated classes with ``|`` between synonyms, a ``.txt`` file (one class per
line, synonyms comma-separated) or ``.json`` list, or a built-in vocabulary name (``ade150``...).
CONFIG: a config file or a model-zoo name (then ``--checkpoint`` is optional). Writes ``OUT`` (the
image, the coloured classes and a legend of the classes present, largest first) and
``<OUT stem>_labels.png`` (class ids: uint8, or uint16 above 256 classes). Exits with status 1 and a
one-line message (no traceback) for an unreadable or too large image, a bad vocabulary, a missing
config or checkpoint, a failed checkpoint download, or ``--device cuda`` without CUDA.
"""
import argparse
import os
import os.path as osp
import pickle
import sys
from typing import List, Optional, Sequence, Union

_OUT_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description='Open-vocabulary segmentation of one image (CAT-Seg / ESC-Net)')
    parser.add_argument('image', help='image file (grayscale, RGB(A), 8 or 16 bit)')
    parser.add_argument('config', help='config file or model-zoo name')
    parser.add_argument('--checkpoint', help='weights: file, URL or model-zoo name (optional for '
                        'a model-zoo CONFIG; without any, the weights are random)')
    parser.add_argument('--vocab', required=True,
                        help='"cat,dog|puppy,sky", a .txt/.json file or a built-in name')
    parser.add_argument('--out', default='out.png', help='overlay file (default: out.png)')
    parser.add_argument('--opacity', type=float, default=0.5, help='colour weight in [0, 1]')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1... (default: CUDA if '
                        'available, else CPU)')
    parser.add_argument('--max-side', type=int, default=1024,
                        help='shrink larger images to this longer side before inference')
    return parser.parse_args(argv)


def parse_vocab(text: str) -> Union[str, List[str]]:
    """Turn ``--vocab`` into what :class:`Vocabulary` accepts.

    Args:
        text (str): ``'cat,dog|puppy,sky'``, a file path or a built-in vocabulary name.

    Returns:
        str | list[str]: The path or name unchanged, or class entries (``['cat', 'dog, puppy',
        'sky']``).

    Raises:
        ValueError: ``text`` is empty.
    """
    from mmseg_escnet.models.text.vocabulary import available_vocabularies
    text = text.strip()
    if not text:
        raise ValueError('--vocab is empty: give comma-separated class names, a .txt/.json file '
                         'or a built-in vocabulary name')
    if osp.isfile(text) or osp.splitext(text)[1].lower() in ('.txt', '.json') \
            or text in available_vocabularies():
        return text
    return [', '.join(s.strip() for s in entry.split('|')) for entry in text.split(',')]


def labels_path(out: str) -> str:
    """``dir/name.ext`` -> ``dir/name_labels.png``."""
    return osp.splitext(out)[0] + '_labels.png'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status."""
    args = parse_args(argv)
    from mmseg_escnet.checkpoints.download import DownloadError
    try:
        # Everything that depends on the user's input is checked before the model is built.
        if osp.splitext(args.out)[1].lower() not in _OUT_SUFFIXES:
            raise ValueError(f'--out {args.out}: expected one of {", ".join(_OUT_SUFFIXES)}')
        if not 0.0 <= args.opacity <= 1.0:
            raise ValueError(f'--opacity must be in [0, 1], got {args.opacity}')
        from mmseg_escnet.apis import OpenVocabInferencer, read_image
        from mmseg_escnet.apis.model_args import check_device
        from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
        from mmseg_escnet.models.text import Vocabulary
        if args.device is not None:
            check_device(args.device, what='--device')  # before any work: no GPU, no CUDA torch
        vocab = parse_vocab(args.vocab)
        Vocabulary(vocab)  # validation only: empty, duplicate or missing classes fail here
        image = read_image(args.image)
        checkpoint = None if args.checkpoint is None else resolve_checkpoint_arg(args.checkpoint)
        inferencer = OpenVocabInferencer(args.config, weights=checkpoint, vocabulary=vocab,
                                         device=args.device, max_side=args.max_side)
    except (OSError, ValueError, KeyError, DownloadError, pickle.UnpicklingError) as err:
        # OSError: missing or unreadable files; DownloadError: a checkpoint URL or model-zoo
        # download failed; UnpicklingError: a checkpoint refused as unsafe or not a checkpoint.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        message = ' '.join(str(message).split())  # one line
        print(f'image_demo.py: error: {message}', file=sys.stderr)
        return 1

    import cv2

    from mmseg_escnet.apis import write_label_map
    result = inferencer(image, return_vis=True, opacity=args.opacity)
    prediction, canvas = result['predictions'], result['visualization']
    folder = osp.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(args.out, canvas[:, :, ::-1]):
        print(f'image_demo.py: error: could not write {args.out}', file=sys.stderr)
        return 1
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


if __name__ == '__main__':
    sys.exit(main())
