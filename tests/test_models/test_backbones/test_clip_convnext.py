"""CLIPConvNeXtBackbone: official SED conformance, sizes, fine-tune policies, errors, loading."""
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_escnet.models.backbones import CLIPConvNeXtBackbone

TINY = dict(embed_dim=12,
            vision_cfg=dict(timm_model_name='tiny_convnext', timm_pool='', timm_proj='mlp',
                            image_size=64),
            text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1))
TINY_TRUNK = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
STAGES = ('res2', 'res3', 'res4', 'res5')


def _tiny(**kwargs) -> CLIPConvNeXtBackbone:
    torch.manual_seed(0)
    kwargs.setdefault('model_cfg', TINY)
    kwargs.setdefault('trunk_cfg', TINY_TRUNK)
    return CLIPConvNeXtBackbone(**kwargs)


def _tokens(backbone: CLIPConvNeXtBackbone) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(1, 64, (3, backbone.context_length), generator=generator)


@pytest.mark.parametrize('name', ['sed_clip_convnext_dense.pt', 'sed_clip_convnext_mlp_dense.pt'])
def test_conformance_with_official_sed(conformance, name):
    ref = conformance(name)
    trunk = ref['config']['timm_trunk']
    backbone = CLIPConvNeXtBackbone(model_cfg=ref['config']['open_clip_model_cfg'],
                                    trunk_cfg=dict(depths=trunk['depths'], dims=trunk['dims']))
    state = ref['state_dict_open_clip_visual']
    # the file holds exactly the image tower; the text tower is absent
    visual_keys = {k for k in backbone.clip_model.state_dict() if k.startswith('visual.')}
    assert set(state) == visual_keys
    backbone.load_clip_state_dict(state, strict=False, source=name)
    backbone.eval()
    assert backbone.stage_dims == tuple(trunk['dims'])
    with torch.no_grad():
        out = backbone.forward_stages(ref['image'])
        dense, res2, res3, res4 = backbone(ref['image'])
    for key in STAGES:
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-5)
    torch.testing.assert_close(out['dense'], ref['clip_vis_dense'], rtol=0, atol=1e-5)
    for got, key in zip((dense, res2, res3, res4), ('dense', 'res2', 'res3', 'res4')):
        torch.testing.assert_close(got, out[key], rtol=0, atol=0)


@pytest.mark.parametrize('name, visual, trunk, text, dims, embed_dim', [
    ('convnext_base_w_320', 88_221_824, 87_566_464, 91_163_521, (128, 256, 512, 1024), 640),
    ('convnext_large_d_320', 199_770_816, 196_230_336, 152_001_793, (192, 384, 768, 1536), 768),
])
def test_official_parameter_counts_on_meta(name, visual, trunk, text, dims, embed_dim):
    with torch.device('meta'):
        backbone = CLIPConvNeXtBackbone(name)
    params = dict(backbone.clip_model.named_parameters())

    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in params.items() if n.startswith(prefix))

    assert count('visual.') == visual
    assert count('visual.trunk.') == trunk
    assert sum(p.numel() for n, p in params.items() if not n.startswith('visual.')) == text
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == visual
    assert (backbone.stage_dims, backbone.embed_dim) == (dims, embed_dim)
    assert (backbone.stride, backbone.context_length) == (32, 77)
    assert backbone.tokenize(['a photo of a cat', 'sky']).shape == (2, 77)
    # shapes at SED's 768 x 768 (meta tensors: no computation)
    dense, res2, res3, res4 = backbone(torch.empty(1, 3, 768, 768, device='meta'))
    assert dense.shape == (1, embed_dim, 24, 24)
    assert [t.shape[1:] for t in (res2, res3, res4)] == [
        (dims[0], 192, 192), (dims[1], 96, 96), (dims[2], 48, 48)]


def test_registry_build_and_shapes():
    backbone = MODELS.build(dict(type='CLIPConvNeXtBackbone', model_cfg=TINY,
                                 trunk_cfg=TINY_TRUNK))
    assert isinstance(backbone, CLIPConvNeXtBackbone)
    assert (backbone.embed_dim, backbone.stage_dims, backbone.stride) == (12, (8, 16, 24, 32), 32)
    assert backbone.model_name is None and backbone.context_length == 8
    out = backbone.forward_stages(torch.randn(2, 3, 64, 96))
    assert out['dense'].shape == (2, 12, 2, 3) and out['res5'].shape == (2, 32, 2, 3)
    assert out['res2'].shape == (2, 8, 16, 24) and out['res4'].shape == (2, 24, 4, 6)
    tokens = backbone.tokenize(['a cat', 'the sky'])
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert backbone.encode_text(_tokens(backbone)).shape == (3, 12)


def test_dense_is_every_location_through_the_global_head():
    """A 32 x 32 image has one res5 location: dense equals open_clip's global image embedding."""
    backbone = _tiny().eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = backbone(image)[0]
        assert dense.shape == (2, 12, 1, 1)
        torch.testing.assert_close(dense[:, :, 0, 0], backbone.clip_model.encode_image(image))


@pytest.mark.parametrize('finetune', ['visual', 'frozen', 'full'])
def test_finetune_policy_and_gradients(finetune):
    backbone = _tiny(finetune=finetune).eval()  # eval: no stochastic depth or dropout
    backbone.init_weights()  # the policy survives init_weights
    trainable = {n for n, p in backbone.clip_model.named_parameters() if p.requires_grad}
    names = {n for n, _ in backbone.clip_model.named_parameters()}
    visual = {n for n in names if n.startswith('visual.')}
    expected = dict(visual=visual, frozen=set(), full=names - {'logit_scale'})[finetune]
    assert trainable == expected
    dense, res2, res3, res4 = backbone(torch.randn(2, 3, 64, 64))
    if finetune == 'frozen':
        assert not any(t.requires_grad for t in (dense, res2, res3, res4))
        return
    assert all(t.requires_grad for t in (res2, res3, res4))  # not detached
    loss = dense.square().sum()
    if finetune == 'full':
        loss = loss + backbone.encode_text(_tokens(backbone)).square().sum()
    loss.backward()
    for name, param in backbone.clip_model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match='finetune must be one of'):
        _tiny(finetune='attention')
    with pytest.raises(ValueError, match="unknown open_clip architecture 'convnext_nope'"):
        CLIPConvNeXtBackbone('convnext_nope')
    with pytest.raises(ValueError, match='timm_model_name is not set'):
        CLIPConvNeXtBackbone('ViT-B-16')
    with pytest.raises(ValueError, match="'tiny_convnext' is not a timm model"):
        CLIPConvNeXtBackbone(model_cfg=TINY)
    with pytest.raises(ValueError, match='trunk_cfg.dims must be 4 positive ints'):
        _tiny(trunk_cfg=dict(dims=(8, 16, 24)))
    with pytest.raises(ValueError, match='must not set'):
        _tiny(trunk_cfg=dict(TINY_TRUNK, drop_path_rate=0.2))

    backbone = _tiny()
    with pytest.raises(ValueError, match='not a multiple of the stride 32'):
        backbone(torch.randn(1, 3, 64, 48))
    with pytest.raises(TypeError, match='floating-point image'):
        backbone(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match='context length'):
        backbone.encode_text(torch.zeros(1, 5, dtype=torch.long))

    state = backbone.clip_model.state_dict()
    bad = dict(state)
    bad['visual.head.mlp.fc1.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r'ckpt\.pth.*visual\.head\.mlp\.fc1\.weight'):
        backbone.load_clip_state_dict(bad, source='ckpt.pth')
    missing = {k: v for k, v in state.items() if k != 'visual.trunk.stages.2.blocks.1.gamma'}
    with pytest.raises(ValueError,
                       match=r'missing keys.*visual\.trunk\.stages\.2\.blocks\.1\.gamma'):
        backbone.load_clip_state_dict(missing)
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': bad}, path)
    with pytest.raises(ValueError, match='visual.head.mlp.fc1.weight'):
        _tiny(pretrained=str(path)).init_weights()

    with torch.device('meta'):
        named = CLIPConvNeXtBackbone('convnext_base_w_320')
    with pytest.raises(ValueError, match='neither a file nor a URL nor a pretrained tag'):
        named.load_pretrained('no_such_tag')
    url = named._resolve_pretrained_tag('laion_aesthetic_s13b_b82k_augreg')
    assert url == ('https://huggingface.co/laion/CLIP-convnext_base_w_320-laion_aesthetic-'
                   's13B-b82K-augreg/resolve/main/open_clip_pytorch_model.bin')


@pytest.mark.parametrize('layout', ['open_clip', 'sed'])
def test_pretrained_round_trip(tmp_path, layout):
    source = _tiny().eval()
    with torch.no_grad():  # move norms and layer scales away from their defaults
        for param in source.parameters():
            param.add_(0.1 * torch.randn_like(param))
    state = source.clip_model.state_dict()
    if layout == 'open_clip':  # open_clip training checkpoint
        checkpoint = {'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in state.items()}}
    else:  # official SED (detectron2) checkpoint
        checkpoint = {'model': {f'sem_seg_head.predictor.clip_model.{k}': v
                                for k, v in state.items()}}
    path = tmp_path / 'clip.pth'
    torch.save(checkpoint, path)

    target = _tiny(pretrained=str(path)).eval()
    target.init_weights()
    image, tokens = torch.randn(1, 3, 64, 64), _tokens(source)
    with torch.no_grad():
        for got, want in zip(target(image), source(image)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(target.encode_text(tokens), source.encode_text(tokens),
                                   rtol=0, atol=0)
    assert all(p.requires_grad == n.startswith('visual.')
               for n, p in target.clip_model.named_parameters())
