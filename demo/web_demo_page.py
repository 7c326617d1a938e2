"""The Gradio page of demo/web_demo.py: layout, outputs and serving (see docs/web_demo.md).

The page's work is :class:`web_demo.WebSegmenter`; this module builds the ``gr.Blocks`` on it and
serves it with no ``allowed_paths`` (Gradio serves only its upload and cache folder).
"""
import html
import logging
import os
import os.path as osp
from typing import Optional, Sequence

from web_demo_security import Busy, InputError, Refused, RequestTimeout, upload_path

MODES = ('whole', 'sliding_global')
MAX_TEXT = 100_000       # characters of the classes box
GRADIO_QUEUE_MAX = 256   # Gradio's own queue (its raw 503 "Queue is full" beyond), a backstop
EXAMPLE_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'examples')
EXAMPLE_CLASSES = 'sky, grass, sand, snow, brick'  # the classes of the example images
logger = logging.getLogger('web_demo')


def classes_table(segmentation) -> str:
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


def build_app(segmenter, examples: Optional[Sequence[str]] = None,
              upload_dir: Optional[str] = None):
    """The Gradio page (``gr.Blocks``) on ``segmenter``; serve it with :func:`launch`.

    Args:
        segmenter (WebSegmenter): Does the work.
        examples (Sequence[str], optional): Example images (offered with
            :data:`EXAMPLE_CLASSES`); default: the PNGs of ``demo/examples``.
        upload_dir (str, optional): The only folder images are read from; default: Gradio's
            upload folder (``GRADIO_TEMP_DIR``, else ``<temp>/gradio``).

    Element ids (the browser test uses them): ``input-image``, ``vocab``, ``builtin``, ``mode``,
    ``run-button``, ``error-box`` (``.error``: the message), ``status`` (``.result``: the
    summary), ``overlay``, ``classes-table``, ``label-map``.
    """
    import gradio as gr
    from gradio.utils import get_upload_folder
    from mmseg_escnet.text import available_vocabularies
    from mmseg_escnet.utils import one_line

    if examples is None:
        examples = sorted(osp.join(EXAMPLE_DIR, f) for f in os.listdir(EXAMPLE_DIR)
                          if f.endswith('.png')) if osp.isdir(EXAMPLE_DIR) else []
    uploads = upload_dir or get_upload_folder()

    def segment(image, text, mode, progress=gr.Progress()):
        # preprocess=False: ``image`` is the upload's file data, read here so that every problem
        # with it gets a readable message (Gradio's own decoding would only say "Error")
        # and only if it is a file of Gradio's upload folder (one message for any other path)
        try:
            path, name = upload_path(image, uploads)
            out = segmenter(path, text, mode, name, lambda f, desc: progress(f, desc=desc))
        except (InputError, Refused) as err:
            kind = {Busy: 'busy', RequestTimeout: 'timeout'}.get(type(err), 'input')
            return None, '', None, _error(one_line(err), kind), ''
        except Exception as err:  # noqa: BLE001 - the page gets one line, the log the traceback
            logger.exception('segmentation failed')
            return None, '', None, _error(f'segmentation failed: {one_line(err)}'), ''
        height, width = out.label_map.shape
        status = (f'{len(out.scores)} of {len(out.classes)} classes found in {width} x {height} '
                  f'pixels ({out.mode})')
        outputs = (out.overlay, classes_table(out), out.label_map_path, '',
                   f'<span class="result">{html.escape(status)}</span>')
        del out  # the label map at the image's size is not needed any more
        return outputs

    with gr.Blocks(title='Open-vocabulary segmentation', analytics_enabled=False,
                   delete_cache=(3600, 7200)) as app:
        gr.Markdown('## Open-vocabulary segmentation\nUpload an image, type the classes to find '
                    '(comma-separated, `|` between synonyms: `dog|puppy`) or pick a built-in '
                    'vocabulary, and press **Segment**.')
        with gr.Row():
            with gr.Column():
                image = gr.Image(type='filepath', image_mode=None, sources=['upload'],
                                 label='image', height=320, elem_id='input-image')
                text = gr.Textbox(value=segmenter.default_text(), label='classes',
                                  placeholder='cat, dog|puppy, grass, sky',
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
        # the gate (one run, queue_size waiting) does the queueing; one more handler than it
        # admits answers "busy" at once instead of leaving requests in Gradio's queue
        gr.on([button.click, text.submit], segment, [image, text, mode],
              [overlay, table, labels, error, status], preprocess=False,
              concurrency_limit=segmenter.gate.queue_size + 2)
    return app


def _error(message: str, kind: str = 'input') -> str:
    """The error box: ``kind`` is ``input``, ``busy`` or ``timeout`` (a second CSS class)."""
    return f'<div class="error {kind}">{html.escape(message)}</div>'


def launch(app, host: str = '127.0.0.1', port: int = 7860, share: bool = False,
           blocked_paths: Sequence[str] = (), block: bool = True):
    """Queue and serve ``app``; ``block=False`` returns at once (``app.close()`` stops it).

    No ``allowed_paths``: Gradio serves its own upload and cache folder only (the label maps
    are copied there from the segmenter's private folder).

    Args:
        blocked_paths (Sequence[str]): Folders Gradio must never serve (``--out-dir``).

    Returns:
        tuple: Gradio's ``(FastAPI app, local URL, share URL)``.
    """
    # Gradio's own queue is only a backstop: the page's gate answers "busy" long before it fills
    app.queue(max_size=GRADIO_QUEUE_MAX)
    return app.launch(server_name=host, server_port=port, share=share, ssr_mode=False,
                      allowed_paths=[], blocked_paths=list(blocked_paths) or None,
                      max_file_size='200mb', css=CSS, prevent_thread_lock=not block,
                      quiet=not block)
