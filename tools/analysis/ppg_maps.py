"""Synthetic class score maps with known objects, in named sets, for calibrating ESC-Net's PPG.

The maps imitate CLIP cosine maps on a 24 x 24 grid: a background level of 0.15 with a gentle ramp
(0.01 across the image, random direction), spatially smooth Gaussian noise (std 0.01), and zero to
three objects that are flat or peaked in the middle (1 at the centre, 0.6 at the edge) and slightly
blurred at their edges, at contrasts 0.05 / 0.1 / 0.2 over the background (signal-to-noise ratios of
5, 10 and 20). Each map carries its true object mask.

The sets (:func:`map_set`):

* ``tune``: the 180 maps the PPG constants are chosen on: 10 fixed layouts (:data:`TUNE_LAYOUTS`)
  x 3 contrasts x 2 profiles x noise seeds 0-2.
* ``heldout``: 180 maps of the same family that choose nothing: 30 random layouts
  (:func:`random_layout`: 1-3 discs, ellipses, rectangles or triangles of 15-300 cells in all,
  off the border, secondary objects at 0.7-1 of the first one's contrast) x 3 contrasts x 2
  profiles, one noise seed per layout (1100-1129).
* ``stress``: harder variants (:data:`STRESS_VARIANTS`), noise seeds 20-22: each changes one
  thing (a lower object edge, a faint second object, more noise, outliers, a tiny object, an
  object on the border or over 2/3 of the grid, a steeper ramp).
* ``absent``: noise-only maps (the background model with no object, an absent class) at noise
  std 0.005 / 0.01 / 0.02 / 0.03, 20 seeds each (seeds 400-419); ``tune_absent`` is the same with
  seeds 300-319, for choosing a setting without touching the reported maps.
"""
import math
from typing import Callable, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

GRID = (24, 24)
BACKGROUND = 0.15  # background cosine level
CONTRASTS = (0.05, 0.1, 0.2)  # object level above the background (cosine units)
PROFILES = ('flat', 'peaked')
NOISE_STD = 0.01  # std of the smooth noise: the contrasts give SNRs of 5, 10 and 20
RAMP = 0.01  # height of the background ramp across the image
EDGE_DROP = 0.4  # a peaked object is 1 at its centre and 1 - EDGE_DROP at its edge
ABSENT_NOISE = (0.005, 0.01, 0.02, 0.03)
SET_NAMES = ('tune', 'heldout', 'stress', 'absent', 'tune_absent')

#: a distance function: (rows, cols) (h, w) float64 -> (h, w) normalised distance, inside <= 1
DistFn = Callable[[Tensor, Tensor], Tensor]
#: a layout: (distance function, contrast relative to the first object) per object
Layout = List[Tuple[DistFn, float]]


class SyntheticMap(NamedTuple):
    """One synthetic score map and its objects."""
    name: str
    score: Tensor  # (h, w) float64
    objects: Tensor  # (h, w) bool, the true object mask (all False for an absent class)


def _disc(cy: float, cx: float, r: float) -> DistFn:
    """A disc as its normalised radial distance."""
    def dist(rows, cols):
        return ((rows - cy) ** 2 + (cols - cx) ** 2).sqrt() / r
    return dist


def _ellipse(cy: float, cx: float, ry: float, rx: float, angle: float) -> DistFn:
    """An ellipse with semi-axes ry, rx turned by ``angle`` (radians)."""
    def dist(rows, cols):
        y, x = rows - cy, cols - cx
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * x + s * y, -s * x + c * y
        return ((u / rx) ** 2 + (v / ry) ** 2).sqrt()
    return dist


def _box(r0: int, r1: int, c0: int, c1: int) -> DistFn:
    """Rows r0..r1-1, cols c0..c1-1, as a Chebyshev distance to the box centre."""
    def dist(rows, cols):
        cy, cx = (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
        hy, hx = (r1 - r0) / 2, (c1 - c0) / 2
        return torch.maximum((rows - cy).abs() / hy, (cols - cx).abs() / hx)
    return dist


def _triangle(cy: float, cx: float, r: float, angle: float) -> DistFn:
    """An equilateral triangle of circumradius ``r``: its gauge (the largest ratio of the distance
    along an edge normal to the edge's distance from the centre, <= 1 inside)."""
    normals = [(math.cos(angle + math.pi / 3 + k * 2 * math.pi / 3),
                math.sin(angle + math.pi / 3 + k * 2 * math.pi / 3)) for k in range(3)]
    apothem = r / 2

    def dist(rows, cols):
        along = [(cols - cx) * nx + (rows - cy) * ny for nx, ny in normals]
        return torch.stack(along).amax(0) / apothem
    return dist


#: the tune set's layouts: name -> objects
TUNE_LAYOUTS: Dict[str, Layout] = {
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
MULTI_OBJECT = ('l_shape', 'two_discs', 'two_discs_unequal', 'three_blobs')
#: stress layouts of their own
TINY_LAYOUTS: Dict[str, Layout] = {
    'tiny_disc_a': [(_disc(6, 16, 1.6), 1.0)],
    'tiny_disc_b': [(_disc(15.5, 8.5, 1.6), 1.0)],
}
BORDER_LAYOUTS: Dict[str, Layout] = {
    'disc_on_left_edge': [(_disc(12, 0, 5.0), 1.0)],
    'corner_quarter_disc': [(_disc(23, 23, 8.0), 1.0)],
    'bottom_strip': [(_box(19, 24, 4, 20), 1.0)],
}
LARGE_LAYOUTS: Dict[str, Layout] = {
    'three_quarters': [(_box(0, 18, 0, 24), 1.0)],
    'disc_r11': [(_disc(11.5, 12, 11.0), 1.0)],
}


def _grid(h: int, w: int) -> Tuple[Tensor, Tensor]:
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    return rows, cols


def _smooth_noise(h: int, w: int, std: float, gen: torch.Generator) -> Tensor:
    """Spatially correlated Gaussian noise (h, w): blurred white noise rescaled to ``std``."""
    noise = torch.randn(1, 1, h + 2, w + 2, generator=gen, dtype=torch.float64)
    kernel = torch.tensor([1., 2., 1.], dtype=torch.float64)
    kernel = (kernel[:, None] * kernel[None, :]) / 16  # 3 x 3 binomial blur
    noise = F.conv2d(noise, kernel[None, None])[0, 0]  # (h, w)
    return noise / noise.std() * std


def draw_map(name: str, layout: Layout, *, contrast: float, profile: str, seed: int,
             noise_std: float = NOISE_STD, ramp: float = RAMP, edge_drop: float = EDGE_DROP,
             outliers: int = 0, outlier_height: float = 0.3,
             grid: Sequence[int] = GRID) -> SyntheticMap:
    """One score map with known objects.

    Args:
        name (str): the map's name (reported with the worst maps).
        layout (Layout): the objects; an empty list draws an absent class (background only).
        contrast (float): level of the first object above the background (cosine units).
        profile (str): ``'flat'`` objects, or ``'peaked'`` (1 at the centre, ``1 - edge_drop``
            at the edge).
        seed (int): seed of the ramp direction, the noise and the outlier places.
        noise_std (float): std of the smooth noise (> 0).
        ramp (float): height of the background ramp across the image.
        edge_drop (float): how far a peaked object falls from its centre to its edge.
        outliers (int): single background pixels raised by ``outlier_height``.
        outlier_height (float): height of each outlier over its neighbours.
        grid (Sequence[int]): (h, w).

    Returns:
        SyntheticMap: the (h, w) float64 score and the (h, w) bool object mask.
    """
    if profile not in PROFILES:
        raise ValueError(f'profile must be one of {PROFILES}, got {profile!r}')
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    rows, cols = _grid(h, w)
    objects = torch.zeros(h, w, dtype=torch.bool)
    level = torch.zeros(h, w, dtype=torch.float64)
    for dist_fn, rel in layout:
        d = dist_fn(rows, cols)
        inside = d <= 1
        value = torch.ones_like(d) if profile == 'flat' else 1 - edge_drop * d.clamp(max=1) ** 2
        level = torch.maximum(level, rel * value * inside)
        objects |= inside
    # CLIP maps are blurry: a light blur softens the object edges (the mask stays the sharp one)
    blur = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    blur = (blur[:, None] * blur[None, :])[None, None]
    level = F.conv2d(F.pad(level[None, None], (1, 1, 1, 1), mode='replicate'), blur)[0, 0]
    angle = torch.rand(1, generator=gen, dtype=torch.float64).item() * 2 * math.pi
    slope = (math.cos(angle) * (cols / (w - 1) - 0.5) + math.sin(angle) * (rows / (h - 1) - 0.5))
    score = BACKGROUND + ramp * slope + contrast * level + _smooth_noise(h, w, noise_std, gen)
    if outliers:
        background = (~objects).flatten().nonzero()[:, 0]
        picks = background[torch.randperm(len(background), generator=gen)[:outliers]]
        score.view(-1)[picks] += outlier_height
    return SyntheticMap(name, score, objects)


def random_layout(seed: int, grid: Sequence[int] = GRID) -> Layout:
    """A random layout of the held-out family: 1-3 objects (disc, ellipse, rectangle, triangle)
    off the border, apart from each other, 15-300 cells in all; the first object has relative
    contrast 1, the others 0.7-1."""
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    rows, cols = _grid(h, w)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand(1, generator=gen, dtype=torch.float64).item()

    count = (1, 1, 2, 3)[int(torch.randint(4, (1,), generator=gen))]
    for _ in range(10000):  # rejection sampling of the places and sizes
        layout, masks = [], []
        for i in range(count):
            kind = int(torch.randint(4, (1,), generator=gen))
            size = uniform(2.3, 10.0 if count == 1 else 5.0)
            cy = uniform(min(size + 1, h / 2), max(h - 2 - size, h / 2))
            cx = uniform(min(size + 1, w / 2), max(w - 2 - size, w / 2))
            if kind == 0:
                fn = _disc(cy, cx, size)
            elif kind == 1:
                fn = _ellipse(cy, cx, size * uniform(0.4, 0.7), size, uniform(0, math.pi))
            elif kind == 2:
                hy, hx = max(1, round(size * uniform(0.5, 1.0))), max(1, round(size))
                r0, c0 = round(cy) - hy, round(cx) - hx
                fn = _box(r0, r0 + 2 * hy, c0, c0 + 2 * hx)
            else:
                fn = _triangle(cy, cx, size * 1.4, uniform(0, 2 * math.pi))
            layout.append((fn, 1.0 if i == 0 else uniform(0.7, 1.0)))
            masks.append(fn(rows, cols) <= 1)
        union = torch.stack(masks).any(0)
        # apart: every object's 2-cell dilation misses the others
        grown = [F.max_pool2d(m[None, None].double(), 5, 1, 2)[0, 0] > 0 for m in masks]
        apart = all(not (grown[i] & masks[j]).any()
                    for i in range(count) for j in range(count) if i != j)
        border = union[0].any() or union[-1].any() or union[:, 0].any() or union[:, -1].any()
        sizes_ok = all(int(m.sum()) >= 15 for m in masks) and int(union.sum()) <= 300
        if apart and sizes_ok and not border:
            return layout
    raise RuntimeError(f'no layout found for seed {seed}')


def _grid_of_maps(prefix: str, layouts: Dict[str, Layout], contrasts: Sequence[float],
                  profiles: Sequence[str], seeds: Sequence[int],
                  **kwargs) -> Iterator[SyntheticMap]:
    """Every layout x contrast x profile x seed, named ``prefix + layout/c../profile/s..``."""
    for name, layout in layouts.items():
        for contrast in contrasts:
            for profile in profiles:
                for seed in seeds:
                    yield draw_map(f'{prefix}{name}/c{contrast}/{profile}/s{seed}', layout,
                                   contrast=contrast, profile=profile, seed=seed, **kwargs)


def _second_at(rel: float) -> Dict[str, Layout]:
    """The multi-object tune layouts with every object after the first at relative ``rel``."""
    return {name: [(fn, 1.0 if i == 0 else rel) for i, (fn, _) in enumerate(TUNE_LAYOUTS[name])]
            for name in MULTI_OBJECT}


STRESS_SEEDS = (20, 21, 22)
#: variant -> (layouts, contrasts, profiles, draw_map keyword arguments)
STRESS_VARIANTS: Dict[str, tuple] = {
    'edge at 0.3 of peak': (TUNE_LAYOUTS, CONTRASTS, ('peaked', ), dict(edge_drop=0.7)),
    'second object at 0.4': (_second_at(0.4), CONTRASTS, PROFILES, {}),
    'noise std 0.03': (TUNE_LAYOUTS, CONTRASTS, PROFILES, dict(noise_std=0.03)),
    'two outliers +0.30': (TUNE_LAYOUTS, CONTRASTS, PROFILES, dict(outliers=2)),
    'tiny object (9-12 cells)': (TINY_LAYOUTS, CONTRASTS, PROFILES, {}),
    'contrast 0.05, noise 0.02': (TUNE_LAYOUTS, (0.05, ), PROFILES, dict(noise_std=0.02)),
    'object on the border': (BORDER_LAYOUTS, CONTRASTS, PROFILES, {}),
    'ramp 0.05': (TUNE_LAYOUTS, CONTRASTS, PROFILES, dict(ramp=0.05)),
    'object over 2/3 of the grid': (LARGE_LAYOUTS, CONTRASTS, PROFILES, {}),
}


def stress_maps(variant: str) -> List[SyntheticMap]:
    """The maps of one stress variant (a key of :data:`STRESS_VARIANTS`)."""
    layouts, contrasts, profiles, kwargs = STRESS_VARIANTS[variant]
    return list(_grid_of_maps('', layouts, contrasts, profiles, STRESS_SEEDS, **kwargs))


def absent_maps(noise_std: float, seeds: Sequence[int]) -> List[SyntheticMap]:
    """Noise-only maps (no object: an absent class) at one noise level."""
    return [draw_map(f'absent/n{noise_std}/s{s}', [], contrast=0.0, profile='flat', seed=s,
                     noise_std=noise_std) for s in seeds]


def map_set(name: str, heldout_layouts: int = 30) -> Dict[str, List[SyntheticMap]]:
    """A named set as {group: maps}.

    Args:
        name (str): one of :data:`SET_NAMES`.
        heldout_layouts (int): random layouts of the held-out set.

    Returns:
        dict: ``tune`` and ``heldout`` have one group (``'all'``); ``stress`` one per variant;
        ``absent`` and ``tune_absent`` one per noise std.
    """
    if name == 'tune':
        return {'all': list(_grid_of_maps('', TUNE_LAYOUTS, CONTRASTS, PROFILES, (0, 1, 2)))}
    if name == 'heldout':
        maps = []
        for seed in range(100, 100 + heldout_layouts):  # noise seeds 1100, 1101, ...
            maps += _grid_of_maps(f'random{seed}', {'': random_layout(seed)}, CONTRASTS, PROFILES,
                                  (seed + 1000, ))
        return {'all': maps}
    if name == 'stress':
        return {variant: stress_maps(variant) for variant in STRESS_VARIANTS}
    if name in ('absent', 'tune_absent'):
        first = 400 if name == 'absent' else 300
        return {f'noise std {n}': absent_maps(n, range(first, first + 20)) for n in ABSENT_NOISE}
    raise ValueError(f'unknown map set {name!r}; choose from {SET_NAMES}')


def stack(maps: Sequence[SyntheticMap]) -> Tuple[Tensor, Tensor]:
    """Scores (M, h, w) float64 and object masks (M, h, w) bool of ``maps``."""
    return torch.stack([m.score for m in maps]), torch.stack([m.objects for m in maps])


def foreground(ppg: Callable, score: Tensor) -> Tensor:
    """The (M, h, w) bool foreground of ``ppg`` on (M, h, w) scores.

    Args:
        ppg (callable): a :class:`PseudoPromptGenerator` (its ``regions`` >= 0 are the
            foreground), or any function from scores to an (M, h, w) bool foreground.
        score (Tensor): (M, h, w) score maps.
    """
    out = ppg(score)
    return out.regions >= 0 if hasattr(out, 'regions') else out


def foreground_ious(ppg: Callable, maps: Sequence[SyntheticMap]) -> Tensor:
    """IoU (M,) of the PPG's binarised foreground (Fig. 3 (c)) with each map's objects.

    Args:
        ppg (callable): see :func:`foreground`.
        maps (Sequence[SyntheticMap]): maps with at least one object each.

    Returns:
        Tensor: (M,) float64 IoUs.
    """
    score, objects = stack(maps)
    fg = foreground(ppg, score)  # (M, h, w)
    inter = (fg & objects).flatten(1).sum(1)
    union = (fg | objects).flatten(1).sum(1)
    return inter.double() / union.double()


def foreground_fractions(ppg: Callable, maps: Sequence[SyntheticMap]) -> Tensor:
    """Fraction (M,) of the grid that the PPG marks as foreground on each map."""
    score, _ = stack(maps)
    return foreground(ppg, score).flatten(1).double().mean(1)
