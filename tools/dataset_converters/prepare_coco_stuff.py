"""Prepare COCO-Stuff-171 labels (train2017, val2017) for training and evaluation (CAT-Seg).

Usage::

    python tools/dataset_converters/prepare_coco_stuff.py data/coco-stuff [--splits val2017] \
        [--nproc 8]

Reads the stuffthingmaps ``annotations/<split>/*.png`` (ids 0..181, 255 unlabeled) and writes
``annotations_detectron2/<split>/*.png`` (uint8 0..170, 255 for unlabeled and the 11 unused ids)
inside the raw folder, or under ``--out-dir``. Finished files are skipped unless ``--overwrite``.
See :mod:`mmseg_escnet.datasets.preparation.coco_stuff`.
"""
import sys

from mmseg_escnet.datasets.preparation.coco_stuff import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main, 'prepare_coco_stuff.py'))
