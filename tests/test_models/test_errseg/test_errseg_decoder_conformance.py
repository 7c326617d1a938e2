"""ERR-Seg's neck and head against the official ``Decoder`` (lchen1019/ERR-Seg@6e79c0d).

``tests/data/conformance/errseg_decoder_{eval,train}.pt`` hold the inputs, every intermediate and
the logits of the official code on small random modules (tests/data/conformance/README.md). The
weights go through our converter. The official code shuffles the selected classes; ours keeps
them ascending, so class-axis stages are compared after sorting the reference's classes.
"""
from pathlib import Path

import pytest
import torch
from conftest import build_errseg_decoder

from mmseg_escnet.checkpoints.errseg_official import errseg_decoder_to_mmseg
from mmseg_escnet.models.layers.class_chunks import fold_classes
from mmseg_escnet.models.layers.class_frequency import (frequency_scores, frequency_top_k,
                                                        top3_counts)
from mmseg_escnet.models.decode_heads import ERRSegHead
from mmseg_escnet.models.layers.cost_volume import correlation
from mmseg_escnet.models.necks import ERRSegNeck
from mmseg_escnet.models.structures import ClassFilter, DecodeInputs

DATA = Path(__file__).parents[2] / 'data' / 'conformance'
ATOL = RTOL = 1e-5


def build(cfg: dict, state_dict: dict):
    """The official ``Decoder`` of ``cfg`` as our neck and head, with the converted weights."""
    neck, head = build_errseg_decoder(cfg)
    ours = errseg_decoder_to_mmseg(state_dict)
    assert len(ours) == len(state_dict)
    for prefix, module in (('neck.', neck), ('decode_head.', head)):
        module.load_state_dict({k[len(prefix):]: v for k, v in ours.items()
                                if k.startswith(prefix)}, strict=True)
    return neck, head


def record(neck: ERRSegNeck, head: ERRSegHead) -> dict:
    """Forward hooks storing the outputs of the official stages' modules."""
    stages = {}

    def keep(name, index=None):
        def hook(module, args, out):
            if index is None:
                stages[name] = out
            else:
                stages.setdefault(name, {})[index] = out
        return hook

    neck.corr_proj_convs[0].register_forward_hook(keep('corr_embed_os16'))
    neck.corr_proj_convs[1][0].register_forward_hook(keep('corr_embed_os32'))
    neck.low_corr_fusion.register_forward_hook(keep('corr_embed'))
    neck.low_img_fusion.register_forward_hook(keep('img_guidance_agg'))
    neck.text_guidance_projection.register_forward_hook(keep('text_guidance'))
    for i, layer in enumerate(neck.aggregator_layers):
        layer.spatial_fusion.register_forward_hook(keep('spatial_fusion_out', i))
        layer.register_forward_hook(keep('aggregator_out', i))
    for i, proj in enumerate(head.img_guidance_projection_dec):
        proj.register_forward_hook(keep('img_guidance_dec', i))
        getattr(head, f'up_decoder{i + 1}').register_forward_hook(keep('up_decoder_out', i))
    head.head.register_forward_hook(keep('logits_selected'))
    return stages


def sort_classes(ref: torch.Tensor, selected: torch.Tensor, dim: int) -> torch.Tensor:
    """The reference's class axis in ascending class order: (B, ..., K, ...) on ``dim``, or
    rows ``b*K + k`` (``dim=0`` with B*K rows)."""
    order = selected.argsort(dim=1)  # (B, K)
    b, k = selected.shape
    if dim == 0:
        rows = (order + torch.arange(b)[:, None] * k).flatten()
        return ref[rows]
    return torch.stack([ref[i].index_select(dim - 1, order[i]) for i in range(b)])


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_decoder_matches_official(mode):
    data = torch.load(DATA / f'errseg_decoder_{mode}.pt', weights_only=False)
    cfg, ref, feats = data['config'], data['stages'], data['clip_features']
    neck, head = build(cfg, data['state_dict_official'])
    training = mode == 'train'
    neck.train(training)
    head.train(training)
    for module in neck.modules():  # the reference ran with DropPath off
        if type(module).__name__ == 'DropPath':
            module.eval()
    stages = record(neck, head)
    feats = {k: v.clone() for k, v in feats.items()}
    originals = {k: v.clone() for k, v in feats.items()}
    text = data['text_embeds'].unsqueeze(0).expand(cfg['B'], -1, -1, -1)  # (B, T, 1, C)
    with torch.no_grad():
        cost = neck(feats['clip_vis_dense'], feats['os16_dense'], text, feats['os32'],
                    feats['os16'], class_filter=ClassFilter('rrhc', cfg['sample_classes_num']),
                    required_classes=data['gt_classes'] if training else None)
        logits = head(DecodeInputs.from_cost(cost, [feats['os4'], feats['os8'], feats['os16']],
                                             cfg['T']))
    for key, value in feats.items():  # the official clamp is in place; ours leaves the inputs
        assert torch.equal(value, originals[key]), key

    selected = ref['selected_classes']
    assert torch.equal(cost.class_index, selected.sort(dim=1).values)
    torch.testing.assert_close(logits, data['logits'], rtol=0, atol=ATOL)

    close = dict(rtol=RTOL, atol=ATOL)
    corr16 = correlation(feats['os16_dense'], text)
    torch.testing.assert_close(corr16, ref['corr_os16'], **close)
    torch.testing.assert_close(correlation(feats['clip_vis_dense'], text), ref['corr_os32'],
                               **close)
    counts = top3_counts(corr16.mean(dim=1))
    assert torch.equal(corr16.mean(dim=1).topk(3, dim=1).indices, ref['pixel_top3'])
    torch.testing.assert_close(frequency_scores(counts), ref['class_scores'], **close)
    for name in ('corr_embed_os16', 'corr_embed_os32', 'corr_embed'):
        torch.testing.assert_close(stages[name], sort_classes(ref[name], selected, 0), **close)
    torch.testing.assert_close(stages['img_guidance_agg'], ref['img_guidance_agg'], **close)
    torch.testing.assert_close(stages['text_guidance'],
                               sort_classes(ref['text_guidance'], selected, 1), **close)
    for i in range(len(neck.aggregator_layers)):
        torch.testing.assert_close(fold_classes(stages['spatial_fusion_out'][i]),
                                   sort_classes(ref['spatial_fusion_out'][i], selected, 0),
                                   **close)
        torch.testing.assert_close(stages['aggregator_out'][i],
                                   sort_classes(ref['aggregator_out'][i], selected, 2), **close)
    for i in range(3):
        torch.testing.assert_close(stages['img_guidance_dec'][i], ref['img_guidance_dec'][i],
                                   **close)
        torch.testing.assert_close(stages['up_decoder_out'][i],
                                   sort_classes(ref['up_decoder_out'][i], selected, 0), **close)
    torch.testing.assert_close(stages['logits_selected'][:, 0],
                               sort_classes(ref['logits_selected'].flatten(0, 1)[:, None],
                                            selected, 0)[:, 0], **close)


def test_training_fill_takes_ascending_index_not_score():
    """Image 0 of the train vector has 5 ground-truth classes and one fill. Our rule gives the
    official classes, and its fill is the lowest-index class of the top-K set, not the
    best-scoring class outside the ground truth (the file records that the two differ)."""
    data = torch.load(DATA / 'errseg_decoder_train.pt', weights_only=False)
    stages, gt = data['stages'], data['gt_classes']
    assert data['fill_by_index_differs_from_score_order'][0]
    ours = frequency_top_k(stages['corr_os16'].mean(dim=1), data['config']['sample_classes_num'],
                           gt)
    assert torch.equal(ours, stages['selected_classes'].sort(dim=1).values)
    scores, known = stages['class_scores'][0], gt[0].tolist()
    best_other = max((c for c in range(len(scores)) if c not in known),
                     key=lambda c: scores[c].item())
    assert best_other not in ours[0].tolist()
