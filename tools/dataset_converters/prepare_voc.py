"""Prepare PASCAL-VOC-20 and VOC-20b val labels for the PAS-20/-20b benchmarks (CAT-Seg protocol).

Usage::

    python tools/dataset_converters/prepare_voc.py data/VOCdevkit/VOC2012 [--nproc 8]

Reads ``SegmentationClassAug/<id>.png`` (or ``--label-dir``; palette PNGs are read as indices) for
the ids of ``ImageSets/Segmentation/val.txt`` and writes, inside the raw folder or under
``--out-dir``, ``annotations_detectron2/val/<id>.png`` (uint8 0..19, background 255) and
``annotations_detectron2_bg/val/<id>.png`` (uint8 0..20, background 20). As in the official script,
a mask that is all 255 after conversion is not written; those ids are listed in
``val_all_ignore.txt`` beside each ``val/`` folder. Finished files are skipped unless
``--overwrite``. See :mod:`mmseg_escnet.datasets.preparation.voc`.
"""
import sys

from mmseg_escnet.datasets.preparation.voc import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main, 'prepare_voc.py'))
