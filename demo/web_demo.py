"""A web page that segments an image with any vocabulary (Gradio, on ``OpenVocabInferencer``).

    python demo/web_demo.py CONFIG|ZOO_NAME [--checkpoint CKPT] [--host 127.0.0.1] [--port 7860]
        [--device cpu] [--out-dir DIR] [--max-pixels N] [--max-classes N] [--share]
        [--request-timeout S] [--queue-size N]

Inputs: an image (uploaded, or one of ``demo/examples``), the classes (comma-separated, ``|``
between synonyms, or a built-in vocabulary name, which the drop-down fills in) and the test mode
(``whole`` or CAT-Seg's ``sliding_global`` protocol). Outputs: the overlay with a legend of the
classes present, a table of those classes (colour, pixel share, mean probability) and the label map
as a PNG to download (:func:`mmseg_escnet.apis.write_label_map`). Bad input (no image, an
unreadable or too large image, an empty, duplicate, mistyped or too large vocabulary) is reported
in the page (``#error-box``), never as a traceback. The text embeddings of the last
``--cache-size`` vocabularies are kept (``ClassEmbedder.cache_size``), so coming back to one does
not encode it again. The page listens on 127.0.0.1 unless ``--host`` says otherwise and is public
only with ``--share``. Start-up errors exit with status 1 and one line (``--debug``: the
traceback). See docs/web_demo.md.

What it trusts (:mod:`web_demo_security`): an image is read only from Gradio's upload folder;
the only files it writes for download are its label maps, in a private temporary folder (Gradio
serves its copy; ``--out-dir`` gets another copy and is never served). One segmentation runs at a
time, at most ``--queue-size`` wait (others are told the server is busy), each is stopped after
``--request-timeout`` seconds, and the memory a run held is released after it.
"""
import argparse
import atexit
import os
import os.path as osp
import re
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the two modules beside this file
from web_demo_page import (EXAMPLE_CLASSES, MAX_TEXT, MODES, build_app,  # noqa: E402
                           classes_table, launch)
from web_demo_security import (NOT_AN_UPLOAD, Busy, InputError, Refused,  # noqa: E402
                               RequestGate, RequestTimeout, blocked_out_dir, release_memory)

__all__ = ['Busy', 'EXAMPLE_CLASSES', 'InputError', 'NOT_AN_UPLOAD', 'Refused', 'RequestTimeout',
           'Segmentation', 'WebSegmenter', 'build_app', 'classes_table', 'launch', 'main']

MAX_CLASSES = 1000       # larger vocabularies are refused (memory and time of the text encoder)
DISPLAY_MAX_SIDE = 2048  # the overlay shown in the page is shrunk to this (the label map is not)
KEEP_RUNS = 50           # label maps of older runs are deleted from the output folder
REQUEST_TIMEOUT = 120.0  # seconds a run may use the model
QUEUE_SIZE = 8           # requests that may wait while one runs


@dataclass
class Segmentation:
    """What one run of :class:`WebSegmenter` gives the page."""

    overlay: np.ndarray           # (h, w, 3) RGB uint8: overlay and legend, shrunk for display
    label_map: np.ndarray         # (H0, W0) int32 class ids at the image's size
    label_map_path: str           # the label map as written by ``write_label_map``
    scores: List[Dict[str, Any]]  # the inferencer's scores: classes present, largest first
    classes: List[str]            # the T display names
    palette: np.ndarray           # (T, 3) RGB uint8
    mode: str


class WebSegmenter:
    """The page's work, without Gradio: check the inputs, segment, write the label map.

    Args:
        inferencer (OpenVocabInferencer): The model. Every call sets its vocabulary and its
            model's inference settings (the configured ones are the base of both modes).
        out_dir (str, optional): Folder where a copy of each label map goes (a subfolder per
            run; the last :data:`KEEP_RUNS` are kept). The page never serves it.
        max_pixels (int, optional): Larger images are refused (None: ``MAX_IMAGE_PIXELS``).
        max_classes (int): Larger vocabularies are refused.
        cache_size (int): Vocabularies whose text embeddings the model keeps.
        request_timeout (float): Seconds a run may use the model before it is stopped.
        queue_size (int): Requests that may wait while one runs; more are told to try again.

    The label maps are written in :attr:`label_dir`, a private temporary folder of this process
    (deleted at exit): the page offers them from there, through Gradio's copy.
    """

    def __init__(self, inferencer, out_dir: Optional[str] = None, max_pixels: Optional[int] = None,
                 max_classes: int = MAX_CLASSES, cache_size: int = 4,
                 request_timeout: float = REQUEST_TIMEOUT, queue_size: int = QUEUE_SIZE) -> None:
        from mmseg_escnet.apis.image_limits import MAX_IMAGE_PIXELS
        max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
        if min(max_pixels, max_classes, cache_size) < 1:
            raise ValueError('max_pixels, max_classes and cache_size must be >= 1')
        self.inferencer = inferencer
        self.out_dir = out_dir
        self.label_dir = tempfile.mkdtemp(prefix='web_demo_labels_')
        atexit.register(shutil.rmtree, self.label_dir, True)
        self.gate = RequestGate(inferencer.model, request_timeout, queue_size)
        self.max_pixels = max_pixels
        self.max_classes = max_classes
        inferencer.model.test_text.cache_size = cache_size
        self.base_settings = inferencer.model.inference_settings
        self._runs = 0

    def default_text(self) -> str:
        """The classes box's initial text: the model's configured test vocabulary (e.g. the
        classes it was fine-tuned on), ``'a|synonym, b'``; empty when it has more than
        ``max_classes`` classes."""
        vocabulary = self.inferencer.vocabulary
        if len(vocabulary) > self.max_classes:
            return ''
        return ', '.join('|'.join(synonyms) for synonyms in vocabulary.all_synonyms)

    def vocabulary(self, text: Optional[str]):
        """The :class:`Vocabulary` of the classes box.

        Text without a comma is a built-in vocabulary name or one class: unlike the command line,
        the page never reads files of the server.

        Raises:
            InputError: Empty, malformed or mistyped; duplicate classes; more than
                ``max_classes`` classes; a file path.
        """
        from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
        from mmseg_escnet.text.vocabulary import builtin_vocabulary
        text = (text or '').strip()
        if len(text) > MAX_TEXT:
            raise InputError(f'the classes box holds {len(text)} characters, more than {MAX_TEXT}')
        if ',' not in text and text and builtin_vocabulary(text) is None:
            if '/' in text or '\\' in text or osp.splitext(text)[1].lower() in ('.txt', '.json'):
                raise InputError(f'{text!r}: this page reads no vocabulary files; type the class '
                                 'names (comma-separated) or pick a built-in vocabulary')
            if osp.exists(text):
                text += ','  # one class named like a file of the server's folder, not the file
        try:
            classes = parse_vocabulary_text(text)
            if isinstance(classes, list) and len(classes) > self.max_classes:  # before building
                raise InputError(self._too_many(len(classes)))
            # prompted as the inferencer prompts (the model's own policy): as in the test loop
            vocabulary = Vocabulary(classes, **self.inferencer.vocabulary_options())
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        if len(vocabulary) > self.max_classes:  # a built-in vocabulary
            raise InputError(self._too_many(len(vocabulary)))
        return vocabulary

    def _too_many(self, count: int) -> str:
        return f'the vocabulary has {count} classes, more than the {self.max_classes} allowed'

    def check_image(self, path: Optional[str], name: Optional[str] = None) -> None:
        """Refuse no image, or more than ``max_pixels`` pixels in the header (before queueing).

        Raises:
            InputError: No image, a file whose size cannot be read from its header, or one over
                the limit (``image_limits.check_image_file``, the limit of every entry point).
        """
        from mmseg_escnet.apis.image_limits import check_image_file
        if not path:
            raise InputError('no image: upload one or pick an example')
        try:
            check_image_file(path, self.max_pixels)
        except (OSError, ValueError) as err:
            raise InputError(str(err).replace(path, name or osp.basename(path))) from None

    def read_image(self, path: Optional[str], name: Optional[str] = None) -> np.ndarray:
        """The uploaded file as a BGR ``uint8`` array; its size is checked from the header first.

        Raises:
            InputError: No image, an unreadable one, or more than ``max_pixels`` pixels.
        """
        from mmseg_escnet.apis import read_image
        self.check_image(path, name)
        try:
            return read_image(path, max_pixels=self.max_pixels)
        except (OSError, ValueError) as err:
            raise InputError(str(err).replace(path, name or osp.basename(path))) from None

    def settings(self, mode: str):
        """The model's inference settings for ``mode``: the configured ones if the config tests
        in that mode, else the protocol's defaults (``sliding_global``: 384 px crops of the image
        squashed to 640 x 640, overlap 0.333, plus a global view); the class filter in both
        modes."""
        if mode not in MODES:
            raise InputError(f'unknown mode {mode!r}; choose one of {", ".join(MODES)}')
        return self.base_settings.replace(mode=mode)

    def __call__(self, image_path: Optional[str], text: Optional[str], mode: str,
                 name: Optional[str] = None,
                 progress: Optional[Callable[[float, str], None]] = None) -> Segmentation:
        """Segment the image file ``image_path`` with the classes ``text`` in test mode ``mode``.

        Args:
            image_path (str, optional): The image file.
            text (str, optional): The classes, as typed.
            mode (str): ``'whole'`` or ``'sliding_global'``.
            name (str, optional): The file's name, for messages and the label map's name.
            progress (callable, optional): Called with a fraction and a description.

        Raises:
            InputError: For bad input, with the message for the page.
            Busy: ``queue_size`` requests are already waiting.
            RequestTimeout: The run used the model longer than ``request_timeout`` seconds.
        """
        report = progress or (lambda fraction, desc: None)
        report(0.0, 'checking the input')
        settings = self.settings(mode)
        vocabulary = self.vocabulary(text)
        self.check_image(image_path, name)
        with self.gate.admit():  # Busy when the queue is full
            if self.gate.waiting:
                report(0.05, f'waiting for the model ({self.gate.waiting} requests ahead)')
            with self.gate.run():  # RequestTimeout when over the limit
                image = self.read_image(image_path, name)  # decoded only when its turn comes
                self.gate.check_time()
                report(0.1, f'segmenting with {len(vocabulary)} classes ({mode})')
                self.inferencer.set_vocabulary(vocabulary)  # a recent one keeps its embeddings
                self.inferencer.model.set_inference_settings(settings)
                result = self.inferencer(image, return_vis=True)  # stopped at the time limit
                del image
                self._runs += 1
                run = self._runs
            report(0.9, 'writing the label map')
            try:
                return self._segmentation(result, run, name or osp.basename(image_path), mode)
            finally:
                del result
                release_memory()

    def _segmentation(self, result: dict, run: int, name: str, mode: str) -> Segmentation:
        """Write the label map of run ``run`` (and its ``out_dir`` copy); the page's outputs."""
        from mmseg_escnet.apis import shrink_to_max_side, write_label_map
        prediction = result['predictions']
        stem = re.sub(r'[^\w.-]+', '_', osp.splitext(name)[0])[:64].strip('._') or 'image'
        file_name = f'{stem}_labels.png'
        folders = [self.label_dir] + ([self.out_dir] if self.out_dir else [])
        for folder in folders:
            shutil.rmtree(osp.join(folder, f'run_{run - KEEP_RUNS:06d}'), ignore_errors=True)
        path = write_label_map(osp.join(self.label_dir, f'run_{run:06d}', file_name),
                               prediction['sem_seg'], len(prediction['classes']))
        if self.out_dir:
            os.makedirs(osp.join(self.out_dir, f'run_{run:06d}'), exist_ok=True)
            shutil.copyfile(path, osp.join(self.out_dir, f'run_{run:06d}', file_name))
        return Segmentation(overlay=shrink_to_max_side(result['visualization'], DISPLAY_MAX_SIDE),
                            label_map=prediction['sem_seg'], label_map_path=path,
                            scores=prediction['scores'], classes=prediction['classes'],
                            palette=self.inferencer.palette, mode=mode)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    from mmengine.config import DictAction

    from mmseg_escnet.utils import add_prompting_arguments
    parser = argparse.ArgumentParser(description='Web page for open-vocabulary segmentation')
    parser.add_argument('config', help='config file, model-zoo name or published model folder '
                        '(DIR/: config.py and its weights)')
    parser.add_argument('--checkpoint', help='weights: file, URL or model-zoo name (optional for '
                        'a model-zoo CONFIG; without any, the weights are random)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    parser.add_argument('--share', action='store_true',
                        help='also publish the page on a public gradio.live link (never default)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:1... (default: CUDA if available, else CPU)')
    parser.add_argument('--out-dir', help='also copy the label maps to this folder (never '
                        'served; default: none, they stay in a private temporary folder)')
    parser.add_argument('--max-side', type=int, default=1024,
                        help='shrink larger images to this longer side before inference')
    parser.add_argument('--max-pixels', type=int, default=None,
                        help='refuse images with more pixels in their header (default: the '
                        "package's limit, mmseg_escnet.apis.MAX_IMAGE_PIXELS, 40 Mpixels)")
    parser.add_argument('--max-classes', type=int, default=MAX_CLASSES,
                        help=f'refuse larger vocabularies (default {MAX_CLASSES})')
    parser.add_argument('--request-timeout', type=float, default=REQUEST_TIMEOUT,
                        help='seconds a segmentation may run before it is stopped (default '
                        f'{REQUEST_TIMEOUT:g})')
    parser.add_argument('--queue-size', type=int, default=QUEUE_SIZE,
                        help='requests that may wait while one runs; more are told the server '
                        f'is busy (default {QUEUE_SIZE})')
    parser.add_argument('--cache-size', type=int, default=4,
                        help='vocabularies whose text embeddings are kept (default 4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.neck.class_chunk_size=64')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    add_prompting_arguments(parser)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options, a missing gradio and a busy port before the model is built."""
    if not args.request_timeout > 0:
        raise ValueError(f'--request-timeout must be > 0 seconds, got {args.request_timeout}')
    if args.queue_size < 0:
        raise ValueError(f'--queue-size must be >= 0, got {args.queue_size}')
    for option in ('max_side', 'max_pixels', 'max_classes', 'cache_size'):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise ValueError(f'--{option.replace("_", "-")} must be >= 1, got '
                             f'{getattr(args, option)}')
    if not 0 < args.port < 65536:
        raise ValueError(f'--port must be in 1..65535, got {args.port}')
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ImportError(f'the web demo needs gradio ({err}): pip install -r '
                          'requirements/demo.txt -c requirements/constraints.txt') from None
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise OSError(f'cannot listen on {args.host}:{args.port} ({err.strerror or err}); '
                          'choose another --port or --host') from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the model and serve the page until interrupted; errors are raised."""
    args = parse_args(argv)
    check_args(args)
    from mmseg_escnet.apis import OpenVocabInferencer
    from mmseg_escnet.apis.model_args import check_device, resolve_model
    from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
    from mmseg_escnet.utils import ensure_writable_dir, prompting_overrides
    if args.device is not None:
        check_device(args.device, what='--device')
    out_dir = args.out_dir
    if out_dir:
        ensure_writable_dir(out_dir, '--out-dir')
        blocked_out_dir(out_dir, tempfile.gettempdir())  # inside Gradio's folder: refused now
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_arg(args.checkpoint)
    model = args.config
    if args.cfg_options:
        model, checkpoint = resolve_model(args.config, checkpoint)  # (Config, weights)
        model.merge_from_dict(args.cfg_options)
    inferencer = OpenVocabInferencer(model, weights=checkpoint, device=args.device,
                                     max_side=args.max_side, **prompting_overrides(args))
    segmenter = WebSegmenter(inferencer, out_dir, max_pixels=args.max_pixels,
                             max_classes=args.max_classes, cache_size=args.cache_size,
                             request_timeout=args.request_timeout, queue_size=args.queue_size)
    if args.share:
        print('--share: the page is public on a gradio.live link while this runs', flush=True)
    if out_dir:
        print(f'label maps are copied to {out_dir} (not served)', flush=True)
    launch(build_app(segmenter), args.host, args.port, args.share,
           blocked_paths=blocked_out_dir(out_dir, segmenter.label_dir))
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` with one-line errors and exit status 1 (``--debug``: the traceback)."""
    from mmseg_escnet.utils import run_cli
    return run_cli(main, 'web_demo.py', argv)


if __name__ == '__main__':
    # SIGTERM ends the page like Ctrl-C: the server closes, the private label folder is deleted
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    sys.exit(cli())
