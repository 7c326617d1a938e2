"""Convert an official ERR-Seg (detectron2) checkpoint into an mmseg checkpoint for our ERR-Seg.

Usage::

    python tools/model_converters/errseg2mmseg.py SRC DST [--config CONFIG]

SRC is a local file or an http(s) URL of an official checkpoint (lchen1019/ERR-Seg's README links
the ConvNeXt-B and ConvNeXt-L models on the Hugging Face Hub, ``lchen1019/ERR-Seg``). It is read
with ``torch.load(..., weights_only=True)``: a file holding Python objects besides tensors is
refused with a message naming them; an HTML page (a failed download) and an mmseg/MMEngine
training checkpoint (no conversion needed) are named as such. Every key is converted or refused
(:mod:`mmseg_escnet.checkpoints.errseg_official`).

The result is checked against CONFIG (default: ``configs/errseg_convnext_base.py`` or
``configs/errseg_convnext_large.py``, by the checkpoint's ConvNeXt width): the model is built on
CPU and must load the weights strictly, key for key and shape for shape. DST is written as
``{'state_dict': ..., 'meta': {...}}`` with only plain Python types in ``meta``, with its SHA-256
sidecar ``DST.sha256``. Errors are one line on stderr (``--debug`` shows the traceback). The work
is :func:`mmseg_escnet.checkpoints.convert_and_check` (format ``errseg_official``), as for the
model zoo's ``errseg_*`` names.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_escnet.checkpoints.converter_cli import converter_entry_points  # noqa: E402
from mmseg_escnet.utils import run_cli  # noqa: E402

CONVERTER = 'tools/model_converters/errseg2mmseg.py'
convert, main = converter_entry_points(
    'errseg_official', CONVERTER,
    'Convert an official ERR-Seg (detectron2) checkpoint for mmseg_escnet',
    default_config='configs/errseg_convnext_base.py or configs/errseg_convnext_large.py')

if __name__ == '__main__':
    sys.exit(run_cli(main, CONVERTER))
