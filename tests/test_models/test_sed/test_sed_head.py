"""SEDCostNeck + SEDHead: interface, per-image CER, class_index, loss, gradients, errors."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_escnet.models.decode_heads.sed_head import SEDHead
from mmseg_escnet.models.necks.sed_cost import SEDCostNeck
from mmseg_escnet.models.structures import PRUNED_LOGIT, ClassFilter, DecodeInputs

from .test_sed_conformance import build_official, skips

C, P, HID, RES = 8, 2, 16, 4
HEAD_CFG = dict(hidden_dim=HID, prompt_channel=P, decoder_dims=(32, 16, 16),
                decoder_guidance_dims=(12, 10, 6), decoder_guidance_proj_dims=(8, 4, 4),
                num_heads=4, kernel_sizes=(5, 3, 3), num_classes=6)


def _tiny(**head_overrides):
    """Tiny neck + head on a 4 x 4 grid (PyTorch default initialisation)."""
    torch.manual_seed(0)
    neck = SEDCostNeck(prompt_channel=P, hidden_dim=HID, pad_len=head_overrides.pop('pad_len', 0))
    head = SEDHead(**{**HEAD_CFG, **head_overrides})
    return neck, head


def _inputs(b=2, t=6, seed=1, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(b, C, RES, RES, generator=gen)
    text = F.normalize(torch.randn(b, t, P, C, generator=gen), dim=-1)
    clip = [torch.randn(b, ch, RES * s, RES * s, generator=gen, requires_grad=requires_grad)
            for ch, s in ((6, 8), (10, 4), (12, 2))]  # res2, res3, res4: shallower first
    return img, text, clip


def _run(neck, head, img, text, clip, class_filter=None):
    cost = neck(img, text, img)  # a head-stage filter goes to the head only
    return head(DecodeInputs.from_cost(cost, clip, text.shape[1], class_filter))


def _samples(labels):
    return [SegDataSample(gt_sem_seg=PixelData(data=lab[None])) for lab in labels]


def test_registry_and_output_shapes():
    neck = MODELS.build(dict(type='SEDCostNeck', prompt_channel=P, hidden_dim=HID))
    head = MODELS.build(dict(type='SEDHead', **HEAD_CFG))
    assert SEDHead.class_filters == ('sed_cer', )
    img, text, clip = _inputs()
    cost = neck(img, text)
    assert cost.cost.shape == (2, HID, 6, RES, RES) and cost.corr.shape == (2, P, 6, RES, RES)
    assert cost.class_index is None
    head.train()
    logits, aux = head(DecodeInputs.from_cost(cost, clip, 6))
    assert logits.shape == (2, 6, 8 * RES, 8 * RES)
    assert [a.shape[-1] for a in aux] == [RES, 2 * RES, 4 * RES]
    assert all(a.shape[:2] == (2, 6) for a in aux)
    head.eval()
    with torch.no_grad():
        out = head(DecodeInputs.from_cost(cost, clip, 6))
    assert isinstance(out, torch.Tensor) and out.shape == logits.shape


@torch.no_grad()
def test_cer_is_per_image(conformance):
    """B = 2 with CER gives each image the result it has alone (the official code unions
    over the batch and fails for B > 1); the two images keep different classes."""
    data = conformance('sed_decoder_fast.pt')
    k = data['config']['topK']
    neck, head = build_official(data)
    neck.eval()
    head.eval()
    t = data['text_feats'].shape[1]
    perm = torch.roll(torch.arange(t), 5)  # image 1: the same classes in another order
    img = data['img_feats'].repeat(2, 1, 1, 1)
    text = torch.cat([data['text_feats'], data['text_feats'][:, perm]])
    clip = [f.repeat(2, 1, 1, 1) for f in skips(data)]
    cer = ClassFilter('sed_cer', k)
    both = _run(neck, head, img, text, clip, cer)
    alone = [_run(neck, head, img[i:i + 1], text[i:i + 1], [f[i:i + 1] for f in clip], cer)
             for i in range(2)]
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-6, rtol=0)
    kept = [(out[0] != PRUNED_LOGIT).flatten(1).any(1).nonzero()[:, 0] for out in alone]
    assert kept[0].tolist() == data['valid_idx'].nonzero()[:, 0].tolist()
    assert kept[1].tolist() == sorted((perm.argsort()[kept[0]]).tolist())
    assert kept[0].tolist() != kept[1].tolist()


@torch.no_grad()
def test_cer_with_large_k_keeps_everything():
    neck, head = _tiny()
    neck.eval()
    head.eval()
    img, text, clip = _inputs()
    plain = _run(neck, head, img, text, clip)
    torch.testing.assert_close(_run(neck, head, img, text, clip, ClassFilter('sed_cer', 6)),
                               plain, atol=1e-5, rtol=0)
    one = _run(neck, head, img, text, clip, ClassFilter('sed_cer', 1))
    assert bool((one == PRUNED_LOGIT).any()) and bool((one != PRUNED_LOGIT).any())


@torch.no_grad()
def test_class_index_from_the_neck():
    """Classes the neck drops are PRUNED_LOGIT; the kept ones equal decoding them alone, also
    with CER on top; in training the aux outputs are expanded the same way."""
    neck, head = _tiny(pad_len=4)
    neck.eval()
    head.eval()
    img, text, clip = _inputs(t=6)
    for class_filter in (None, ClassFilter('sed_cer', 1)):
        out = _run(neck, head, img, text, clip, class_filter)
        index = neck(img, text).class_index  # (2, 4)
        assert index.shape == (2, 4)
        for b in range(2):
            dropped = torch.ones(6, dtype=torch.bool)
            dropped[index[b]] = False
            assert bool((out[b, dropped] == PRUNED_LOGIT).all())
            alone = _run(neck, head, img[b:b + 1], text[b:b + 1, index[b]],
                         [f[b:b + 1] for f in clip], class_filter)
            torch.testing.assert_close(out[b, index[b]], alone[0], atol=1e-5, rtol=0)
    head.train()
    neck.train()
    logits, aux = _run(neck, head, img, text, clip)
    index = neck(img, text).class_index
    for out in (logits, *aux):
        assert out.shape[1] == 6
        assert int((out == PRUNED_LOGIT).flatten(2).all(2).sum()) == 2 * 2
        assert bool((out.gather(1, index[:, :, None, None].expand(-1, -1, *out.shape[2:]))
                     != PRUNED_LOGIT).all())


def test_loss_matches_the_bce_formula():
    head = SEDHead(**HEAD_CFG, ignore_index=255)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 3, 3, generator=gen)
    aux = [torch.randn(2, 3, s, s, generator=gen) for s in (1, 2, 3)]
    labels = torch.randint(0, 3, (2, 6, 6), generator=gen)
    labels[0, :2] = 255
    labels[1, 4, 1:4] = 255
    losses = head.loss_by_feat((logits, aux), _samples(labels))
    assert sorted(losses) == ['loss_aux0', 'loss_aux1', 'loss_aux2', 'loss_bce']

    def expected(x):
        x = F.interpolate(x, size=(6, 6), mode='bilinear', align_corners=False)
        target = torch.stack([(labels == c) for c in range(3)], dim=1).float()  # 255: all 0
        prob = x.sigmoid()
        return -(target * prob.log() + (1 - target) * (1 - prob).log()).mean()

    for key, x in zip(['loss_bce', 'loss_aux0', 'loss_aux1', 'loss_aux2'], [logits, *aux]):
        torch.testing.assert_close(losses[key], expected(x), atol=1e-6, rtol=1e-6)
    assert sorted(head.loss_by_feat(logits, _samples(labels))) == ['loss_bce']


def _grads(modules):
    return {f'{i}.{name}': p.grad for i, m in enumerate(modules)
            for name, p in m.named_parameters()}


def test_gradients_and_detached_aux_heads():
    """The summed loss reaches every parameter; the aux losses reach only head0..2 and the
    main loss never reaches them; the encoder skips are detached unless configured."""
    labels = torch.randint(0, 6, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    img, text, clip = _inputs(requires_grad=True)
    neck, head = _tiny()
    neck.train()
    head.train()
    losses = head.loss_by_feat(_run(neck, head, img, text, clip), _samples(labels))
    sum(losses.values()).backward()
    missing = [n for n, g in _grads([neck, head]).items() if g is None or not g.abs().sum() > 0]
    assert missing == []
    assert all(f.grad is None for f in clip)

    # parameter names '1.head0.weight', ... (module 1: the head)
    aux_heads = {n for n in _grads([neck, head]) if n.startswith(('1.head0.', '1.head1.',
                                                                  '1.head2.'))}
    assert len(aux_heads) == 6
    for keys in (['loss_aux0', 'loss_aux1', 'loss_aux2'], ['loss_bce']):
        neck.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        losses = head.loss_by_feat(_run(neck, head, img, text, clip), _samples(labels))
        sum(losses[k] for k in keys).backward()
        reached = {n for n, g in _grads([neck, head]).items()
                   if g is not None and g.abs().sum() > 0}
        if keys == ['loss_bce']:  # everything but the aux heads
            assert reached == set(_grads([neck, head])) - aux_heads
        else:  # the aux heads only
            assert reached == aux_heads

    neck, head = _tiny(detach_guidance=False)
    head.train()
    logits, _ = _run(neck, head, img, text, clip)
    logits.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in clip)


@pytest.mark.parametrize('overrides, match', [
    (dict(decoder_dims=(32, 16)), 'same non-zero length'),
    (dict(kernel_sizes=(9, 9)), 'same non-zero length'),
    (dict(decoder_corr_guidance_dims=(8, 4)), 'same non-zero length'),
    (dict(decoder_dims=(32, 16, 8)), 'multiples of 16'),
    (dict(decoder_dims=(32, 24, 16)), 'multiples of 16'),
    (dict(decoder_guidance_proj_dims=(16, 4, 4)), '0 < proj'),
    (dict(decoder_corr_guidance_dims=(8, 0, 4)), 'corr_guidance_dims must be positive'),
    (dict(num_heads=3), 'divisible by num_heads'),
    (dict(kernel_sizes=(9, 4, 9)), 'odd'),
    (dict(class_chunk_size=0), 'class_chunk_size'),
    (dict(test_pooling_size=(2, 0)), 'test_pooling_size'),
])
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        SEDHead(**{**HEAD_CFG, **overrides})


def test_bad_inputs_and_filters():
    with pytest.raises(TypeError, match='loss_decode'):
        SEDHead(**HEAD_CFG, loss_decode=dict(type='CrossEntropyLoss'))
    neck, head = _tiny()
    head.eval()
    img, text, clip = _inputs()
    with pytest.raises(ValueError, match='prompt_channel'):
        neck(img, torch.cat([text, text], dim=2))
    cost = neck(img, text)
    for k in (0, '2', True, 1.5):  # a filter is checked where it is parsed
        with pytest.raises(ValueError, match='int k >= 1'):
            ClassFilter.from_cfg(dict(type='sed_cer', k=k))
    with pytest.raises(ValueError, match="applies class filters \\('sed_cer',\\), got 'topk'"):
        head(DecodeInputs.from_cost(cost, clip, 6, ClassFilter('topk', 2)))
    with pytest.raises(ValueError, match='raw correlation'):
        head(DecodeInputs(cost.cost, None, clip, 6))
    with pytest.raises(ValueError, match='3 encoder skips'):
        head(DecodeInputs.from_cost(cost, clip[1:], 6))
    with pytest.raises(ValueError, match='stage 1'):
        head(DecodeInputs.from_cost(cost, clip[::-1], 6))


def test_a_frozen_text_tower_is_encoded_once_in_training():
    """SED's text tower is frozen: its class embeddings are computed once, as official, not on
    every training step (80 templates per class)."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'sed_tiny_synthetic.py'))
    cfg.model.backbone.finetune = 'visual'  # SED's policy
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).train()
    assert not model.backbone.text_trainable
    calls = []
    model.backbone.clip_model.encode_text = lambda tokens, *a, **k: calls.append(1) or \
        type(model.backbone.clip_model).encode_text(model.backbone.clip_model, tokens, *a, **k)
    first = model.text_embeddings()
    second = model.text_embeddings()
    assert len(calls) == 1 and second is first and not first.requires_grad
