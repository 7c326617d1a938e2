"""A small synthetic dataset with named classes, generated deterministically on first use.

It exists so that ``python tools/train.py configs/catseg_tiny_synthetic.py`` runs on a fresh checkout with
no data prepared. Every image is a two-region scene (an upper and a lower "stuff" region) with one to three
ellipses or rectangles on top; every region takes the colour of its class plus per-pixel noise and a
per-image brightness shift, so the classes can be learnt from appearance in a few hundred iterations.

On-disk layout (mmseg's generic layout, as the ``BaseSegDataset`` defaults expect)::

    <data_root>/img_dir/{train,val}/00000.png   # uint8 RGB images (H, W, 3)
    <data_root>/ann_dir/{train,val}/00000.png   # uint8 label maps (H, W), values 0..num_classes-1
    <data_root>/meta.json                       # the generation parameters (checked on reuse)
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

CLASSES: Tuple[str, ...] = ('sky', 'grass', 'sand', 'snow', 'brick')
COLORS: Tuple[Tuple[int, int, int], ...] = ((110, 170, 240), (40, 140, 40), (225, 195, 140),
                                            (245, 245, 245), (170, 40, 30))
_FORMAT_VERSION = 1


def _render_sample(rng: np.random.Generator, size: int, noise_std: float) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Returns:
        tuple: RGB image (size, size, 3) uint8 and label map (size, size) uint8.
    """
    num_classes = len(CLASSES)
    label = np.empty((size, size), np.uint8)
    top, bottom = rng.choice(num_classes, size=2, replace=False)
    horizon = int(rng.integers(size // 4, 3 * size // 4))
    label[:horizon], label[horizon:] = top, bottom
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(num_classes))
        cy, cx = (int(v) for v in rng.integers(0, size, size=2))
        ry, rx = (int(v) for v in rng.integers(size // 10, size // 4, size=2))
        if rng.random() < 0.5:
            cv2.ellipse(label, (cx, cy), (rx, ry), 0, 0, 360, color=cls, thickness=-1)
        else:
            cv2.rectangle(label, (cx - rx, cy - ry), (cx + rx, cy + ry), color=cls, thickness=-1)
    palette = np.asarray(COLORS, np.float32)                                 # (K, 3)
    image = palette[label] + rng.normal(0.0, noise_std, (size, size, 3))     # (H, W, 3)
    image += rng.uniform(-20, 20)                                            # brightness shift
    return np.clip(image, 0, 255).astype(np.uint8), label


def _generate(root: str, splits: Dict[str, int], size: int, seed: int, noise_std: float) -> None:
    """Write all splits under ``root`` (which must not exist yet)."""
    for split_index, (split, count) in enumerate(sorted(splits.items())):
        img_dir, ann_dir = osp.join(root, 'img_dir', split), osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        rng = np.random.default_rng([seed, split_index])
        for index in range(count):
            image, label = _render_sample(rng, size, noise_std)
            name = f'{index:05d}.png'
            cv2.imwrite(osp.join(img_dir, name), image[..., ::-1])  # RGB -> BGR for OpenCV
            cv2.imwrite(osp.join(ann_dir, name), label)


def ensure_synthetic_shapes(data_root: str, *, splits: Dict[str, int], image_size: int = 96,
                            seed: int = 0, noise_std: float = 12.0) -> str:
    """Generate the dataset under ``data_root`` unless an identical one is already there.

    Generation writes into a temporary sibling folder and renames it into place, so concurrent
    processes (e.g. DDP ranks) and interrupted runs never leave a half-written dataset behind.

    Args:
        data_root (str): Target folder.
        splits (dict): Number of images per split, e.g. ``{'train': 200, 'val': 40}``.
        image_size (int): Height and width of every image.
        seed (int): Seed of the generator; the same arguments always give the same files.
        noise_std (float): Standard deviation of the per-pixel colour noise.

    Returns:
        str: ``data_root``.

    Raises:
        FileExistsError: If ``data_root`` exists but holds something else.
    """
    meta = dict(format=_FORMAT_VERSION, classes=list(CLASSES), splits=dict(splits),
                image_size=image_size, seed=seed, noise_std=noise_std)
    meta_file = osp.join(data_root, 'meta.json')
    if osp.isdir(data_root):
        if osp.isfile(meta_file):
            with open(meta_file) as f:
                if json.load(f) == meta:
                    return data_root
        raise FileExistsError(
            f'{data_root} exists but is not a synthetic-shapes dataset generated with {meta}; '
            f'remove it or point data_root elsewhere')
    parent = osp.dirname(osp.abspath(data_root))
    os.makedirs(parent, exist_ok=True)
    tmp_root = tempfile.mkdtemp(prefix='.synthetic_shapes_', dir=parent)
    try:
        build = osp.join(tmp_root, 'data')
        _generate(build, splits, image_size, seed, noise_std)
        with open(osp.join(build, 'meta.json'), 'w') as f:
            json.dump(meta, f)
        try:
            os.rename(build, data_root)
        except OSError:
            if not osp.isfile(meta_file):  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return data_root


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """Synthetic scenes of five named classes; generated under ``data_root`` on first use.

    Args:
        data_root (str): Dataset folder (created if missing).
        splits (dict): Images per split to generate, e.g. ``{'train': 200, 'val': 40}``.
        image_size (int): Image height and width.
        seed (int): Generation seed.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset` (``data_prefix``, ``pipeline``, ...).
    """

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in COLORS])

    def __init__(self, data_root: str, *, splits: Dict[str, int], image_size: int = 96,
                 seed: int = 0, **kwargs) -> None:
        ensure_synthetic_shapes(data_root, splits=splits, image_size=image_size, seed=seed)
        super().__init__(data_root=data_root, img_suffix='.png', seg_map_suffix='.png',
                         reduce_zero_label=False, **kwargs)

