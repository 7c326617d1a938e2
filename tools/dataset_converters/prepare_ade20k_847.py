"""Prepare ADE20K-847 (full ADE20K) validation for the A-847 benchmark (CAT-Seg protocol).

Usage::

    python tools/dataset_converters/prepare_ade20k_847.py data/ADE20K_2021_17_01 [--nproc 8]

Reads ``index_ade20k.pkl`` and the validation ``*.jpg`` / ``*_seg.png`` of
``images/ADE/validation``, and writes ``images_detectron2/validation/*.jpg`` (short side <= 512),
``annotations_detectron2/validation/*.tif`` (uint16 0..846, 65535 ignore) and
``ade847_classes.txt`` inside the raw folder, or under ``--out-dir``. Finished images are skipped
unless ``--overwrite``. See :mod:`mmseg_escnet.datasets.preparation.ade20k_847`.
"""
import sys

from mmseg_escnet.datasets.preparation.ade20k_847 import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main, 'prepare_ade20k_847.py'))
