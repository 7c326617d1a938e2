"""Prepare ADE20K-150 validation labels for the A-150 benchmark (CAT-Seg protocol).

Usage::

    python tools/dataset_converters/prepare_ade20k_150.py data/ADEChallengeData2016 [--nproc 8]

Reads ``annotations/validation/*.png`` (0 = other, 1..150) and writes
``annotations_detectron2/validation/*.png`` (uint8 0..149, 255 ignore) inside the raw folder, or
under ``--out-dir``. Finished files are skipped unless ``--overwrite``. See
:mod:`mmseg_escnet.datasets.preparation.ade20k_150`.
"""
import sys

from mmseg_escnet.datasets.preparation.ade20k_150 import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main, 'prepare_ade20k_150.py'))
