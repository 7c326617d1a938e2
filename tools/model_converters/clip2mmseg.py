"""Convert official CLIP weights into an mmseg checkpoint for ``CLIPBackbone``.

Usage::

    python tools/model_converters/clip2mmseg.py SRC DST [--model-name ViT-B-16]

SRC is any format ``mmseg_escnet.checkpoints.clip_official`` reads (OpenAI TorchScript
archive or state dict, open_clip ``.bin``/``.pt``/``.pth``/``.safetensors``, or an http(s) URL).
DST is written as ``{'state_dict': {'backbone.clip_model.<name>': tensor}, 'meta': {...}}`` with
float32 tensors, q/k/v split into ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` (the
names CAT-Seg and ``CLIPBackbone`` use) and only plain Python types in ``meta``, so
``load_from=DST`` in an mmseg config loads it under torch's ``weights_only`` loading.

With ``--model-name`` the weights are checked against that open_clip architecture (its shapes,
built on the meta device) and a positional embedding made for another grid is resized to it. The
folder of DST is checked before anything is read; errors are one line on stderr (``--debug`` shows
the traceback): an HTML page (a failed download) is named as such, and a file holding Python objects
besides tensors names them (a legacy-format file too). DST gets its SHA-256 sidecar ``DST.sha256``.
The work is :func:`mmseg_escnet.checkpoints.convert_and_check` (format ``clip_official``).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_escnet.checkpoints.converter_cli import converter_entry_points  # noqa: E402
from mmseg_escnet.utils import run_cli  # noqa: E402

CONVERTER = 'tools/model_converters/clip2mmseg.py'
convert, main = converter_entry_points(
    'clip_official', CONVERTER, 'Convert CLIP weights for mmseg CLIPBackbone',
    options=[('--model-name', dict(default=None, help='open_clip architecture to check the '
                                   'weights against, e.g. ViT-B-16'))])

if __name__ == '__main__':
    sys.exit(run_cli(main, CONVERTER))
