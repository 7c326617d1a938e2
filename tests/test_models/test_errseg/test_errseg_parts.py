"""ERR-Seg's parts: the compact vocabulary rule, the RRCA layers, the neck's and head's checks."""
import pytest
import torch

from mmseg_escnet.models.decode_heads import ERRSegHead
from mmseg_escnet.models.layers.class_frequency import (frequency_scores, frequency_top_k,
                                                        top3_counts)
from mmseg_escnet.models.layers.cost_volume import filter_classes
from mmseg_escnet.models.layers.rrca import RRCALayer
from mmseg_escnet.models.necks import ERRSegNeck
from mmseg_escnet.models.structures import ClassFilter, DecodeInputs


def _scores_with_top3(top3, t=6):
    """(1, T, 1, n) scores whose n pixels rank classes as ``top3`` (per-pixel triples)."""
    scores = torch.zeros(1, t, 1, len(top3))
    for p, (a, b, c) in enumerate(top3):
        scores[0, a, 0, p], scores[0, b, 0, p], scores[0, c, 0, p] = 3.0, 2.0, 1.0
    return scores


def test_counts_and_scores_are_the_official_weights():
    scores = _scores_with_top3([(0, 1, 2), (0, 2, 1), (3, 0, 1)])
    counts = top3_counts(scores)
    assert counts[0].tolist() == [[2, 0, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0], [0, 2, 1, 0, 0, 0]]
    torch.testing.assert_close(frequency_scores(counts)[0],
                               torch.tensor([2.1, 0.12, 0.11, 1.0, 0.0, 0.0]))


def test_top_k_ranks_exactly_and_breaks_ties_to_the_lower_index():
    # class 1: two seconds (0.2); class 5: twenty thirds (0.2, though in float32
    # 2 * 0.1 != 20 * 0.01); classes 7..26: one second each (0.1)
    top3 = [(0, 1, 6)] * 2 + [(0, 7 + i, 5) for i in range(20)]
    scores = _scores_with_top3(top3, t=27)
    assert frequency_top_k(scores, 2).tolist() == [[0, 1]]  # 1 and 5 tie: the lower index
    assert frequency_top_k(scores, 3).tolist() == [[0, 1, 5]]  # sorted by class index
    # classes never in a top-3 tie at 0: the lowest indices fill
    assert frequency_top_k(_scores_with_top3([(4, 5, 3)]), 4).tolist() == [[0, 3, 4, 5]]


def test_training_keeps_ground_truth_then_fills_by_index():
    top3 = [(5, 4, 3)] * 10  # by score: 5, 4, 3
    scores = _scores_with_top3(top3).expand(3, -1, -1, -1)
    required = [torch.tensor([1]), torch.tensor([0, 2, 3, 4]), torch.tensor([], dtype=torch.long)]
    kept = frequency_top_k(scores, 3, required)
    # image 0: gt 1, then the best three {3, 4, 5} in ascending index: 3, 4 (by score: 5, 4)
    assert kept.tolist() == [[1, 3, 4], [0, 2, 3], [3, 4, 5]]
    with pytest.raises(ValueError, match='required classes must be in'):
        frequency_top_k(scores[:1], 3, [torch.tensor([6])])
    with pytest.raises(ValueError, match='2 images, expected 3'):
        frequency_top_k(scores, 3, required[:2])
    with pytest.raises(ValueError, match='1 <= k < T'):
        frequency_top_k(scores, 6)


def test_rrhc_is_a_neck_class_filter():
    assert ClassFilter.from_cfg(dict(type='rrhc', k=4)).stage == 'neck'
    corr = torch.randn(2, 1, 8, 4, 4)
    kept = filter_classes(corr, ClassFilter('rrhc', 3))
    assert kept.shape == (2, 3) and torch.equal(kept, kept.sort(dim=1).values)
    assert filter_classes(corr, ClassFilter('rrhc', 8)) is None  # k >= T keeps all
    with pytest.raises(ValueError, match="only taken by the 'rrhc'"):
        filter_classes(corr, ClassFilter('topk', 3), required=[torch.tensor([0])] * 2)


def test_rrca_layer_chunks_give_the_same_result():
    torch.manual_seed(0)
    layer = RRCALayer(dim=16, num_heads=4).eval()
    x, g, t = torch.randn(2, 16, 5, 6, 6), torch.randn(2, 16, 6, 6), torch.randn(2, 5, 16)
    with torch.no_grad():
        whole = layer(x, g, t)
        layer.class_chunk_size = 2
        chunked = layer(x, g, t)
        pixels = layer.class_fusion(layer.spatial_fusion(x, g), t, pixel_chunk_size=1)
    assert whole.shape == x.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pixels, whole, rtol=1e-5, atol=1e-5)
    # order equivariance over the classes (no positional encoding)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        permuted = layer(x[:, :, perm], g, t[:, perm])
    torch.testing.assert_close(permuted, whole[:, :, perm], rtol=1e-5, atol=1e-5)


def _neck(**kwargs):
    return ERRSegNeck(embed_dim=8, image_guidance_dims=(16, 8, 4, 2), corr_fpn_inter_dim=8,
                      guidance_fpn_inter_dim=8, aggregator_dim=8, aggregator_scale_ratio=(2, ),
                      num_heads=2, sample_classes_num=3, **kwargs)


def _inputs(b=2, t=5, h=4):
    return dict(dense32=torch.randn(b, 8, h // 2, h // 2), dense16=torch.randn(b, 8, h, h),
                text_feats=torch.randn(b, t, 1, 8), os32=torch.randn(b, 16, h // 2, h // 2),
                os16=torch.randn(b, 8, h, h))


def test_neck_keeps_k_classes_in_training_with_ground_truth_first():
    neck = _neck().train()
    out = neck(**_inputs(), required_classes=[torch.tensor([4]), torch.tensor([0, 1, 2, 3])])
    assert out.cost.shape == (2, 8, 3, 4, 4)
    assert 4 in out.class_index[0].tolist() and out.class_index[1].tolist() == [0, 1, 2]
    neck.eval()
    assert neck(**_inputs()).class_index is None  # no test filter: every class
    assert neck(**_inputs(), class_filter=ClassFilter('rrhc', 2)).cost.shape[2] == 2


def test_neck_names_bad_shapes():
    inputs = _inputs()
    inputs['dense32'] = torch.randn(2, 8, 3, 3)
    with pytest.raises(ValueError, match=r'dense32 must be \(B=2, \*, 2, 2\)'):
        _neck().eval()(**inputs)
    with pytest.raises(ValueError, match='image_guidance_dims needs'):
        ERRSegNeck(image_guidance_dims=(16, ))


def test_head_scatters_the_kept_classes_and_checks_guidance():
    head = ERRSegHead(hidden_dim=8, decoder_dims=(8, 8, 8), decoder_guidance_dims=(8, 4, 2),
                      decoder_guidance_proj_dims=(8, 8, 8), num_classes=5).eval()
    cost = torch.randn(1, 8, 2, 4, 4)
    feats = [torch.randn(1, 2, 16, 16), torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)]
    with torch.no_grad():
        logits = head(DecodeInputs(cost, torch.tensor([[1, 3]]), feats, 5))
    assert logits.shape == (1, 5, 16, 16)
    assert (logits[:, [0, 2, 4]] == -100).all() and (logits[:, [1, 3]] != -100).any()
    with pytest.raises(ValueError, match='guidance of stage 2'):
        head(DecodeInputs(cost, None, [feats[0], feats[0], feats[2]], 2))
    with pytest.raises(ValueError, match='same non-zero length'):
        ERRSegHead(decoder_dims=(8, 8), decoder_guidance_dims=(8, 4, 2))


def test_drop_path_drops_whole_sequences():
    """Training-mode stochastic depth drops the branch of single (image, class) sequences, as
    the official code does on its (B*K, H*W, C) tokens, not of whole images."""
    torch.manual_seed(0)
    block = RRCALayer(dim=8, num_heads=2, drop_path=0.5).spatial_fusion.train()
    x = torch.randn(1, 8, 64, 2, 2)  # one image, 64 classes
    delta = block(x, torch.randn(1, 8, 2, 2)) - x  # (1, C, K, H, W): the two branches
    kept = delta.abs().flatten(3).amax(dim=(1, 3)) > 0  # (1, K): a branch survived
    assert 0 < int(kept.sum()) < 64  # some classes lost both branches, not all


def test_rrca_starts_from_the_official_initialisation():
    torch.manual_seed(0)
    layer = RRCALayer(dim=64, num_heads=4)
    attention, mlp = layer.spatial_fusion.attention, layer.spatial_fusion.mlp
    for linear in (attention.q, attention.k, attention.v, attention.proj, mlp.fc1, mlp.fc3,
                   layer.class_fusion.attention.q, layer.class_fusion.mlp.fc2):
        assert abs(float(linear.weight.std()) - 0.02) < 0.002 and not linear.bias.any()
        # (truncated at +-2 in absolute value, timm's and torch's default: no effect at std 0.02)
    # convs: std sqrt(2 / fan_out), fan_out = k * k * out / groups
    for conv, fan_out in ((attention.sr_k, 4 * 128), (attention.sr_v, 4 * 64), (mlp.dwconv, 49)):
        expected = (2 / fan_out) ** 0.5
        assert abs(float(conv.weight.std()) - expected) < 0.1 * expected and not conv.bias.any()
    assert (layer.class_fusion.norm1.weight == 1).all() and not attention.norm_k.bias.any()
