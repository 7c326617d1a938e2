"""CLIPConvNeXtBackbone with ERR-Seg's stride-16 branch (``dense_os16``) and its ``'weight'``
fine-tune policy: official conformance, loading rules, trainable parameters and counts."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from mmseg_escnet.models.backbones import CLIPConvNeXtBackbone

TINY = dict(embed_dim=12,
            vision_cfg=dict(timm_model_name='tiny_convnext', timm_pool='', timm_proj='mlp',
                            image_size=64),
            text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1))
TINY_LINEAR = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], timm_proj='linear'))
TINY_TRUNK = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
OFFICIAL_PREFIX = 'sem_seg_head.clip_model.'
BRANCH_KEYS = ('visual.modify_downsample.0.weight', 'visual.modify_downsample.0.bias',
               'visual.modify_downsample.2.weight', 'visual.modify_downsample.2.bias')
#: The official loader's copy: modify_downsample.{0,2} <- trunk.stages.3.downsample.{0,1}.
BRANCH_FROM = dict(zip(BRANCH_KEYS, (
    'visual.trunk.stages.3.downsample.0.weight', 'visual.trunk.stages.3.downsample.0.bias',
    'visual.trunk.stages.3.downsample.1.weight', 'visual.trunk.stages.3.downsample.1.bias')))


def _tiny(**kwargs) -> CLIPConvNeXtBackbone:
    torch.manual_seed(0)
    kwargs.setdefault('model_cfg', TINY)
    kwargs.setdefault('trunk_cfg', TINY_TRUNK)
    return CLIPConvNeXtBackbone(**kwargs)


def _perturbed_state(backbone: CLIPConvNeXtBackbone, seed: int = 3) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=generator)
            for k, v in backbone.clip_model.state_dict().items()}


@pytest.mark.parametrize('name',
                         ['errseg_clip_convnext_dense.pt', 'errseg_clip_convnext_mlp_dense.pt'])
def test_conformance_with_official_errseg(conformance, name):
    ref = conformance(name)
    cfg, trunk = ref['config'], ref['config']['timm_trunk']
    backbone = CLIPConvNeXtBackbone(model_cfg=cfg['open_clip_model_cfg'],
                                    trunk_cfg=dict(depths=trunk['depths'], dims=trunk['dims']),
                                    dense_os16=True)
    official = ref['state_dict_official']
    assert all(k.startswith(OFFICIAL_PREFIX) for k in official)
    state = {k[len(OFFICIAL_PREFIX):]: v for k, v in official.items()}
    # exactly the image tower, branch included (the text tower is absent)
    visual_keys = {k for k in backbone.clip_model.state_dict() if k.startswith('visual.')}
    assert set(state) == visual_keys and set(BRANCH_KEYS) <= visual_keys
    backbone.load_clip_state_dict(state, strict=False, source=name)
    for key in BRANCH_KEYS:  # loaded as given, not replaced by the downsample copy
        assert torch.equal(backbone.clip_model.state_dict()[key], state[key])
    backbone.eval()
    assert backbone.stage_dims == tuple(trunk['dims'])
    assert backbone.skip_dims == tuple(trunk['dims'][:3])

    # the segmentor's preprocessing: (x - mean) / std, then bilinear to the CLIP resolution
    mean = torch.tensor(cfg['clip_pixel_mean']).view(1, -1, 1, 1)
    std = torch.tensor(cfg['clip_pixel_std']).view(1, -1, 1, 1)
    image = F.interpolate((ref['image_raw'] - mean) / std, size=tuple(cfg['clip_resolution']),
                          mode='bilinear', align_corners=False)
    torch.testing.assert_close(image, ref['image'], rtol=0, atol=1e-5)

    with torch.no_grad():
        out = backbone.forward_stages(ref['image'])
        branch = backbone.os16_branch(out['res4'])
        outputs = backbone(ref['image'])
    pairs = dict(res2='os4', res3='os8', res4='os16', res5='os32', dense='clip_vis_dense',
                 dense16='os16_dense')
    for ours, theirs in pairs.items():
        torch.testing.assert_close(out[ours], ref[theirs], rtol=0, atol=1e-5)
    torch.testing.assert_close(branch['downsample'], ref['os16_branch_downsample'], rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(branch['blocks'], ref['os16_branch'], rtol=0, atol=1e-5)
    torch.testing.assert_close(branch['dense16'], ref['os16_dense'], rtol=0, atol=1e-5)
    assert len(outputs) == 6
    for got, key in zip(outputs, ('dense', 'dense16', 'res2', 'res3', 'res4', 'res5')):
        torch.testing.assert_close(got, out[key], rtol=0, atol=0)


def test_forward_tuple_and_shapes():
    backbone = MODELS.build(dict(type='CLIPConvNeXtBackbone', model_cfg=TINY,
                                 trunk_cfg=TINY_TRUNK, dense_os16=True))
    assert backbone.dense_os16 and backbone.skip_dims == (8, 16, 24)
    branch = backbone.clip_model.visual.modify_downsample
    assert branch[0].eps == 1e-6 and tuple(branch[2].weight.shape) == (32, 24, 2, 2)
    dense, dense16, res2, res3, res4, res5 = backbone(torch.randn(2, 3, 64, 96))
    assert dense.shape == (2, 12, 2, 3) and dense16.shape == (2, 12, 4, 6)
    assert [t.shape[1:] for t in (res2, res3, res4, res5)] == [
        (8, 16, 24), (16, 8, 12), (24, 4, 6), (32, 2, 3)]
    # without the branch: SED's outputs and parameters, unchanged
    plain = _tiny()
    assert not plain.dense_os16 and len(plain(torch.randn(1, 3, 64, 64))) == 4
    assert not any('modify_downsample' in k for k in plain.clip_model.state_dict())
    with pytest.raises(RuntimeError, match='dense_os16=True'):
        plain.os16_branch(torch.randn(1, 24, 4, 4))
    with pytest.raises(TypeError, match='dense_os16 must be a bool'):
        _tiny(dense_os16='yes')


def test_open_clip_weights_fill_the_branch_from_the_last_downsample(tmp_path):
    """LAION/open_clip weights have no modify_downsample: ERR-Seg's loader copies it."""
    state = _perturbed_state(_tiny())  # an open_clip state dict (no branch)
    assert not any('modify_downsample' in k for k in state)
    backbone = _tiny(dense_os16=True)
    backbone.load_clip_state_dict(state)  # strict
    loaded = backbone.clip_model.state_dict()
    for key, src in BRANCH_FROM.items():
        torch.testing.assert_close(loaded[key], state[src], rtol=0, atol=0)
        assert loaded[key].data_ptr() != loaded[src].data_ptr()  # a copy, not shared

    # the same through ``pretrained`` (init_weights -> load_pretrained)
    path = tmp_path / 'open_clip.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()}}, path)
    target = _tiny(dense_os16=True, pretrained=str(path))
    target.init_weights()
    for key, value in target.clip_model.state_dict().items():
        want = state[BRANCH_FROM.get(key, key)]
        torch.testing.assert_close(value, want, rtol=0, atol=0, msg=key)


def test_converted_errseg_weights_load_as_given(tmp_path):
    source = _tiny(dense_os16=True)
    state = _perturbed_state(source)
    path = tmp_path / 'errseg_clip.pth'
    torch.save({'state_dict': {f'backbone.clip_model.{k}': v for k, v in state.items()}}, path)
    target = _tiny(dense_os16=True, pretrained=str(path)).eval()
    target.init_weights()
    for key, value in target.clip_model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    source.clip_model.load_state_dict(state)
    source.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(target(image), source(image)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_branch_key_errors():
    state = _perturbed_state(_tiny(dense_os16=True))
    partial = {k: v for k, v in state.items() if k != 'visual.modify_downsample.2.bias'}
    backbone = _tiny(dense_os16=True)
    for strict in (True, False):
        with pytest.raises(ValueError,
                           match=r'ckpt\.pth.*only some.*visual\.modify_downsample\.2\.bias'):
            backbone.load_clip_state_dict(partial, strict=strict, source='ckpt.pth')

    plain = _tiny()
    with pytest.raises(ValueError,
                       match=r'ckpt\.pth.*visual\.modify_downsample\.0\.weight.*dense_os16=True'):
        plain.load_clip_state_dict(state, source='ckpt.pth')
    plain.load_clip_state_dict(state, strict=False)  # drops the branch, loads the rest
    for key, value in plain.clip_model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)

    # open_clip weights without the last downsample cannot fill the branch: strict refuses
    no_source = {k: v for k, v in state.items()
                 if not k.startswith(('visual.modify_downsample.',
                                      'visual.trunk.stages.3.downsample.'))}
    with pytest.raises(ValueError, match=r'missing keys.*modify_downsample'):
        backbone.load_clip_state_dict(no_source)


def _expected_weight_policy(names):
    """ERR-Seg's ``set_weight_strategy`` spelled out on open_clip/timm parameter names."""
    expected = set()
    for name in names:
        parts = name.split('.')
        if parts[0] == 'visual':
            if parts[-1] == 'gamma' or (parts[-1] == 'weight' and
                                        ('mlp' in parts or 'conv_dw' in parts)):
                expected.add(name)
        elif parts[0] == 'transformer':
            if name.endswith(('.attn.in_proj_weight', '.mlp.c_fc.weight')):
                expected.add(name)
    return expected


@pytest.mark.parametrize('model_cfg', [TINY, TINY_LINEAR], ids=['mlp_head', 'linear_head'])
def test_weight_policy_trainable_names_and_gradients(model_cfg):
    backbone = _tiny(model_cfg=model_cfg, dense_os16=True, finetune='weight').eval()
    backbone.init_weights()  # the policy survives init_weights
    params = dict(backbone.clip_model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == _expected_weight_policy(params)
    must = {'visual.trunk.stages.0.blocks.0.gamma',
            'visual.trunk.stages.3.blocks.0.conv_dw.weight',
            'visual.trunk.stages.2.blocks.1.mlp.fc1.weight',
            'visual.trunk.stages.2.blocks.1.mlp.fc2.weight',
            'transformer.resblocks.0.attn.in_proj_weight',
            'transformer.resblocks.0.mlp.c_fc.weight'}
    never = {'visual.trunk.stem.0.weight', 'visual.trunk.stem.1.weight',
             'visual.trunk.stages.3.downsample.1.weight',
             'visual.trunk.stages.3.blocks.0.norm.weight',
             'visual.trunk.stages.3.blocks.0.conv_dw.bias',
             'visual.trunk.stages.3.blocks.0.mlp.fc1.bias',
             'visual.trunk.head.norm.weight', *BRANCH_KEYS,
             'transformer.resblocks.0.attn.in_proj_bias',
             'transformer.resblocks.0.attn.out_proj.weight',
             'transformer.resblocks.0.mlp.c_proj.weight',
             'transformer.resblocks.0.mlp.c_fc.bias', 'transformer.resblocks.0.ln_1.weight',
             'token_embedding.weight', 'positional_embedding', 'ln_final.weight',
             'text_projection', 'logit_scale'}
    if model_cfg is TINY:
        must |= {'visual.head.mlp.fc1.weight', 'visual.head.mlp.fc2.weight'}
        never |= {'visual.head.mlp.fc1.bias'}
    else:
        never |= {'visual.head.proj.weight'}
    assert must <= trainable and not never & trainable and never <= set(params)
    assert backbone.text_trainable

    outputs = backbone(torch.randn(2, 3, 64, 64))
    loss = outputs[0].square().sum() + outputs[1].square().sum()
    tokens = torch.randint(1, 64, (3, backbone.context_length),
                           generator=torch.Generator().manual_seed(1))
    (loss + backbone.encode_text(tokens).square().sum()).backward()
    for name, param in params.items():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize('name, total, visual, text', [
    ('convnext_base_w_320', 181_484_545, 84_657_408, 34_406_400),
    ('convnext_large_d_320', 356_494_273, 193_341_312, 66_060_288),
])
def test_official_weight_policy_counts_on_meta(name, total, visual, text):
    """ERR-Seg B / L CLIP: parameter counts of the fork's model and ``set_weight_strategy``."""
    with torch.device('meta'):
        backbone = CLIPConvNeXtBackbone(name, dense_os16=True, finetune='weight')
    params = dict(backbone.clip_model.named_parameters())
    assert sum(p.numel() for p in params.values()) == total
    trainable = {n: p.numel() for n, p in params.items() if p.requires_grad}
    assert sum(v for n, v in trainable.items() if n.startswith('visual.')) == visual
    assert sum(v for n, v in trainable.items() if not n.startswith('visual.')) == text
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == visual + text
    d2, d3 = backbone.stage_dims[2:]
    assert d3 == 2 * d2  # the official hard-coded widths (512 / 768 -> 2x)
    dense, dense16, res2, res3, res4, res5 = backbone(torch.empty(1, 3, 640, 640, device='meta'))
    assert dense.shape == (1, backbone.embed_dim, 20, 20)
    assert dense16.shape == (1, backbone.embed_dim, 40, 40)
    assert res4.shape == (1, d2, 40, 40) and res5.shape == (1, d3, 20, 20)
