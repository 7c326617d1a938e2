"""A web page that segments an image with any vocabulary (Gradio, on ``OpenVocabInferencer``).

    python demo/web_demo.py CONFIG|ZOO_NAME [--checkpoint CKPT] [--host 127.0.0.1] [--port 7860]
        [--device cpu] [--out-dir DIR] [--max-pixels N] [--max-classes N] [--share]

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
"""
import argparse
import html
import logging
import os
import os.path as osp
import re
import shutil
import socket
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

MODES = ('whole', 'sliding_global')
MAX_CLASSES = 1000       # larger vocabularies are refused (memory and time of the text encoder)
MAX_PIXELS = 40_000_000  # larger images are refused before they are decoded
MAX_TEXT = 100_000       # characters of the classes box
DISPLAY_MAX_SIDE = 2048  # the overlay shown in the page is shrunk to this (the label map is not)
KEEP_RUNS = 50           # label maps of older runs are deleted from the output folder
EXAMPLE_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'examples')
EXAMPLE_CLASSES = 'sky, grass, sand, snow, brick'  # the classes of the example images
logger = logging.getLogger('web_demo')


class InputError(ValueError):
    """Bad input from the page; its message is shown there."""


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
            model's ``test_cfg`` (the configured one is the base of both modes).
        out_dir (str): Folder of the label maps (a subfolder per run; the last
            :data:`KEEP_RUNS` are kept).
        max_pixels (int): Larger images are refused.
        max_classes (int): Larger vocabularies are refused.
        cache_size (int): Vocabularies whose text embeddings the model keeps.
    """

    def __init__(self, inferencer, out_dir: str, max_pixels: int = MAX_PIXELS,
                 max_classes: int = MAX_CLASSES, cache_size: int = 4) -> None:
        if min(max_pixels, max_classes, cache_size) < 1:
            raise ValueError('max_pixels, max_classes and cache_size must be >= 1')
        self.inferencer = inferencer
        self.out_dir = out_dir
        self.max_pixels = max_pixels
        self.max_classes = max_classes
        inferencer.model.test_text.cache_size = cache_size
        self.base_test_cfg = dict(inferencer.model.test_cfg or {})
        # new vocabularies are prompted like the inferencer's (the config's templates)
        self.templates = inferencer.templates or inferencer.vocabulary.templates
        self._lock = threading.Lock()  # one run at a time: the model's state is shared
        self._runs = 0

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
            vocabulary = Vocabulary(classes, synonyms=self.inferencer.synonyms,
                                    templates=self.templates)
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        if len(vocabulary) > self.max_classes:  # a built-in vocabulary
            raise InputError(self._too_many(len(vocabulary)))
        return vocabulary

    def _too_many(self, count: int) -> str:
        return f'the vocabulary has {count} classes, more than the {self.max_classes} allowed'

    def read_image(self, path: Optional[str], name: Optional[str] = None) -> np.ndarray:
        """The uploaded file as a BGR ``uint8`` array; its size is checked from the header first.

        Raises:
            InputError: No image, an unreadable one, or more than ``max_pixels`` pixels.
        """
        from mmseg_escnet.apis import read_image
        if not path:
            raise InputError('no image: upload one or pick an example')
        name = name or osp.basename(path)
        size, pixels = _header_size(path) or ('', 0)
        try:
            if pixels <= self.max_pixels:
                image = read_image(path)
                height, width = image.shape[:2]
                size, pixels = f'{width} x {height}', width * height
        except (OSError, ValueError) as err:
            raise InputError(str(err).replace(path, name)) from None
        if pixels > self.max_pixels:
            raise InputError(f'{name} has {size} pixels, more than the {self.max_pixels:,} this '
                             'page takes')
        return image

    def test_cfg(self, mode: str) -> dict:
        """The model's ``test_cfg`` for ``mode``: the configured keys if the config tests in that
        mode, else the protocol's defaults (``sliding_global``: 384 px crops of the image squashed
        to 640 x 640, overlap 0.333, plus a global view); the class filter in both modes."""
        from mmseg_escnet.models.segmentors.open_vocab_encoder_decoder import TEST_CFG_KEYS
        if mode not in MODES:
            raise InputError(f'unknown mode {mode!r}; choose one of {", ".join(MODES)}')
        same_mode = self.base_test_cfg.get('mode', 'whole') == mode
        cfg = {k: v for k, v in self.base_test_cfg.items()
               if k in TEST_CFG_KEYS[mode] and (same_mode or k == 'class_filter')}
        return dict(cfg, mode=mode)

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
        """
        from mmseg_escnet.apis import shrink_to_max_side, write_label_map
        report = progress or (lambda fraction, desc: None)
        report(0.0, 'checking the input')
        test_cfg = self.test_cfg(mode)
        vocabulary = self.vocabulary(text)
        image = self.read_image(image_path, name)
        with self._lock:
            report(0.1, f'segmenting with {len(vocabulary)} classes ({mode})')
            self.inferencer.set_vocabulary(vocabulary)  # a recent one keeps its embeddings
            self.inferencer.model.test_cfg = test_cfg
            result = self.inferencer(image, return_vis=True)
            prediction, palette = result['predictions'], self.inferencer.palette
            self._runs += 1
            run = self._runs
        report(0.9, 'writing the label map')
        shutil.rmtree(osp.join(self.out_dir, f'run_{run - KEEP_RUNS:06d}'), ignore_errors=True)
        stem = re.sub(r'[^\w.-]+', '_', osp.splitext(name or '')[0])[:64].strip('._') or 'image'
        path = write_label_map(osp.join(self.out_dir, f'run_{run:06d}', f'{stem}_labels.png'),
                               prediction['sem_seg'], len(prediction['classes']))
        return Segmentation(overlay=shrink_to_max_side(result['visualization'], DISPLAY_MAX_SIDE),
                            label_map=prediction['sem_seg'], label_map_path=path,
                            scores=prediction['scores'], classes=prediction['classes'],
                            palette=palette, mode=mode)


def _header_size(path: str) -> Optional[Tuple[str, float]]:
    """The size in the image's header read by Pillow (e.g. ``('640 x 480', 307200)``), None if
    Pillow cannot read it; beyond Pillow's decompression-bomb limit, the pixel count it names."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with Image.open(path) as image:
                return f'{image.width} x {image.height}', image.width * image.height
    except Image.DecompressionBombError as err:
        found = re.search(r'\((\d+) pixels\)', str(err))
        pixels = int(found.group(1)) if found else float('inf')
        return (f'{pixels:,}' if found else 'too many'), pixels
    except Exception:  # noqa: BLE001 - then read_image says what is wrong
        return None


def classes_table(segmentation: Segmentation) -> str:
    """HTML table of the classes present: colour, name, pixel share, mean probability."""
    rows = []
    for score in segmentation.scores:
        red, green, blue = (int(c) for c in segmentation.palette[score['index']])
        rows.append(
            f'<tr><td><span class="swatch" style="background: rgb({red}, {green}, {blue})">'
            f'</span></td><td class="class-name">{html.escape(score["name"])}</td>'
            f'<td class="fraction">{score["fraction"]:.2%}</td>'
            f'<td class="probability">{score["mean_probability"]:.3f}</td></tr>')
    return ('<table class="classes"><thead><tr><th></th><th>class</th><th>pixels</th>'
            f'<th>mean probability</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


CSS = """
#error-box .error {color: #b00020; border: 1px solid #b00020; border-radius: 6px; padding: 8px;}
table.classes .swatch {display: inline-block; width: 1.2em; height: 1.2em; border-radius: 3px;
                       border: 1px solid #0003;}
table.classes td, table.classes th {padding: 2px 10px; text-align: left;}
#input-image img, #overlay img {width: 100%; height: 100%; object-fit: contain;}
"""


def build_app(segmenter: WebSegmenter, examples: Optional[Sequence[str]] = None):
    """The Gradio page (``gr.Blocks``) on ``segmenter``; serve it with :func:`launch`.

    Args:
        segmenter (WebSegmenter): Does the work.
        examples (Sequence[str], optional): Example images (offered with
            :data:`EXAMPLE_CLASSES`); default: the PNGs of ``demo/examples``.

    Element ids (the browser test uses them): ``input-image``, ``vocab``, ``builtin``, ``mode``,
    ``run-button``, ``error-box`` (``.error``: the message), ``status`` (``.result``: the
    summary), ``overlay``, ``classes-table``, ``label-map``.
    """
    import gradio as gr
    from mmseg_escnet.text import available_vocabularies
    from mmseg_escnet.utils import one_line

    if examples is None:
        examples = sorted(osp.join(EXAMPLE_DIR, f) for f in os.listdir(EXAMPLE_DIR)
                          if f.endswith('.png')) if osp.isdir(EXAMPLE_DIR) else []

    def segment(image, text, mode, progress=gr.Progress()):
        # preprocess=False: ``image`` is the upload's file data, read here so that every problem
        # with it gets a readable message (Gradio's own decoding would only say "Error")
        path, name = (image.get('path'), image.get('orig_name')) if image else (None, None)
        try:
            out = segmenter(path, text, mode, name, lambda f, desc: progress(f, desc=desc))
        except InputError as err:
            return None, '', None, _error(one_line(err)), ''
        except Exception as err:  # noqa: BLE001 - the page gets one line, the log the traceback
            logger.exception('segmentation failed')
            return None, '', None, _error(f'segmentation failed: {one_line(err)}'), ''
        height, width = out.label_map.shape
        status = (f'{len(out.scores)} of {len(out.classes)} classes found in {width} x {height} '
                  f'pixels ({out.mode})')
        return (out.overlay, classes_table(out), out.label_map_path, '',
                f'<span class="result">{html.escape(status)}</span>')

    with gr.Blocks(title='Open-vocabulary segmentation', analytics_enabled=False,
                   delete_cache=(3600, 7200)) as app:
        gr.Markdown('## Open-vocabulary segmentation\nUpload an image, type the classes to find '
                    '(comma-separated, `|` between synonyms: `dog|puppy`) or pick a built-in '
                    'vocabulary, and press **Segment**.')
        with gr.Row():
            with gr.Column():
                image = gr.Image(type='filepath', image_mode=None, sources=['upload'],
                                 label='image', height=320, elem_id='input-image')
                text = gr.Textbox(label='classes', placeholder='cat, dog|puppy, grass, sky',
                                  max_length=MAX_TEXT, elem_id='vocab')
                builtin = gr.Dropdown(available_vocabularies(), value=None, elem_id='builtin',
                                      label='built-in vocabulary (fills the classes box)')
                mode = gr.Radio(list(MODES), value='whole', label='test mode', elem_id='mode',
                                info="sliding_global: CAT-Seg's protocol (crops of the image "
                                'squashed to 640 x 640, plus a global view), slower')
                button = gr.Button('Segment', variant='primary', elem_id='run-button')
                if examples:
                    gr.Examples([[path, EXAMPLE_CLASSES] for path in examples], [image, text],
                                label='examples')
            with gr.Column():
                error = gr.HTML(elem_id='error-box')
                status = gr.HTML(elem_id='status')
                overlay = gr.Image(label='segmentation', format='png', interactive=False,
                                   height=320, elem_id='overlay')
                table = gr.HTML(elem_id='classes-table')
                labels = gr.File(label='label map (PNG of class ids, at the image size)',
                                 interactive=False, elem_id='label-map')
        builtin.input(lambda name: name or gr.skip(), builtin, text)
        gr.on([button.click, text.submit], segment, [image, text, mode],
              [overlay, table, labels, error, status], preprocess=False, concurrency_limit=1)
    return app


def _error(message: str) -> str:
    return f'<div class="error">{html.escape(message)}</div>'


def launch(app, host: str = '127.0.0.1', port: int = 7860, share: bool = False,
           allowed_paths: Sequence[str] = (), block: bool = True):
    """Queue and serve ``app``; ``block=False`` returns at once (``app.close()`` stops it).

    Returns:
        tuple: Gradio's ``(FastAPI app, local URL, share URL)``.
    """
    app.queue(max_size=32)
    return app.launch(server_name=host, server_port=port, share=share, ssr_mode=False,
                      allowed_paths=list(allowed_paths), max_file_size='200mb', css=CSS,
                      prevent_thread_lock=not block, quiet=not block)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Web page for open-vocabulary segmentation')
    parser.add_argument('config', help='config file or model-zoo name')
    parser.add_argument('--checkpoint', help='weights: file, URL or model-zoo name (optional for '
                        'a model-zoo CONFIG; without any, the weights are random)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    parser.add_argument('--share', action='store_true',
                        help='also publish the page on a public gradio.live link (never default)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:1... (default: CUDA if available, else CPU)')
    parser.add_argument('--out-dir', help='folder of the label maps (default: a temporary one)')
    parser.add_argument('--max-side', type=int, default=1024,
                        help='shrink larger images to this longer side before inference')
    parser.add_argument('--max-pixels', type=int, default=MAX_PIXELS,
                        help=f'refuse larger images (default {MAX_PIXELS})')
    parser.add_argument('--max-classes', type=int, default=MAX_CLASSES,
                        help=f'refuse larger vocabularies (default {MAX_CLASSES})')
    parser.add_argument('--cache-size', type=int, default=4,
                        help='vocabularies whose text embeddings are kept (default 4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.neck.class_chunk_size=64')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options, a missing gradio and a busy port before the model is built."""
    for option in ('max_side', 'max_pixels', 'max_classes', 'cache_size'):
        if getattr(args, option) < 1:
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
    from mmseg_escnet.utils import ensure_writable_dir
    if args.device is not None:
        check_device(args.device, what='--device')
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='web_demo_')
    ensure_writable_dir(out_dir, '--out-dir')
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_arg(args.checkpoint)
    model = args.config
    if args.cfg_options:
        model, checkpoint = resolve_model(args.config, checkpoint)  # (Config, weights)
        model.merge_from_dict(args.cfg_options)
    inferencer = OpenVocabInferencer(model, weights=checkpoint, device=args.device,
                                     max_side=args.max_side)
    segmenter = WebSegmenter(inferencer, out_dir, max_pixels=args.max_pixels,
                             max_classes=args.max_classes, cache_size=args.cache_size)
    if args.share:
        print('--share: the page is public on a gradio.live link while this runs', flush=True)
    print(f'label maps go to {out_dir}', flush=True)
    launch(build_app(segmenter), args.host, args.port, args.share, allowed_paths=[out_dir])
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` with one-line errors and exit status 1 (``--debug``: the traceback)."""
    from mmseg_escnet.utils import run_cli
    return run_cli(main, 'web_demo.py', argv)


if __name__ == '__main__':
    sys.exit(cli())
