"""CAT-Seg neck + head against logits computed by the official CAT-Seg code."""
import pytest
import torch

from mmseg_escnet.checkpoints.catseg_official import (convert_catseg_state_dict, map_catseg_key,
                                                      strip_prefix)
from mmseg_escnet.models.decode_heads.catseg_head import CATSegHead
from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregator

def _build(cfg: dict, **neck_overrides) -> tuple:
    """Neck and head with the dims of an official ``Aggregator`` config."""
    # the official input widths of both guidances are the CLIP width, ours embed_dim
    assert cfg['text_guidance_dim'] == cfg['appearance_guidance_dim']
    neck_kwargs = dict(embed_dim=cfg['text_guidance_dim'],
                       text_guidance_dim=cfg['text_guidance_proj_dim'],
                       appearance_guidance_dim=cfg['appearance_guidance_proj_dim'],
                       num_layers=cfg['num_layers'], num_heads=cfg['nheads'],
                       hidden_dim=cfg['hidden_dim'], pooling_size=tuple(cfg['pooling_size']),
                       feature_resolution=tuple(cfg['feature_resolution']),
                       window_size=cfg['window_size'], prompt_channel=cfg['prompt_channel'])
    neck_kwargs.update(neck_overrides)
    neck = CATSegAggregator(**neck_kwargs)
    head = CATSegHead(clip_width=16, upsample_dims=tuple(cfg['decoder_guidance_dims']),
                      decoder_guidance_proj_dims=tuple(cfg['decoder_guidance_proj_dims']),
                      decoder_dims=tuple(cfg['decoder_dims']), hidden_dim=cfg['hidden_dim'])
    return neck, head


def _load_official(neck, head, state_dict) -> None:
    converted, left = convert_catseg_state_dict(state_dict)
    assert left == []
    neck.load_state_dict(strip_prefix(converted, 'neck.'), strict=True)
    missing, unexpected = head.load_state_dict(strip_prefix(converted, 'decode_head.'),
                                               strict=False)
    # the conformance files hold the Aggregator only, not the model-level upsample1/2
    assert sorted(missing) == ['upsample1.bias', 'upsample1.weight', 'upsample2.bias',
                               'upsample2.weight']
    assert unexpected == []


def _run(neck, head, data) -> torch.Tensor:
    with torch.no_grad():
        out = neck(data['img_feats'], data['text_feats'], data['appearance_guidance'])
        assert out.class_index is None
        return head.decode(out.cost, data['decoder_guidance'],
                           num_classes=data['text_feats'].shape[1])


@pytest.mark.parametrize('name', ['pool2', 'pool1'])
def test_logits_match_official(name, conformance):
    data = conformance(f'catseg_aggregator_{name}.pt')
    neck, head = _build(data['config'])
    _load_official(neck, head, data['state_dict_official'])
    neck.eval()
    head.eval()
    logits = _run(neck, head, data)
    assert logits.shape == data['logits'].shape
    torch.testing.assert_close(logits, data['logits'], atol=1e-5, rtol=0)


def test_train_and_test_pooling_sizes(conformance):
    """pooling_size applies in train mode, test_pooling_size in eval mode."""
    for name, train_mode in (('pool2', True), ('pool1', False)):
        data = conformance(f'catseg_aggregator_{name}.pt')
        neck, head = _build(data['config'], pooling_size=(2, 2), test_pooling_size=(1, 1))
        _load_official(neck, head, data['state_dict_official'])
        neck.train(train_mode)
        head.train(train_mode)
        torch.testing.assert_close(_run(neck, head, data), data['logits'], atol=1e-5, rtol=0)


def test_key_mapping():
    prefix = 'sem_seg_head.predictor.transformer.'
    assert map_catseg_key(prefix + 'layers.1.attention.MLP.2.weight') == \
        'neck.layers.1.attention.MLP.2.weight'
    assert map_catseg_key(prefix + 'decoder2.conv.double_conv.4.bias') == \
        'decode_head.decoder2.conv.double_conv.4.bias'
    assert map_catseg_key('upsample1.weight', head_prefix='h.') == 'h.upsample1.weight'
    assert map_catseg_key(prefix + 'layers.0.swin_block.block_2.attn_mask') is None
    sd = {
        prefix + 'conv1.weight': torch.zeros(1),
        prefix + 'layers.0.swin_block.block_2.attn_mask': torch.zeros(1),
        'upsample2.bias': torch.zeros(1),
        'sem_seg_head.predictor.clip_model.visual.proj': torch.zeros(1),
    }
    converted, left = convert_catseg_state_dict(sd)
    assert sorted(converted) == ['decode_head.upsample2.bias', 'neck.conv1.weight']
    assert left == ['sem_seg_head.predictor.clip_model.visual.proj']
    with pytest.raises(TypeError, match='mapping'):
        convert_catseg_state_dict([1, 2])
