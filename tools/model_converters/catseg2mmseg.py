"""Convert an official CAT-Seg (detectron2) checkpoint into an mmseg checkpoint for our CAT-Seg.

Usage::

    python tools/model_converters/catseg2mmseg.py SRC DST [--config CONFIG]

SRC is a local file or an http(s) URL of an official checkpoint, e.g.
``https://huggingface.co/hamacojr/CAT-Seg/resolve/main/model_final_base.pth`` (ViT-B/16) or
``.../model_final_large.pth`` (ViT-L/14@336px). It is read with ``torch.load(...,
weights_only=True)``: a file holding Python objects besides tensors is refused, with a message
naming them; an HTML page (a failed download) and an mmseg/MMEngine training checkpoint (no
conversion needed) are named as such. Every key is converted or refused
(:mod:`mmseg_escnet.checkpoints.catseg_official`).

The result is checked against CONFIG (default: ``configs/catseg_vitb16.py`` or
``configs/catseg_vitl14.py``, by the checkpoint's CLIP architecture): same CLIP architecture, then
the model is built on CPU and must load the weights strictly, key for key and shape for shape.
DST is written as ``{'state_dict': ..., 'meta': {...}}`` with only plain Python types in ``meta``,
so ``load_from=DST`` works under torch's ``weights_only`` loading, with its SHA-256 sidecar
``DST.sha256``; its folder is checked before anything is read or built. Errors are one line on
stderr (``--debug`` shows the traceback). The work is
:func:`mmseg_escnet.checkpoints.convert_and_check` (format ``catseg_official``), as for the
model zoo's ``catseg_*`` names.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_escnet.checkpoints.converter_cli import converter_entry_points  # noqa: E402
from mmseg_escnet.utils import run_cli  # noqa: E402

CONVERTER = 'tools/model_converters/catseg2mmseg.py'
convert, main = converter_entry_points(
    'catseg_official', CONVERTER,
    'Convert an official CAT-Seg (detectron2) checkpoint for mmseg_escnet',
    default_config='configs/catseg_vitb16.py or configs/catseg_vitl14.py by architecture')

if __name__ == '__main__':
    sys.exit(run_cli(main, CONVERTER))
