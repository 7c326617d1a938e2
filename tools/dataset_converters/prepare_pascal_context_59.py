"""Prepare PASCAL-Context-59 val labels for the PC-59 benchmark (CAT-Seg protocol).

Usage::

    python tools/dataset_converters/prepare_pascal_context_59.py data/VOCdevkit/VOC2010 [--nproc 8]

Reads ``trainval_merged.json`` (PASCAL in Detail, or ``--json-file``), paints the RLE masks of each
val image in file order and writes ``annotations_detectron2/pc59_val/<id>.png`` (uint8 0..58,
background and the other classes 255) inside the raw folder, or under ``--out-dir``. Finished files
are skipped unless ``--overwrite``. See :mod:`mmseg_escnet.datasets.preparation.pascal_context`.
"""
import sys
from functools import partial

from mmseg_escnet.datasets.preparation.pascal_context import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(partial(main, classes=59), 'prepare_pascal_context_59.py'))
