"""Calibrate the PPG foreground on synthetic correlation maps with known objects.

ESC-Net's PPG (paper §3.3, Fig. 3 (b)-(c)) binarises a softmax of each class's correlation map at
a threshold alpha; neither alpha nor the scale of the softmax is given. This tool draws correlation
maps whose object masks are known, runs the PPG's foreground step under several settings and
reports the IoU of the binarised foreground with the true object mask::

    python tools/analysis/ppg_calibration.py                      # the default sweep
    python tools/analysis/ppg_calibration.py --normalize minmax --temperatures 0.5 0.72 1.0

The maps imitate CLIP cosine maps on a 24 x 24 grid: a background level with a gentle ramp, one
to three objects (discs, rectangles, an ellipse, an L shape, half the image) that are flat or
peaked in the middle and slightly blurred at their edges, contrasts of 0.05 to 0.2 over the
background, a background ramp of 0.01 and spatially smooth noise of std 0.01 (signal-to-noise
ratios of 5, 10 and 20). ``tests/`` asserts that the
default PPG reaches IoU >= 0.5 on every one of them; docs/escnet.md gives the sweep.
"""
import argparse
import math
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from mmseg_escnet.utils import run_cli

GRID = (24, 24)
CONTRASTS = (0.05, 0.1, 0.2)
PROFILES = ('flat', 'peaked')
NOISE_STD = 0.01  # std of the noise (cosine units): the contrasts give SNRs of 5, 10 and 20
RAMP = 0.01  # height of the background ramp across the image
SEEDS = (0, 1, 2)


class SyntheticMap(NamedTuple):
    """One synthetic correlation map and its objects."""
    name: str
    score: torch.Tensor  # (h, w) float64
    objects: torch.Tensor  # (h, w) bool, the true object mask


def _grid(h: int, w: int):
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    return rows, cols


def _disc(cy: float, cx: float, r: float):
    """An object given by its normalised radial distance d (inside where d <= 1)."""
    def dist(rows, cols):
        return ((rows - cy) ** 2 + (cols - cx) ** 2).sqrt() / r
    return dist


def _ellipse(cy: float, cx: float, ry: float, rx: float, angle: float):
    def dist(rows, cols):
        y, x = rows - cy, cols - cx
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * x + s * y, -s * x + c * y
        return ((u / rx) ** 2 + (v / ry) ** 2).sqrt()
    return dist


def _box(r0: int, r1: int, c0: int, c1: int):
    """Rows r0..r1-1, cols c0..c1-1, as a Chebyshev distance to the box centre."""
    def dist(rows, cols):
        cy, cx = (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
        hy, hx = (r1 - r0) / 2, (c1 - c0) / 2
        return torch.maximum((rows - cy).abs() / hy, (cols - cx).abs() / hx)
    return dist


#: name -> list of (distance function, relative contrast) of the objects in the map
SHAPES: Dict[str, list] = {
    'small_disc': [(_disc(7, 15, 2.6), 1.0)],
    'medium_disc': [(_disc(12, 10, 5.0), 1.0)],
    'large_disc': [(_disc(12, 12, 9.0), 1.0)],
    'wide_rectangle': [(_box(4, 13, 2, 21), 1.0)],
    'tilted_ellipse': [(_ellipse(12, 12, 3.0, 9.0, 0.6), 1.0)],
    'l_shape': [(_box(3, 20, 3, 8), 1.0), (_box(15, 20, 3, 19), 1.0)],
    'half_image': [(_box(0, 11, 0, 24), 1.0)],
    'two_discs': [(_disc(6, 6, 3.5), 1.0), (_disc(17, 16, 4.0), 1.0)],
    'two_discs_unequal': [(_disc(6, 7, 4.0), 1.0), (_disc(16, 16, 4.5), 0.7)],
    'three_blobs': [(_disc(5, 5, 2.5), 1.0), (_disc(5, 18, 3.0), 0.85), (_disc(18, 11, 3.5), 1.0)],
}


def _smooth_noise(h: int, w: int, std: float, gen: torch.Generator) -> torch.Tensor:
    """Spatially correlated Gaussian noise (blurred white noise rescaled to ``std``)."""
    noise = torch.randn(1, 1, h + 2, w + 2, generator=gen, dtype=torch.float64)
    kernel = torch.tensor([1., 2., 1.], dtype=torch.float64)
    kernel = (kernel[:, None] * kernel[None, :]) / 16  # 3 x 3 binomial blur
    noise = F.conv2d(noise, kernel[None, None])[0, 0]  # (h, w)
    return noise / noise.std() * std


def synthetic_map(shape: str, contrast: float, profile: str, seed: int,
                  grid: Sequence[int] = GRID) -> SyntheticMap:
    """One correlation map with known objects.

    Args:
        shape (str): a key of :data:`SHAPES`.
        contrast (float): object level above the background (cosine units).
        profile (str): ``'flat'`` objects, or ``'peaked'`` (1 at the centre, 0.6 at the edge).
        seed (int): seed of the noise and of the ramp direction.
        grid (Sequence[int]): (h, w).

    Returns:
        SyntheticMap: the (h, w) float64 score and the bool object mask.
    """
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    rows, cols = _grid(h, w)
    objects = torch.zeros(h, w, dtype=torch.bool)
    level = torch.zeros(h, w, dtype=torch.float64)
    for dist_fn, rel in SHAPES[shape]:
        d = dist_fn(rows, cols)
        inside = d <= 1
        value = torch.ones_like(d) if profile == 'flat' else 1 - 0.4 * d.clamp(max=1) ** 2
        level = torch.maximum(level, rel * value * inside)
        objects |= inside
    # CLIP maps are blurry: a light blur softens the object edges (the mask stays the sharp one)
    blur = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    blur = (blur[:, None] * blur[None, :])[None, None]
    level = F.conv2d(F.pad(level[None, None], (1, 1, 1, 1), mode='replicate'), blur)[0, 0]
    angle = torch.rand(1, generator=gen, dtype=torch.float64).item() * 2 * math.pi
    ramp = (math.cos(angle) * (cols / (w - 1) - 0.5) + math.sin(angle) * (rows / (h - 1) - 0.5))
    score = 0.15 + RAMP * ramp + contrast * level + _smooth_noise(h, w, NOISE_STD, gen)
    return SyntheticMap(f'{shape}/c{contrast}/{profile}/s{seed}', score, objects)


def synthetic_maps(seeds: Sequence[int] = SEEDS) -> Iterator[SyntheticMap]:
    """Every shape x contrast x profile x seed (10 x 3 x 2 x 3 = 180 maps by default)."""
    for shape in SHAPES:
        for contrast in CONTRASTS:
            for profile in PROFILES:
                for seed in seeds:
                    yield synthetic_map(shape, contrast, profile, seed)


def foreground_ious(ppg, maps: Sequence[SyntheticMap]) -> torch.Tensor:
    """IoU (M,) of ``ppg``'s binarised foreground (Fig. 3 (c)) with each map's objects."""
    score = torch.stack([m.score for m in maps])  # (M, h, w)
    foreground = ppg(score).regions >= 0  # (M, h, w): every foreground pixel has a region
    objects = torch.stack([m.objects for m in maps])
    inter = (foreground & objects).flatten(1).sum(1)
    union = (foreground | objects).flatten(1).sum(1)
    return inter.double() / union.double()


def main(argv: Optional[List[str]] = None) -> None:
    """Print the sweep as a markdown table (errors: one line, ``--debug`` for the traceback).

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    from mmseg_escnet.models.necks.ppg import PseudoPromptGenerator
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--normalize', nargs='+', default=['minmax', 'zscore'])
    parser.add_argument('--smooth', nargs='+', type=int, default=[1, 3],
                        help='sides of the binomial blur (1: none)')
    parser.add_argument('--temperatures', nargs='+', type=float,
                        default=[0.5, 0.72, 1.0, 2.0, 3.0])
    parser.add_argument('--threshold', type=float, default=0.5, help='alpha')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    maps = list(synthetic_maps())
    print(f'{len(maps)} synthetic maps, alpha = {args.threshold}\n')
    print('| normalize | smooth | temperature | foreground | min IoU (worst map) | mean IoU '
          '| maps with IoU >= 0.5 |')
    print('|---|---|---|---|---|---|---|')
    for normalize in args.normalize:
        for smooth in args.smooth:
            for tau in args.temperatures:
                ppg = PseudoPromptGenerator(threshold=args.threshold, temperature=tau,
                                            smooth=smooth, normalize=normalize, use_masks=False)
                iou = foreground_ious(ppg, maps)
                cut = tau * math.log(1 / args.threshold)
                where = (f's >= {1 - cut:.2f}' if normalize == 'minmax'
                         else f'z >= z_max - {cut:.2f}' if normalize == 'zscore'
                         else f'score >= max - {cut:.2f}')
                worst = maps[int(iou.argmin())].name
                print(f'| {normalize} | {smooth} | {tau:g} | {where} | {iou.min():.3f} ({worst}) '
                      f'| {iou.mean():.3f} | {int((iou >= 0.5).sum())}/{len(maps)} |')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/ppg_calibration.py'))
