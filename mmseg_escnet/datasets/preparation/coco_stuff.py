"""COCO-Stuff-171 labels (train2017 and val2017) in CAT-Seg's layout.

Raw release (COCO 2017 images plus ``stuffthingmaps_trainval2017.zip`` from
github.com/nightrome/cocostuff), the folder given as ``raw_root``::

    coco-stuff/
        images/{train2017,val2017}/*.jpg          # read by the datasets, not here
        annotations/{train2017,val2017}/*.png     # uint8 single channel: ids 0..181, 255 unlabeled

The stuffthingmaps store the COCO category id minus one (0 = person, ..., 181 = wood). Eleven
ids of that range have no category (the COCO "thing" ids that were never annotated), so there
are 171 classes.

Output (under ``out_root``, default ``raw_root``)::

    annotations_detectron2/{train2017,val2017}/<same name>.png   # uint8 0..170, 255 ignore

The label mapping sends the 171 existing ids, in increasing order, to 0..170. The 11 missing ids
(:data:`MISSING_IDS`) and 255 go to 255.

Official script: CAT-Seg ``datasets/prepare_coco_stuff.py``. Its ``COCO_CATEGORIES`` (lines 10-180)
pair each ``id`` with a ``trainId``, and the main loop (lines 183-205) reads every file of
``annotations/<split>`` with PIL, asserts uint8, and writes ``id_map[value]`` or 255. MMSeg's
``tools/dataset_converters/coco_stuff164k.py`` (``clsID_to_trID``) is the same table.

Deliberate differences:

* Only ``*.png`` files are converted (the official takes every file of the folder).
* Raw values 182..254 raise :class:`InvalidInputError` (the official maps them to 255; the
  release has none). The 11 missing ids are still mapped to 255, as in the official.
* A palette PNG is read as its indices (PIL, like the official), never as colours.
"""
import glob
import os.path as osp
from typing import List, Optional, Sequence

from .common import (ConversionItem, convert_all, lookup_table, preparation_parser, require_dir,
                     run_preparation, write_image)
from .voc import check_values, read_index_png

NUM_RAW_IDS = 182
#: 0-based stuffthingmap ids without a COCO category (COCO ids 12, 26, 29, 30, 45, 66, 68, 69,
#: 71, 83, 91), absent from ``COCO_CATEGORIES`` of prepare_coco_stuff.py.
MISSING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
#: The 171 existing ids; class ``k`` of the output is ``CLASS_IDS[k]``.
CLASS_IDS = tuple(i for i in range(NUM_RAW_IDS) if i not in MISSING_IDS)
IGNORE = 255
LUT = lookup_table({raw: k for k, raw in enumerate(CLASS_IDS)}, 256, IGNORE)
RAW_VALUES = tuple(range(NUM_RAW_IDS)) + (IGNORE, )
SPLITS = ('train2017', 'val2017')


def convert_one(payload: tuple) -> None:
    """Map one stuffthingmap to 0..170 / 255.

    Args:
        payload (tuple): ``(raw_png, out_png)``.
    """
    raw_path, out_path = payload
    raw = read_index_png(raw_path, 'COCO-Stuff stuffthingmap')
    check_values(raw, RAW_VALUES, raw_path, 'COCO-Stuff stuffthingmap', '{0..181, 255}')
    write_image(out_path, LUT[raw])


def convert(raw_root: str,
            out_root: Optional[str] = None,
            nproc: int = 1,
            overwrite: bool = False,
            splits: Sequence[str] = SPLITS) -> dict:
    """Write ``annotations_detectron2/<split>/*.png`` for each split.

    Args:
        raw_root (str): The ``coco-stuff`` folder.
        out_root (str, optional): Where to write; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again even if the outputs exist.
        splits (Sequence[str]): Subfolders of ``annotations/`` to convert.

    Returns:
        dict: :func:`convert_all`'s counts summed over the splits, plus ``splits`` (the counts of
        each split) and ``out_dirs``.
    """
    out_root = out_root or raw_root
    result = dict(total=0, converted=0, skipped=0, splits={}, out_dirs=[])
    # Check every split before converting any, so a typo fails at once.
    sources = {}
    for split in splits:
        ann_dir = require_dir(osp.join(raw_root, 'annotations', split),
                              f'the COCO-Stuff {split} stuffthingmaps (annotations/{split}/*.png '
                              f'from stuffthingmaps_trainval2017.zip)')
        files = sorted(glob.glob(osp.join(ann_dir, '*.png')))
        if not files:
            raise FileNotFoundError(f'missing the COCO-Stuff {split} stuffthingmaps: no *.png '
                                    f'in {ann_dir}')
        sources[split] = files
    for split, files in sources.items():
        out_dir = osp.join(out_root, 'annotations_detectron2', split)
        items = [ConversionItem(outputs=[osp.join(out_dir, osp.basename(f))],
                                payload=(f, osp.join(out_dir, osp.basename(f)))) for f in files]
        counts = convert_all(convert_one, items, nproc=nproc, overwrite=overwrite,
                             description=f'COCO-Stuff-171 {split}')
        result['splits'][split] = counts
        result['out_dirs'].append(out_dir)
        for key in ('total', 'converted', 'skipped'):
            result[key] += counts[key]
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line: ``prepare_coco_stuff.py data/coco-stuff [--splits val2017] [--nproc N]``."""
    parser = preparation_parser(
        'Write the COCO-Stuff-171 labels of the CAT-Seg protocol.',
        'the coco-stuff folder (holding annotations/<split>)')
    parser.add_argument('--splits', nargs='+', default=list(SPLITS),
                        help='splits to convert (default: %(default)s)')
    _, result = run_preparation(parser, argv, convert, options=('splits', ))
    print(f'done: {result["converted"]} converted, {result["skipped"]} already done')
    return result
