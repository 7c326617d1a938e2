"""ESC-Net's Pseudo Prompt Generator (PPG, paper §3.3 and Fig. 3).

The PPG turns one image-text score map per (image, class) pair into SAM prompts:

1. (b) a per-map spatial softmax of the smoothed, normalised scores, max-normalised to [0, 1]
   (the *probability map*);
2. (c) a binary foreground ``probability >= threshold`` (the argmax pixel always passes);
3. (d) k-means on the (row, col) coordinates of the foreground pixels into K regions;
4. (e) the probability restricted to each region, whose argmax gives one pseudo point per
   region; optionally the tight box of each region; and the K regions merged into one dense
   mask, given as mask logits at ``mask_scale`` times the grid resolution for SAM's
   ``mask_downscaling``.

Everything is batched over the N = B*T maps (no Python loop over maps or classes), runs under
``torch.no_grad`` and returns detached tensors: the prompts are not differentiable.

With the default ``normalize='minmax'`` each map is first scaled to [0, 1] (its minimum to 0, its
peak to 1), so after the max-normalised softmax ``probability = exp((s - 1) / temperature)`` and the
foreground is ``s >= 1 - temperature * ln(1 / threshold)``: a fixed fraction of the way from the
map's minimum to its peak, whatever the contrast, size or number of the objects. The defaults
(``threshold=0.5``, ``temperature=0.72``, i.e. ``s >= 0.5``, half of the peak's height, after a
3 x 3 binomial blur) were chosen on a tune set of synthetic maps with known objects and are
reported on held-out, stress and noise-only maps (``tools/analysis/ppg_calibration.py``,
docs/escnet.md).

Being relative to the map's own range, that foreground is never empty or small: on a map of pure
noise (a class absent from the image) it is the upper half of the noise, about half of the grid.
The optional ``noise_floor=k`` (off by default, the paper has no such step) also requires every
foreground pixel to stand ``k`` noise units above the map's minimum, the noise unit estimated from
the differences between adjacent cells; a map with no object standing out of its noise then keeps
only its argmax pixel or a few (see :class:`PseudoPromptGenerator`).

Coordinates are in grid-cell units of the h x w score grid: the cell at (row i, col j) is the
point (x, y) = (j, i); SAM's prompt encoder adds the half-cell offset itself, so a point lands
on its cell's centre. A box must land on the region's outer edges, where SAM puts the box of the
same region at its native resolution (``batched_mask_to_box`` on the mask at 1024 px gives the
first and last pixel, plus SAM's 0.5: within 1/32 of a cell of the edges): a region spanning
cols j0..j1 is the box x0 = j0 - 0.5, x1 = j1 + 0.5, which SAM's offset moves to j0 and j1 + 1.
The ambiguities of the paper and the readings chosen here are in ``docs/escnet.md``.
"""
import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['PseudoPrompts', 'PseudoPromptGenerator', 'binomial_blur', 'neighbour_noise_std',
           'pixel_kmeans']

_NORMALIZE_MODES = ('minmax', 'zscore', 'none')
_MAD_TO_STD = 1.4826  # std / MAD of a normal distribution


class PseudoPrompts(NamedTuple):
    """Prompts for N score maps with K = ``num_regions`` regions each.

    Attributes:
        points (Tensor, optional): (N, K, 2) float (x, y) in grid-cell units; cell (row i,
            col j) -> (j, i). ``None`` when points are disabled.
        point_labels (Tensor, optional): (N, K) long, all 1 (foreground).
        boxes (Tensor, optional): (N, K, 4) float (x0, y0, x1, y1) in grid units: the min
            col/row of each region minus 0.5 and its max col/row plus 0.5 (after SAM's
            half-cell offset: the region's outer edges). ``None`` when boxes are disabled.
        masks (Tensor, optional): (N, 1, mask_scale*h, mask_scale*w) mask logits.
            ``None`` when masks are disabled.
        probability (Tensor): (N, h, w) max-normalised probability map in [0, 1].
        regions (Tensor): (N, h, w) long, region id 0..K-1 of each foreground pixel, -1 on
            the background.
    """
    points: Optional[Tensor]
    point_labels: Optional[Tensor]
    boxes: Optional[Tensor]
    masks: Optional[Tensor]
    probability: Tensor
    regions: Tensor


def pixel_kmeans(coords: Tensor, valid: Tensor, seed_index: Tensor, *, num_clusters: int,
                 num_iters: int, stop_at_fixed_point: bool = True) -> Tuple[Tensor, Tensor]:
    """Batched deterministic k-means of the valid pixels of N maps.

    Initialisation is farthest-point: the first centre is the pixel ``seed_index``, each next
    centre is the valid pixel farthest (squared Euclidean) from the chosen ones, ties to the
    lowest flat index. Then ``num_iters`` Lloyd iterations: every valid pixel goes to the
    nearest centre (ties to the lowest centre index) and centres move to the mean of their
    pixels; an empty cluster keeps its centre. The loop stops early at a fixed point (same
    result as running all iterations); ``stop_at_fixed_point=False`` runs them all, with no
    data-dependent control flow (what an exported graph can hold). With fewer valid pixels
    than clusters some centres coincide (the later duplicates then stay empty).

    Args:
        coords (Tensor): (L, 2) float pixel coordinates, shared by all maps.
        valid (Tensor): (N, L) bool, the pixels to cluster; ``seed_index`` must be valid.
        seed_index (Tensor): (N,) long flat index of the first centre of each map.
        num_clusters (int): K >= 1.
        num_iters (int): Lloyd iterations >= 0.
        stop_at_fixed_point (bool): stop when the centres no longer move (the result does not
            change); False runs every iteration (ONNX export).

    Returns:
        Tuple[Tensor, Tensor]: centres (N, K, 2) in the dtype of ``coords``, and the
        assignment (N, L) long of every valid pixel to its nearest final centre (-1 for
        invalid pixels).
    """
    assert coords.dim() == 2 and valid.dim() == 2 and valid.shape[1] == coords.shape[0]
    num_maps = valid.shape[0]
    # farthest-point initialisation
    centres = [coords[seed_index]]  # K x (N, 2)
    neg = coords.new_tensor(-1.0)
    min_dist = ((coords[None] - centres[0][:, None]) ** 2).sum(-1)  # (N, L)
    for _ in range(1, num_clusters):
        nxt = torch.where(valid, min_dist, neg).argmax(dim=1)  # (N,) first max = lowest index
        centres.append(coords[nxt])
        dist = ((coords[None] - centres[-1][:, None]) ** 2).sum(-1)  # (N, L)
        min_dist = torch.minimum(min_dist, dist)
    centres = torch.stack(centres, dim=1)  # (N, K, 2)

    # (N, L, 3): (row, col, 1) of valid pixels, zeros elsewhere -> per-cluster sums and counts
    weighted = torch.cat([coords, coords.new_ones(coords.shape[0], 1)], dim=1)[None] \
        * valid[..., None].to(coords.dtype)
    for _ in range(num_iters):
        assign = _nearest_centre(coords, centres)  # (N, L)
        sums = coords.new_zeros(num_maps, num_clusters, 3).scatter_add_(
            1, assign[..., None].expand(-1, -1, 3), weighted)  # (N, K, 3)
        counts = sums[..., 2:]  # (N, K, 1); integer sums are exact, so this is deterministic
        updated = torch.where(counts > 0, sums[..., :2] / counts.clamp_min(1), centres)
        if stop_at_fixed_point and torch.equal(updated, centres):
            break  # a fixed point: further iterations change nothing
        centres = updated
    assign = _nearest_centre(coords, centres)
    assign = torch.where(valid, assign, assign.new_full((num_maps, 1), -1))
    return centres, assign


def binomial_blur(maps: Tensor, size: int) -> Tensor:
    """Separable binomial blur of (N, h, w) maps (size 3: [1, 2, 1] / 4 per axis).

    Edges are mirrored (replicated for maps too small to mirror), so a constant map stays
    constant and an edge pixel is not weighted more than an inner one (which would make the
    edges noisier than the rest of the map)."""
    weights = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=maps.dtype,
                           device=maps.device) / 2 ** (size - 1)
    pad = size // 2
    mode = 'reflect' if min(maps.shape[-2:]) > pad else 'replicate'
    x = F.pad(maps[:, None], (pad, pad, pad, pad), mode=mode)  # (N, 1, h+2p, w+2p)
    x = F.conv2d(x, weights.view(1, 1, size, 1))  # blur along rows
    x = F.conv2d(x, weights.view(1, 1, 1, size))  # blur along cols
    return x[:, 0]


def _lower_median(values: Tensor) -> Tensor:
    """Lower median (N, 1) of each row of (N, M) values (``torch.median``'s convention), by a
    sort: exportable to ONNX, where ``median`` is not."""
    middle = (values.shape[1] - 1) // 2
    return values.sort(dim=1).values[:, middle:middle + 1]


def neighbour_noise_std(maps: Tensor) -> Tensor:
    """Robust noise std (N, 1) of (N, h, w) maps from the differences of adjacent cells.

    The horizontal and the vertical differences are each centred on their median (a ramp
    drops out); the noise std is ``1.4826 * median(|centred differences|) / sqrt(2)``. For
    spatially white noise this is its standard deviation; noise correlated between neighbours
    gives less (for neighbour correlation rho, ``sqrt(1 - rho)`` times the std). Object edges
    and slopes are few of the differences, so the estimate does not depend on how much of the
    map the objects cover. 0 for a 1 x 1 map.
    """
    num_maps, h, w = maps.shape
    diffs = []
    if w > 1:
        diffs.append((maps[:, :, 1:] - maps[:, :, :-1]).reshape(num_maps, -1))
    if h > 1:
        diffs.append((maps[:, 1:] - maps[:, :-1]).reshape(num_maps, -1))
    if not diffs:
        return maps.new_zeros(num_maps, 1)
    centred = torch.cat([d - _lower_median(d) for d in diffs], dim=1)  # (N, M)
    return _lower_median(centred.abs()) * (_MAD_TO_STD / math.sqrt(2))


def _nearest_centre(coords: Tensor, centres: Tensor) -> Tensor:
    """Index (N, L) of the nearest of the (N, K, 2) centres for the (L, 2) coords."""
    d_row = coords[None, :, None, 0] - centres[:, None, :, 0]  # (N, L, K)
    d_col = coords[None, :, None, 1] - centres[:, None, :, 1]  # (N, L, K)
    dist = d_row.mul_(d_row).add_(d_col.mul_(d_col))  # squared Euclidean
    return dist.argmin(dim=2)  # first min = lowest centre index


class PseudoPromptGenerator(nn.Module):
    """Pseudo points, boxes and dense masks from score maps (ESC-Net's PPG).

    The module has no parameters; its forward runs under ``torch.no_grad``.

    Args:
        num_regions (int): K, the regions (and points/boxes) per map (paper: N_o = 5).
        threshold (float): alpha in (0, 1]; foreground is ``probability >= threshold``.
        temperature (float): softmax temperature (> 0) applied to the normalised scores.
        smooth (int): side of the binomial blur applied to each score map before the
            normalisation (odd; 1 disables it), against isolated noisy peaks.
        normalize (str): 'minmax' scales each map to [0, 1] before the softmax (the foreground
            is then a fraction of the map's range, see the module docstring); 'zscore'
            standardises each map over its pixels (the foreground is then the pixels within
            ``temperature * ln(1 / threshold)`` standard deviations of the peak); 'none' uses
            the raw scores.
        kmeans_iters (int): Lloyd iterations (>= 0).
        use_points (bool): return pseudo points and labels.
        use_boxes (bool): return pseudo boxes (the paper's final model does not).
        use_masks (bool): return the merged dense mask logits.
        mask_scale (int): mask resolution factor over the grid (SAM: 4).
        mask_logit_eps (float): probabilities are clamped to [eps, 1 - eps] before log-odds.
        std_eps (float): lower bound of the per-map standard deviation ('zscore') or range
            ('minmax'), so a flat map stays flat instead of amplifying rounding noise.
        noise_floor (float, optional): k >= 0, or None (default) for no floor: the paper's
            softmax-then-threshold alone, exactly. When set, a foreground pixel must also stand
            at least k noise units above its map's minimum, both read on the smoothed scores
            (before the normalisation): ``s >= min(s) + k * sigma``, where sigma is
            :func:`neighbour_noise_std` of the smoothed map (it is scale-free like the rest).
            A map whose objects do not stand out of its noise (e.g. a class absent from the
            image) then keeps only its highest pixels, at least the argmax; a map with an
            object loses only faint pixels of it. sigma underestimates spatially smooth noise
            (on the calibration maps it is about 0.43 of the std of the blurred noise), so k is
            in units of this estimate, not of the noise's std (tuned value: docs/escnet.md).
    """

    def __init__(self, *, num_regions: int = 5, threshold: float = 0.5, temperature: float = 0.72,
                 smooth: int = 3, normalize: str = 'minmax', kmeans_iters: int = 10, use_points: bool = True,
                 use_boxes: bool = False, use_masks: bool = True, mask_scale: int = 4,
                 mask_logit_eps: float = 1e-3, std_eps: float = 1e-6,
                 noise_floor: Optional[float] = None) -> None:
        super().__init__()
        if isinstance(num_regions, bool) or not isinstance(num_regions, int) or num_regions < 1:
            raise ValueError(f'num_regions must be an int >= 1, got {num_regions!r}')
        if not 0 < threshold <= 1:
            raise ValueError(f'threshold must be in (0, 1], got {threshold!r}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature!r}')
        if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1 \
                or smooth % 2 == 0:
            raise ValueError(f'smooth must be an odd int >= 1, got {smooth!r}')
        if normalize not in _NORMALIZE_MODES:
            raise ValueError(f'normalize must be one of {_NORMALIZE_MODES}, got {normalize!r}')
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) \
                or kmeans_iters < 0:
            raise ValueError(f'kmeans_iters must be an int >= 0, got {kmeans_iters!r}')
        if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1:
            raise ValueError(f'mask_scale must be an int >= 1, got {mask_scale!r}')
        if not 0 < mask_logit_eps < 0.5:
            raise ValueError(f'mask_logit_eps must be in (0, 0.5), got {mask_logit_eps!r}')
        if not std_eps > 0:
            raise ValueError(f'std_eps must be > 0, got {std_eps!r}')
        if noise_floor is not None and (isinstance(noise_floor, bool)
                                        or not isinstance(noise_floor, (int, float))
                                        or not 0 <= noise_floor < math.inf):
            raise ValueError(f'noise_floor must be None or a finite number >= 0, '
                             f'got {noise_floor!r}')
        self.num_regions = num_regions
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.smooth = smooth
        self.normalize = normalize
        self.kmeans_iters = kmeans_iters
        self.use_points = use_points
        self.use_boxes = use_boxes
        self.use_masks = use_masks
        self.mask_scale = mask_scale
        self.mask_logit_eps = float(mask_logit_eps)
        self.std_eps = float(std_eps)
        self.noise_floor = None if noise_floor is None else float(noise_floor)

    def extra_repr(self) -> str:
        return (f'num_regions={self.num_regions}, threshold={self.threshold}, '
                f'temperature={self.temperature}, smooth={self.smooth}, '
                f'normalize={self.normalize!r}, '
                f'kmeans_iters={self.kmeans_iters}, use_points={self.use_points}, '
                f'use_boxes={self.use_boxes}, use_masks={self.use_masks}, '
                f'mask_scale={self.mask_scale}, noise_floor={self.noise_floor}')

    def probability(self, score: Tensor) -> Tensor:
        """Max-normalised spatial softmax (Fig. 3 (b)) of the smoothed, normalised scores.

        Args:
            score (Tensor): (N, h, w) floating score maps.

        Returns:
            Tensor: (N, h*w) probabilities in [0, 1] with at least one exact 1 per map, in
            the computation dtype (float32, or float64 for float64 input).
        """
        return self._probability(self._smoothed(score))

    def _smoothed(self, score: Tensor) -> Tensor:
        """The (N, h, w) scores in the computation dtype, blurred when ``smooth`` > 1."""
        score = score.to(torch.promote_types(score.dtype, torch.float32))
        if self.smooth > 1:
            score = binomial_blur(score, self.smooth)
        return score

    def _probability(self, score: Tensor) -> Tensor:
        """(N, h*w) probabilities of the (N, h, w) smoothed scores (see :meth:`probability`)."""
        flat = score.flatten(1)  # (N, h, w) -> (N, L)
        if self.normalize == 'minmax':
            low = flat.amin(dim=1, keepdim=True)
            span = (flat.amax(dim=1, keepdim=True) - low).clamp_min(self.std_eps)
            flat = (flat - low) / span
        elif self.normalize == 'zscore':
            mean = flat.mean(dim=1, keepdim=True)
            std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(self.std_eps)
            flat = (flat - mean) / std
        p = torch.softmax(flat / self.temperature, dim=1)  # (N, L)
        return p / p.amax(dim=1, keepdim=True)

    @torch.no_grad()
    def forward(self, score: Tensor) -> PseudoPrompts:
        """Generate the prompts of N score maps.

        Args:
            score (Tensor): (N, h, w) floating score maps, N = B*T (one per image and class).

        Returns:
            PseudoPrompts: detached prompts on ``score``'s device; floating outputs in
            ``score``'s dtype, disabled prompt types ``None``.
        """
        assert score.dim() == 3 and score.is_floating_point() and score.numel() > 0, score.shape
        num_maps, h, w = score.shape
        score = score.detach()
        out_dtype, dev, k = score.dtype, score.device, self.num_regions

        smoothed = self._smoothed(score)  # (N, h, w)
        prob = self._probability(smoothed)  # (N, L)
        ctype = prob.dtype
        foreground = prob >= self.threshold  # (N, L), argmax pixel always included
        peak = prob.argmax(dim=1)  # (N,) first maximum
        if self.noise_floor is not None:  # a setting, not a tensor value: traces fine
            foreground = foreground & self._above_noise_floor(smoothed)
            foreground = foreground | (torch.arange(h * w, device=dev) == peak[:, None])
        rows = torch.arange(h, device=dev, dtype=ctype).repeat_interleave(w)  # (L,)
        cols = torch.arange(w, device=dev, dtype=ctype).repeat(h)  # (L,)
        coords = torch.stack([rows, cols], dim=1)  # (L, 2) (row, col)
        # traced for export: every iteration (a trace would freeze the early stop of its input)
        _, regions = pixel_kmeans(coords, foreground, peak, num_clusters=k,
                                  num_iters=self.kmeans_iters,
                                  stop_at_fixed_point=not torch.jit.is_tracing())  # (N, L)
        member = regions[:, :, None] == torch.arange(k, device=dev)  # (N, L, K)
        nonempty = member.any(dim=1)  # (N, K)

        points = labels = boxes = masks = None
        if self.use_points:
            masked = torch.where(member, prob[:, :, None], prob.new_tensor(-1.0))  # (N, L, K)
            best = torch.where(nonempty, masked.argmax(dim=1), peak[:, None])  # (N, K)
            # cell (row i, col j) -> point (x, y) = (j, i)
            points = torch.stack([cols[best], rows[best]], dim=-1).to(out_dtype)  # (N, K, 2)
            labels = torch.ones(num_maps, k, dtype=torch.long, device=dev)
        if self.use_boxes:
            boxes = self._boxes(member, nonempty, peak, rows, cols).to(out_dtype)
        if self.use_masks:
            masks = self._masks(prob * foreground, h, w).to(out_dtype)
        return PseudoPrompts(points=points, point_labels=labels, boxes=boxes, masks=masks,
                             probability=prob.view(num_maps, h, w).to(out_dtype),
                             regions=regions.view(num_maps, h, w))

    def _above_noise_floor(self, smoothed: Tensor) -> Tensor:
        """(N, L) bool: the pixels at least ``noise_floor`` noise units above their map's
        minimum, on the (N, h, w) smoothed scores."""
        flat = smoothed.flatten(1)  # (N, L)
        floor = flat.amin(dim=1, keepdim=True) + self.noise_floor * neighbour_noise_std(smoothed)
        return flat >= floor

    @staticmethod
    def _boxes(member: Tensor, nonempty: Tensor, peak: Tensor, rows: Tensor,
               cols: Tensor) -> Tensor:
        """Boxes (x0, y0, x1, y1) (N, K, 4) of the (N, L, K) region memberships: the first and
        last cell of each region widened by half a cell (SAM adds the other half)."""
        big = rows.new_tensor(float('inf'))
        r, c = rows[None, :, None], cols[None, :, None]  # (1, L, 1)
        x0 = torch.where(member, c, big).amin(dim=1)  # (N, K)
        y0 = torch.where(member, r, big).amin(dim=1)
        x1 = torch.where(member, c, -big).amax(dim=1)
        y1 = torch.where(member, r, -big).amax(dim=1)
        boxes = torch.stack([x0, y0, x1, y1], dim=-1)  # (N, K, 4) first and last cells
        pr, pc = rows[peak], cols[peak]  # (N,)
        peak_box = torch.stack([pc, pr, pc, pr], dim=-1)[:, None]  # (N, 1, 4)
        boxes = torch.where(nonempty[..., None], boxes, peak_box)
        return boxes + boxes.new_tensor([-0.5, -0.5, 0.5, 0.5])  # cells -> outer edges - 0.5

    def _masks(self, merged: Tensor, h: int, w: int) -> Tensor:
        """Mask logits (N, 1, s*h, s*w) of the (N, L) foreground-restricted probability."""
        merged = merged.view(-1, 1, h, w)  # (N, L) -> (N, 1, h, w)
        if self.mask_scale != 1:
            merged = F.interpolate(merged, size=(self.mask_scale * h, self.mask_scale * w),
                                   mode='bilinear', align_corners=False)
        eps = self.mask_logit_eps
        return torch.logit(merged.clamp(eps, 1 - eps))
