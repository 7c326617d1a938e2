"""Prepare PASCAL-Context-459 val labels for the PC-459 benchmark (CAT-Seg protocol).

Usage::

    python tools/dataset_converters/prepare_pascal_context_459.py data/VOCdevkit/VOC2010 \
        [--split-file pascalcontext_val.txt] [--nproc 8]

Reads ``trainval/<id>.mat`` (``LabelMap`` 1..459) and ``labels.txt`` from PASCAL-Context's
``trainval.tar.gz``, for the ids of ``pascalcontext_val.txt`` (default: in the raw folder; it is
CAT-Seg's ``datasets/pascalcontext_val.txt``, not part of any raw release). Writes
``annotations_detectron2/pc459_val/<id>.tif`` (uint16 ``LabelMap - 1``) and ``pc459_classes.txt``
inside the raw folder, or under ``--out-dir``. Listed ids without a ``.mat`` are skipped and
reported. Finished files are skipped unless ``--overwrite``. See
:mod:`mmseg_escnet.datasets.preparation.pascal_context`.
"""
import sys
from functools import partial

from mmseg_escnet.datasets.preparation.pascal_context import main
from mmseg_escnet.utils import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(partial(main, classes=459), 'prepare_pascal_context_459.py'))
