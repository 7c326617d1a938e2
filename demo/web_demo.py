"""A web page that segments an uploaded image with any vocabulary (Gradio, on OpenVocabInferencer).

    python demo/web_demo.py CONFIG|ZOO_NAME [--checkpoint CKPT] [--host 127.0.0.1] [--port 7860]
        [--out-dir DIR] [--share]

Inputs: an image (upload, or one of ``demo/examples``), a vocabulary (comma-separated names,
``|`` between synonyms, or a built-in vocabulary picked from the list) and the test mode
(``whole`` / ``sliding_global``). Outputs: the overlay with a legend of the classes present, a
table of those classes (pixel share, mean probability) and the label map as a PNG to download.
Bad input (no image, an unreadable or huge image, an empty, duplicate or too large vocabulary)
is reported in the page. The page binds to 127.0.0.1 unless ``--host`` says otherwise, and is
public only with ``--share``. The text embeddings of the last vocabularies stay cached
(``ClassEmbedder.cache_size``), so switching back to one costs no encoding. docs/web_demo.md.
"""
import argparse
import html
import os
import os.path as osp
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: Larger vocabularies are refused (CPU memory and time).
MAX_CLASSES = 1000
#: Larger images are refused (the inferencer shrinks the rest to ``max_side``).
MAX_PIXELS = 40_000_000
EXAMPLES = osp.join(osp.dirname(osp.abspath(__file__)), 'examples')
CUSTOM = '(type the classes above)'


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='model config file or model-zoo name')
    parser.add_argument('--checkpoint', help='checkpoint file, URL or model-zoo name')
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (default local)')
    parser.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    parser.add_argument('--out-dir', help='where label maps are written (default: a temp dir)')
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda[:i]' (default: cuda if "
                        'available)')
    parser.add_argument('--share', action='store_true',
                        help="also publish the page through Gradio's share link (off by default)")
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


class InputError(ValueError):
    """Bad input, reported in the page."""


class Segmenter:
    """The page's work: check the inputs, segment, write the label map.

    Args:
        inferencer (OpenVocabInferencer): the model.
        out_dir (str): folder of the label-map PNGs.
    """

    def __init__(self, inferencer, out_dir: str) -> None:
        self.inferencer = inferencer
        self.out_dir = out_dir
        self.base_test_cfg = dict(inferencer.model.test_cfg or {})
        self.runs = 0

    def vocabulary(self, text: str, builtin: Optional[str]):
        """The :class:`Vocabulary` of the text box, else of the built-in name picked."""
        from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
        text = (text or '').strip()
        if not text and builtin and builtin != CUSTOM:
            text = builtin
        try:
            classes = parse_vocabulary_text(text)
            vocabulary = Vocabulary(classes, synonyms=self.inferencer.synonyms,
                                    templates=self.inferencer.vocabulary.templates)
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        if len(vocabulary) > MAX_CLASSES:
            raise InputError(f'the vocabulary has {len(vocabulary)} classes, more than the '
                             f'{MAX_CLASSES} this page takes')
        return vocabulary

    def test_cfg(self, mode: str) -> dict:
        """``test_cfg`` of the mode picked, keeping the model's class filter."""
        cfg = dict(mode=mode, class_filter=self.base_test_cfg.get('class_filter'))
        if mode == 'sliding_global':
            side = self.inferencer.model.clip_resolution[0]
            cfg.update(kernel=self.base_test_cfg.get('kernel', side),
                       overlap=self.base_test_cfg.get('overlap', 0.333),
                       out_size=tuple(self.base_test_cfg.get('out_size', (640, 640))))
        return cfg

    def __call__(self, image: Optional[np.ndarray], text: str, builtin: Optional[str],
                 mode: str, progress=None) -> Tuple[np.ndarray, List[List[str]], str]:
        """Segment ``image`` (H, W, 3) RGB; returns the overlay, the table and the PNG path.

        Raises:
            InputError: for bad input, with the message for the page.
        """
        if image is None:
            raise InputError('no image: upload one or pick an example')
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            raise InputError('the image could not be read')
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise InputError(f'the image has {image.shape[1]} x {image.shape[0]} pixels, more '
                             f'than the {MAX_PIXELS:,} this page takes')
        vocabulary = self.vocabulary(text, builtin)
        if progress is not None:
            progress(0.1, desc=f'text embeddings of {len(vocabulary)} classes')
        self.inferencer.set_vocabulary(vocabulary)
        self.inferencer.model.test_cfg = self.test_cfg(mode)
        if progress is not None:
            progress(0.4, desc=f'segmenting ({mode})')
        bgr = image[:, :, ::-1] if image.ndim == 3 else image  # the inferencer takes BGR
        result = self.inferencer(np.ascontiguousarray(bgr), return_vis=True)
        prediction = result['predictions']
        from mmseg_escnet.apis import write_label_map
        self.runs += 1
        path = osp.join(self.out_dir, f'labels_{self.runs:04d}.png')
        write_label_map(path, prediction['sem_seg'], len(prediction['classes']))
        rows = [[s['name'], f"{s['fraction']:.2%}", f"{s['mean_probability']:.3f}"]
                for s in prediction['scores']]
        return result['visualization'], rows, path


def build_app(segmenter: Segmenter):
    """The Gradio page (``gr.Blocks``); the element ids are what the browser test uses."""
    import gradio as gr
    from mmseg_escnet.text import available_vocabularies

    def run(image, text, builtin, mode, progress=gr.Progress()):
        try:
            overlay, rows, path = segmenter(image, text, builtin, mode, progress)
        except InputError as err:
            message = f'<div class="error">Error: {html.escape(str(err))}</div>'
            return None, [], None, message
        return overlay, rows, path, f'<div class="ok">{len(rows)} classes found</div>'

    examples = sorted(osp.join(EXAMPLES, f) for f in os.listdir(EXAMPLES)
                      if f.endswith('.png')) if osp.isdir(EXAMPLES) else []
    with gr.Blocks(title='mmseg_escnet: open-vocabulary segmentation') as app:
        gr.Markdown('## Open-vocabulary segmentation\nUpload an image, type the classes '
                    '(comma-separated, `|` between synonyms) or pick a built-in vocabulary.')
        with gr.Row():
            with gr.Column():
                image = gr.Image(type='numpy', label='image', elem_id='input-image')
                text = gr.Textbox(label='classes', placeholder='cat, dog|puppy, grass, sky',
                                  elem_id='vocab')
                builtin = gr.Dropdown([CUSTOM, *available_vocabularies()], value=CUSTOM,
                                      label='or a built-in vocabulary', elem_id='builtin')
                mode = gr.Radio(['whole', 'sliding_global'], value='whole', label='mode',
                                elem_id='mode')
                button = gr.Button('Segment', variant='primary', elem_id='run-button')
                if examples:
                    gr.Examples(examples, inputs=image)
            with gr.Column():
                status = gr.HTML(elem_id='status')
                overlay = gr.Image(label='segmentation', elem_id='overlay')
                table = gr.Dataframe(headers=['class', 'pixels', 'mean probability'],
                                     label='classes found', elem_id='classes-table')
                labels = gr.File(label='label map (PNG, class indices)', elem_id='label-map')
        button.click(run, [image, text, builtin, mode], [overlay, table, labels, status])
    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from mmseg_escnet.apis import OpenVocabInferencer
    from mmseg_escnet.checkpoints.model_zoo import resolve_checkpoint_arg
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_arg(args.checkpoint)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='web_demo_')
    os.makedirs(out_dir, exist_ok=True)
    inferencer = OpenVocabInferencer(args.model, weights=checkpoint, device=args.device)
    app = build_app(Segmenter(inferencer, out_dir))
    print(f'label maps go to {out_dir}', flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                       allowed_paths=[out_dir])
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    from mmseg_escnet.utils import run_cli
    sys.exit(run_cli(main, 'demo/web_demo.py'))
