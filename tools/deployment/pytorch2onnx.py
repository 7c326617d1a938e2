"""Export the image path of CAT-Seg / ESC-Net for a fixed vocabulary to ONNX.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --vocab VOCAB --out model.onnx \
        [--mode whole] [--shape H W] [--verify] [--image IMAGE] [--max-pixels N] \
        [--latency N] [--threads N] [--cfg-options KEY=VALUE ...]

The vocabulary's text embeddings are computed once and stored in the graph. The ONNX model
takes ``images`` (1, 3, H, W), RGB normalised with the config's mean and std (CLIP's), and
returns ``logits`` (1, T, H, W); the label map is their argmax (docs/deployment.md).
``--verify`` runs onnxruntime and PyTorch on the same input (``--image``, or a fixed random
one; it is read and checked, with the ``--max-pixels`` limit from its header, before anything is
built or written). It prints the largest logit difference and the share of pixels with the same
label, and exits with 1 unless they are under 1e-3 and at least 99.9 %. ``--latency N`` times N
runs of each.
"""
import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction

from mmseg_escnet.apis.image_limits import MAX_IMAGE_PIXELS
from mmseg_escnet.utils import add_prompting_arguments, positive_int, prompting_overrides

MAX_ABS_DIFF = 1e-3
MIN_AGREEMENT = 0.999




def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config file, model-zoo name or published model '
                        'folder (DIR/: config.py and its weights)')
    parser.add_argument('checkpoint', help='checkpoint file, URL or model-zoo name')
    parser.add_argument('--vocab', required=True,
                        help="the fixed vocabulary: 'cat, dog|puppy, sky', a built-in name "
                        '(ade150) or a .txt/.json file')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--mode', default='whole', choices=['whole'],
                        help='inference mode of the exported graph (only whole exports)')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the config\'s CLIP resolution)')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch; exit 1 on a mismatch')
    parser.add_argument('--image', help='image for --verify (default: a fixed random input)')
    parser.add_argument('--max-pixels', type=int, default=MAX_IMAGE_PIXELS,
                        help='refuse an --image with more pixels, from its header, before '
                        f'decoding it (default {MAX_IMAGE_PIXELS}; 0: no limit)')
    parser.add_argument('--latency', type=int, default=0, metavar='N',
                        help='time N runs of onnxruntime and of PyTorch (CPU)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads of both runtimes (default: their own)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.test_cfg.class_filter.k=32')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    add_prompting_arguments(parser)
    args = parser.parse_args(argv)
    if not args.out.lower().endswith('.onnx'):
        parser.error(f'--out must end in .onnx, got {args.out}')
    if args.max_pixels < 0:
        parser.error(f'--max-pixels must be >= 0 (0: no limit), got {args.max_pixels}')
    if args.image is not None and not (args.verify or args.latency):
        parser.error('--image is only used by --verify or --latency')
    if args.latency < 0:
        parser.error(f'--latency must be >= 0, got {args.latency}')
    return args


def _sample(bgr_image, wrapper, shape) -> torch.Tensor:
    """(1, 3, H, W) input normalised like the config's data preprocessor.

    Args:
        bgr_image (np.ndarray, optional): The ``--image`` as read by ``read_image``; None: a fixed
            random input.
    """
    preprocessor = wrapper.model.data_preprocessor
    if bgr_image is None:
        image = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0)) * 255
    else:
        bgr = torch.from_numpy(bgr_image).permute(2, 0, 1).float()[None]
        image = torch.nn.functional.interpolate(bgr.flip(1), size=shape, mode='bilinear',
                                                align_corners=False)  # BGR -> RGB, resized
    return (image - preprocessor.mean.cpu()) / preprocessor.std.cpu()


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmseg_escnet.apis import OpenVocabInferencer, read_image
    from mmseg_escnet.apis.model_args import resolve_model
    from mmseg_escnet.apis.onnx_export import (FixedVocabularySegmentor, compare_onnx,
                                               export_onnx)
    from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
    from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
    from mmseg_escnet.utils import ensure_writable_dir
    vocab = parse_vocabulary_text(args.vocab)
    Vocabulary(vocab)  # empty, duplicate or missing classes fail before any work
    ensure_writable_dir(osp.dirname(args.out), '--out')
    # the --image is read and checked before anything is built or written
    bgr_image = (None if args.image is None
                 else read_image(args.image, max_pixels=args.max_pixels or None))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, checkpoint = resolve_model(args.config, resolve_checkpoint_arg(args.checkpoint))
    if args.cfg_options:
        model.merge_from_dict(args.cfg_options)
    inferencer = OpenVocabInferencer(model, weights=checkpoint, vocabulary=vocab, device='cpu',
                                     **prompting_overrides(args))
    model = inferencer.model
    model.set_inference_settings(model.inference_settings.replace(mode=args.mode))
    wrapper = FixedVocabularySegmentor(model)
    shape = tuple(args.shape or model.clip_resolution)
    export_onnx(wrapper, args.out, shape=shape)
    print(f'wrote {args.out}: images (1, 3, {shape[0]}, {shape[1]}) -> logits '
          f'(1, {wrapper.num_classes}, {shape[0]}, {shape[1]})')
    status = 0
    if args.verify or args.latency:
        images = _sample(bgr_image, wrapper, shape)
        result = compare_onnx(wrapper, args.out, images, threads=args.threads)
        ok = result['max_abs_diff'] < MAX_ABS_DIFF and result['argmax_agreement'] >= MIN_AGREEMENT
        print(f"verify: max abs logit difference {result['max_abs_diff']:.3g}, identical argmax "
              f"on {result['argmax_agreement']:.4%} of pixels: {'ok' if ok else 'MISMATCH'}")
        if args.verify and not ok:
            print(f'verify failed: needs a difference under {MAX_ABS_DIFF} and at least '
                  f'{MIN_AGREEMENT:.1%} identical labels', file=sys.stderr)
            status = 1
    if args.latency:
        import onnxruntime as ort
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.out, options, providers=['CPUExecutionProvider'])
        feed = {'images': images.numpy()}
        onnx_s = _median_seconds(lambda: session.run(['logits'], feed), args.latency)
        with torch.no_grad():
            torch_s = _median_seconds(lambda: wrapper(images), args.latency)
        print(f'latency (median of {args.latency}): onnxruntime {onnx_s * 1e3:.1f} ms, PyTorch '
              f'{torch_s * 1e3:.1f} ms ({torch_s / onnx_s:.2f}x)')
    return status


if __name__ == '__main__':
    from mmseg_escnet.utils import run_cli
    sys.exit(run_cli(main, 'tools/deployment/pytorch2onnx.py'))
