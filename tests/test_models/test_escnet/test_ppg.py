"""ESC-Net's Pseudo Prompt Generator on hand-made maps and against a loop reference."""
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmseg_escnet.models.necks.ppg import (PseudoPromptGenerator, PseudoPrompts, binomial_blur,
                                           pixel_kmeans)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _calibration_tool():
    """tools/analysis/ppg_calibration.py: the synthetic maps with known objects."""
    path = osp.join(ROOT, 'tools', 'analysis', 'ppg_calibration.py')
    spec = importlib.util.spec_from_file_location('ppg_calibration', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blobs(h: int = 24, w: int = 24, centres=((5, 6), (17, 16)), amps=(1.0, 0.9),
           sigma: float = 1.5) -> torch.Tensor:
    """(h, w) sum of isotropic Gaussians at (row, col) centres."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    c = torch.arange(w, dtype=torch.float64)[None, :]
    out = torch.zeros(h, w, dtype=torch.float64)
    for (cr, cc), a in zip(centres, amps):
        out += a * torch.exp(-((r - cr) ** 2 + (c - cc) ** 2) / (2 * sigma ** 2))
    return out


def _blur3(score: torch.Tensor) -> list:
    """Plain-Python 3 x 3 binomial blur ([1, 2, 1] / 4 per axis, edges mirrored)."""
    h, w = score.shape
    v = score.tolist()

    def mirror(i, n):
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    def at(i, j):
        return v[mirror(i, h)][mirror(j, w)]

    wts = (0.25, 0.5, 0.25)
    return [sum(wts[a] * wts[b] * at(i + a - 1, j + b - 1) for a in range(3) for b in range(3))
            for i in range(h) for j in range(w)]


def _reference(score: torch.Tensor, *, num_regions, threshold, temperature, normalize,
               kmeans_iters, smooth=3, std_eps=1e-6) -> dict:
    """Plain-Python transcription of the PPG spec for one (h, w) float64 map."""
    h, w = score.shape
    assert smooth in (1, 3)
    vals = _blur3(score) if smooth == 3 else score.flatten().tolist()
    n = len(vals)
    if normalize == 'minmax':
        low = min(vals)
        span = max(max(vals) - low, std_eps)
        vals = [(v - low) / span for v in vals]
    elif normalize == 'zscore':
        mean = sum(vals) / n
        std = max(math.sqrt(sum((v - mean) ** 2 for v in vals) / n), std_eps)
        vals = [(v - mean) / std for v in vals]
    top = max(v / temperature for v in vals)
    e = [math.exp(v / temperature - top) for v in vals]
    prob = [x / max(e) for x in e]
    fg = [i for i in range(n) if prob[i] >= threshold]
    rc = [(i // w, i % w) for i in range(n)]
    peak = max(range(n), key=lambda i: (prob[i], -i))

    def d2(i, c):
        return (rc[i][0] - c[0]) ** 2 + (rc[i][1] - c[1]) ** 2

    centres = [rc[peak]]
    for _ in range(1, num_regions):
        far = max(fg, key=lambda i: (min(d2(i, c) for c in centres), -i))
        centres.append(rc[far])
    centres = [tuple(map(float, c)) for c in centres]

    def assign():
        return {i: min(range(num_regions), key=lambda k: (d2(i, centres[k]), k)) for i in fg}

    for _ in range(kmeans_iters):
        a = assign()
        for k in range(num_regions):
            pts = [rc[i] for i in fg if a[i] == k]
            if pts:
                centres[k] = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
    a = assign()
    regions = [a.get(i, -1) for i in range(n)]
    points, boxes = [], []
    for k in range(num_regions):
        pix = [i for i in fg if a[i] == k]
        best = max(pix, key=lambda i: (prob[i], -i)) if pix else peak
        points.append((rc[best][1], rc[best][0]))
        pix = pix or [peak]
        boxes.append((min(rc[i][1] for i in pix), min(rc[i][0] for i in pix),
                      max(rc[i][1] for i in pix), max(rc[i][0] for i in pix)))  # inclusive
    return dict(probability=torch.tensor(prob, dtype=torch.float64).view(h, w),
                regions=torch.tensor(regions).view(h, w),
                points=torch.tensor(points, dtype=torch.float64),
                boxes=torch.tensor(boxes, dtype=torch.float64))


def _in_region(points: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Region id (N, K) under each (x, y) point of (N, K, 2)."""
    x, y = points[..., 0].long(), points[..., 1].long()
    return regions[torch.arange(regions.shape[0])[:, None], y, x]


def test_two_blobs_points_regions_masks():
    score = _blobs()[None]  # (1, 24, 24)
    ppg = PseudoPromptGenerator(num_regions=2)  # the calibrated defaults
    out = ppg(score)
    assert isinstance(out, PseudoPrompts)
    pts = sorted(map(tuple, out.points[0].tolist()))
    assert pts == [(6.0, 5.0), (16.0, 17.0)]  # (x, y) = (col, row) of each blob's peak
    assert out.point_labels.tolist() == [[1, 1]]
    regions = out.regions[0]
    rid_a, rid_b = regions[5, 6].item(), regions[17, 16].item()
    assert {rid_a, rid_b} == {0, 1}
    assert rid_a == 0  # the argmax (the taller blob) seeds region 0
    rows, cols = torch.nonzero(regions >= 0, as_tuple=True)
    near_a = (rows - 5) ** 2 + (cols - 6) ** 2 < (rows - 17) ** 2 + (cols - 16) ** 2
    assert torch.equal(regions[rows, cols], torch.where(near_a, rid_a, rid_b))
    assert (regions == rid_a).sum() >= 9 and (regions == rid_b).sum() >= 9  # whole blob cores
    assert regions[0, 23] == -1 and regions[12, 0] == -1
    # masks: (1, 1, 96, 96) logits; pooled back to the grid they cover both blobs only
    assert out.masks.shape == (1, 1, 96, 96)
    mask = F.avg_pool2d(out.masks.sigmoid(), 4)[0, 0]
    assert mask[5, 6] > 0.5 and mask[17, 16] > 0.5
    assert mask[0, 23] < 2e-3 and mask[12, 0] < 2e-3 and mask[23, 0] < 2e-3
    assert out.masks.min() == pytest.approx(math.log(1e-3 / (1 - 1e-3)), rel=1e-5)


def test_plateaus_give_exact_regions_points_boxes():
    score = torch.zeros(1, 16, 20)
    score[0, 2:6, 3:9] = 5.0
    score[0, 9:15, 12:18] = 5.0
    ppg = PseudoPromptGenerator(num_regions=2, use_boxes=True, smooth=1)
    out = ppg(score)
    expect = torch.full((16, 20), -1)
    expect[2:6, 3:9] = 0  # the first plateau pixel in flat order is the argmax seed
    expect[9:15, 12:18] = 1
    assert torch.equal(out.regions[0], expect)
    # ties inside a plateau -> lowest flat index = the top-left cell
    assert out.points[0].tolist() == [[3.0, 2.0], [12.0, 9.0]]
    # SAM's inclusive boxes: first and last cell of each plateau
    assert out.boxes[0].tolist() == [[3.0, 2.0, 8.0, 5.0], [12.0, 9.0, 17.0, 14.0]]


def test_single_peak_fewer_pixels_than_regions():
    score = torch.zeros(2, 8, 8)
    score[0, 3, 4] = 10.0
    score[1, 6, 1] = 10.0
    score[1, 6, 2] = 10.0
    out = PseudoPromptGenerator(num_regions=5, use_boxes=True, smooth=1)(score)
    assert out.points.shape == (2, 5, 2) and out.boxes.shape == (2, 5, 4)
    assert torch.equal(out.points[0], torch.tensor([[4.0, 3.0]]).expand(5, 2))
    assert set(map(tuple, out.points[1].tolist())) == {(1.0, 6.0), (2.0, 6.0)}
    assert torch.equal(out.boxes[0], torch.tensor([[4.0, 3.0, 4.0, 3.0]]).expand(5, 4))
    assert (out.regions[0] >= 0).sum() == 1 and out.regions[0, 3, 4] == 0
    assert sorted(out.regions[1][out.regions[1] >= 0].tolist()) == [0, 1]
    for t in (out.points, out.boxes, out.masks, out.probability):
        assert torch.isfinite(t).all()


def test_flat_map():
    score = torch.full((1, 8, 8), 0.3)
    out = PseudoPromptGenerator(num_regions=5, use_boxes=True)(score)
    assert torch.equal(out.probability, torch.ones(1, 8, 8))
    assert (out.regions >= 0).all()
    assert sorted(out.regions.unique().tolist()) == [0, 1, 2, 3, 4]
    assert len(set(map(tuple, out.points[0].tolist()))) == 5
    assert torch.equal(_in_region(out.points, out.regions), torch.arange(5)[None])
    assert torch.isfinite(out.masks).all()


@pytest.mark.parametrize('kwargs', [
    dict(num_regions=5, threshold=0.5, temperature=0.72, normalize='minmax', kmeans_iters=10),
    dict(num_regions=3, threshold=0.3, temperature=1.0, normalize='minmax', kmeans_iters=4,
         smooth=1),
    dict(num_regions=5, threshold=0.5, temperature=1.0, normalize='zscore', kmeans_iters=10,
         smooth=1),
    dict(num_regions=5, threshold=0.5, temperature=3.0, normalize='zscore', kmeans_iters=10),
    dict(num_regions=3, threshold=0.2, temperature=2.0, normalize='zscore', kmeans_iters=3),
    dict(num_regions=4, threshold=0.3, temperature=1.0, normalize='none', kmeans_iters=10,
         smooth=1),
    dict(num_regions=4, threshold=0.7, temperature=0.05, normalize='none', kmeans_iters=0),
    dict(num_regions=1, threshold=1.0, temperature=1.0, normalize='zscore', kmeans_iters=10),
])
def test_matches_loop_reference(kwargs):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 1, 6, 5, generator=gen, dtype=torch.float64)
    score = F.interpolate(noise, size=(12, 10), mode='bilinear', align_corners=False)[:, 0]
    score[2] += 2 * _blobs(12, 10, centres=((2, 2), (9, 7)), amps=(1.0, 1.0), sigma=1.5)
    out = PseudoPromptGenerator(use_boxes=True, **kwargs)(score)
    for n in range(score.shape[0]):
        ref = _reference(score[n], **kwargs)
        torch.testing.assert_close(out.probability[n], ref['probability'], rtol=1e-12, atol=1e-12)
        assert torch.equal(out.regions[n], ref['regions'])
        assert torch.equal(out.points[n], ref['points'])
        assert torch.equal(out.boxes[n], ref['boxes'])


def test_batched_equals_per_map_and_deterministic():
    gen = torch.Generator().manual_seed(1)
    score = F.interpolate(torch.randn(7, 1, 6, 6, generator=gen), size=(24, 24),
                          mode='bilinear', align_corners=False)[:, 0]
    ppg = PseudoPromptGenerator(use_boxes=True)
    batched = ppg(score)
    again = ppg(score)
    for a, b in zip(batched, again):
        assert torch.equal(a, b)
    for n in range(score.shape[0]):
        single = ppg(score[n:n + 1])
        for name in ('points', 'point_labels', 'boxes', 'regions'):
            assert torch.equal(getattr(single, name), getattr(batched, name)[n:n + 1]), name
        torch.testing.assert_close(single.probability, batched.probability[n:n + 1])
        torch.testing.assert_close(single.masks, batched.masks[n:n + 1])


def test_normalisation_is_scale_free_and_none_uses_raw_scores():
    score = _blobs()[None] + 0.1 * torch.randn(1, 24, 24, generator=torch.Generator()
                                               .manual_seed(2), dtype=torch.float64)
    ppg = PseudoPromptGenerator(use_boxes=True)
    a, b = ppg(score), ppg(37.0 * score - 4.0)
    torch.testing.assert_close(a.probability, b.probability)
    assert torch.equal(a.regions, b.regions) and torch.equal(a.points, b.points)
    # 'none': probability = exp((s - max s) / T)
    raw = PseudoPromptGenerator(normalize='none', temperature=0.25, smooth=1)(score)
    torch.testing.assert_close(raw.probability, torch.exp((score - score.max()) / 0.25))


def test_masks_are_clamped_log_odds_of_foreground_probability():
    score = _blobs()[None]
    out1 = PseudoPromptGenerator(mask_scale=1, threshold=0.3, mask_logit_eps=0.01)(score)
    fg_prob = torch.where(out1.regions >= 0, out1.probability, torch.zeros(()))
    torch.testing.assert_close(out1.masks[:, 0].sigmoid(), fg_prob.clamp(0.01, 0.99))
    out4 = PseudoPromptGenerator(mask_scale=4, threshold=0.3, mask_logit_eps=0.01)(score)
    up = F.interpolate(fg_prob[:, None], size=(96, 96), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out4.masks.sigmoid(), up.clamp(0.01, 0.99))


def test_kmeans_farthest_point_init_and_empty_cluster():
    coords = torch.tensor([[0., 0.], [0., 1.], [0., 10.], [5., 5.]])
    valid = torch.tensor([[True, True, True, False]])
    centres, assign = pixel_kmeans(coords, valid, torch.tensor([0]), num_clusters=2,
                                   num_iters=0)
    assert centres.tolist() == [[[0., 0.], [0., 10.]]]
    assert assign.tolist() == [[0, 0, 1, -1]]
    centres, assign = pixel_kmeans(coords, valid, torch.tensor([0]), num_clusters=2,
                                   num_iters=5)
    assert centres.tolist() == [[[0., 0.5], [0., 10.]]]
    # 4 clusters on 3 valid pixels: the duplicate centre stays empty and keeps its place
    centres, assign = pixel_kmeans(coords, valid, torch.tensor([2]), num_clusters=4,
                                   num_iters=3)
    assert centres.tolist() == [[[0., 10.], [0., 0.], [0., 1.], [0., 0.]]]
    assert assign.tolist() == [[1, 2, 0, -1]]


def test_shapes_disabled_prompts_and_no_parameters():
    ppg = PseudoPromptGenerator(num_regions=3, use_points=False, use_masks=False,
                                use_boxes=True, mask_scale=2)
    assert list(ppg.parameters()) == [] and list(ppg.buffers()) == []
    out = ppg(torch.randn(4, 6, 9))
    assert out.points is None and out.point_labels is None and out.masks is None
    assert out.boxes.shape == (4, 3, 4)
    assert out.probability.shape == (4, 6, 9) and out.regions.shape == (4, 6, 9)
    assert out.regions.dtype == torch.long
    out = PseudoPromptGenerator(num_regions=3, mask_scale=2)(torch.randn(4, 6, 9))
    assert out.points.shape == (4, 3, 2) and out.point_labels.dtype == torch.long
    assert out.masks.shape == (4, 1, 12, 18) and out.boxes is None


def test_outputs_detached():
    score = torch.randn(3, 8, 8, requires_grad=True)
    out = PseudoPromptGenerator(use_boxes=True)(score * 2)
    for t in out:
        assert not t.requires_grad and t.grad_fn is None


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    score = (2 * _blobs()[None]).to(dtype)
    out = PseudoPromptGenerator(num_regions=2, threshold=0.3, use_boxes=True)(score)
    for t in (out.points, out.boxes, out.masks, out.probability):
        assert t.dtype == dtype and t.device == score.device
    assert sorted(map(tuple, out.points[0].tolist())) == [(6.0, 5.0), (16.0, 17.0)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    score = torch.randn(5, 24, 24)
    ppg = PseudoPromptGenerator(use_boxes=True)
    cpu, gpu = ppg(score), ppg(score.cuda())
    for a, b in zip(cpu, gpu):
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_regions=0), 'num_regions'),
    (dict(num_regions=2.0), 'num_regions'),
    (dict(threshold=0.0), 'threshold'),
    (dict(threshold=1.5), 'threshold'),
    (dict(temperature=0.0), 'temperature'),
    (dict(normalize='softmax'), 'normalize'),
    (dict(smooth=2), 'smooth'),
    (dict(smooth=0), 'smooth'),
    (dict(kmeans_iters=-1), 'kmeans_iters'),
    (dict(mask_scale=0), 'mask_scale'),
    (dict(mask_logit_eps=0.5), 'mask_logit_eps'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PseudoPromptGenerator(**kwargs)



def test_default_foreground_covers_the_objects_of_synthetic_maps():
    """Fig. 3 (c) shows object regions: the calibrated defaults recover the objects of 180 maps
    (10 shapes incl. several objects of unequal contrast, 3 contrasts, flat and peaked profiles,
    3 noise seeds) with IoU >= 0.5 each; the earlier reading kept a few peak pixels only."""
    tool = _calibration_tool()
    maps = list(tool.synthetic_maps())
    assert len(maps) == 180
    sizes = torch.stack([m.objects for m in maps]).flatten(1).sum(1)
    assert sizes.min() >= 15 and sizes.max() <= 300  # from about 3 % to half of the 576 cells
    iou = tool.foreground_ious(PseudoPromptGenerator(), maps)
    failing = [(m.name, round(float(v), 3)) for m, v in zip(maps, iou) if v < 0.5]
    assert not failing
    assert iou.mean() > 0.85
    peak_only = tool.foreground_ious(
        PseudoPromptGenerator(normalize='zscore', temperature=1.0, smooth=1), maps)
    assert peak_only.mean() < 0.4 and (peak_only >= 0.5).float().mean() < 0.3


def test_foreground_is_invariant_to_contrast_and_offset():
    tool = _calibration_tool()
    m = tool.synthetic_map('two_discs_unequal', 0.1, 'peaked', 0)
    ppg = PseudoPromptGenerator(use_boxes=True)
    a, b = ppg(m.score[None]), ppg(3.0 * m.score[None] - 0.2)
    assert torch.equal(a.regions, b.regions) and torch.equal(a.points, b.points)
    torch.testing.assert_close(a.probability, b.probability)


def test_binomial_blur():
    score = torch.randn(2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    blurred = binomial_blur(score, 3)
    for n in range(2):
        expected = torch.tensor(_blur3(score[n]), dtype=torch.float64).view(7, 9)
        torch.testing.assert_close(blurred[n], expected, rtol=1e-12, atol=1e-12)
    for shape in ((1, 5, 5), (1, 1, 6), (2, 2, 2)):  # the last two too small to mirror at 5
        flat = torch.full(shape, 0.7)
        torch.testing.assert_close(binomial_blur(flat, 5), flat)


def test_boxes_follow_sams_inclusive_convention():
    """Each region's box equals segment_anything's own ``batched_mask_to_box`` of its mask."""
    from segment_anything.utils.amg import batched_mask_to_box
    gen = torch.Generator().manual_seed(5)
    score = F.interpolate(torch.randn(4, 1, 6, 6, generator=gen), size=(24, 24),
                          mode='bilinear', align_corners=False)[:, 0]
    out = PseudoPromptGenerator(use_boxes=True)(score)
    for n in range(score.shape[0]):
        for k in range(5):
            mask = out.regions[n] == k
            if mask.any():
                assert out.boxes[n, k].tolist() == batched_mask_to_box(mask[None])[0].tolist()
