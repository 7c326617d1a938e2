"""CLIPBackbone: construction, fine-tune policies, input checks, tokenizer, real arch sizes."""
import open_clip
import pytest
import torch
import torch.nn as nn
from mmseg.registry import MODELS

from mmseg_escnet.models.backbones import CLIPBackbone
from mmseg_escnet.models.backbones.clip import SplitQKVMultiheadAttention

TINY = dict(embed_dim=16,
            vision_cfg=dict(image_size=32, layers=3, width=64, patch_size=8, head_width=32),
            text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2))
QV_NAMES = {f'clip_model.{tower}.resblocks.{i}.attn.{w}'
            for tower, layers in (('visual.transformer', 3), ('transformer', 2))
            for i in range(layers) for w in ('q_proj_weight', 'v_proj_weight')}
# the dense forward never uses the last vision block's q and k, nor logit_scale: always frozen
UNREACHABLE = {'clip_model.visual.transformer.resblocks.2.attn.q_proj_weight',
               'clip_model.visual.transformer.resblocks.2.attn.k_proj_weight',
               'clip_model.logit_scale'}
QV_NAMES -= UNREACHABLE


def _tiny(**kwargs) -> CLIPBackbone:
    torch.manual_seed(0)
    kwargs.setdefault('out_indices', (0, 1))
    return CLIPBackbone(model_cfg=TINY, **kwargs)


def _tokens(backbone: CLIPBackbone) -> torch.Tensor:
    return backbone.tokenize(['a photo of a cat in the scene', 'sky'])


def test_registry_build_structure_and_shapes():
    backbone = MODELS.build(dict(type='CLIPBackbone', model_cfg=TINY, out_indices=(1, 0)))
    assert isinstance(backbone, CLIPBackbone)
    assert (backbone.embed_dim, backbone.width, backbone.patch_size) == (16, 64, 8)
    assert backbone.pretrain_grid == (4, 4) and backbone.context_length == 16
    attns = [m for m in backbone.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attns) == 5 and all(isinstance(m, SplitQKVMultiheadAttention) for m in attns)
    keys = set(backbone.state_dict())
    assert 'clip_model.visual.transformer.resblocks.2.attn.k_proj_weight' in keys
    assert 'clip_model.transformer.resblocks.0.attn.in_proj_bias' in keys
    assert not any(k.endswith('in_proj_weight') for k in keys)
    gelu = backbone.clip_model.visual.transformer.resblocks[0].mlp.gelu
    assert isinstance(gelu, open_clip.transformer.QuickGELU)
    plain = _tiny(quick_gelu=False).clip_model.transformer.resblocks[0].mlp.gelu
    assert type(plain) is nn.GELU

    image = torch.randn(2, 3, 48, 40)  # grid 6x5, differs from the 4x4 pretraining grid
    dense, hook1, hook0 = backbone(image)
    assert dense.shape == (2, 16, 6, 5)
    assert hook1.shape == hook0.shape == (2, 64, 6, 5)
    assert not torch.allclose(hook0, hook1)
    assert backbone.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    assert backbone.encode_text(_tokens(backbone)).shape == (2, 16)


def test_tokenize_uses_open_clip_tokenizer():
    backbone = _tiny()
    tokens = backbone.tokenize(['a photo of a cat', 'dog'])
    expected = open_clip.tokenizer.SimpleTokenizer(context_length=16)(['a photo of a cat', 'dog'])
    assert tokens.dtype == torch.long and tokens.shape == (2, 16)
    assert torch.equal(tokens, expected)
    assert torch.equal(backbone.tokenize('dog'), expected[1:])
    with pytest.raises(TypeError, match='list of strings'):
        backbone.tokenize([1, 2])


def test_attention_policy_trains_only_q_and_v():
    backbone = _tiny()
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == QV_NAMES

    image = torch.randn(2, 3, 32, 32)
    tokens = _tokens(backbone)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-2, weight_decay=0.1)
    dense, hook0, hook1 = backbone(image)
    last = backbone.clip_model.visual.transformer.resblocks[-1].attn
    dense.square().mean().backward(retain_graph=True)
    assert not last.q_proj_weight.requires_grad  # dense last block: value path only
    assert last.v_proj_weight.grad is not None
    loss = (hook0.mean() + hook1.square().mean() + backbone.encode_image(image).square().mean() +
            backbone.encode_text(tokens).square().mean())
    loss.backward()
    optimizer.step()
    for name, param in backbone.named_parameters():
        if name in QV_NAMES:
            assert not torch.equal(param, before[name]), name
        else:
            assert param.grad is None and torch.equal(param, before[name]), name


def test_frozen_and_full_policies_and_policy_survives_loading(tmp_path):
    frozen = _tiny(finetune='frozen')
    assert not any(p.requires_grad for p in frozen.parameters())
    full = _tiny(finetune='full')
    assert {n for n, p in full.named_parameters() if not p.requires_grad} == UNREACHABLE
    path = str(tmp_path / 'w.bin')
    torch.save(open_clip.model.CLIP(**TINY, quick_gelu=True).state_dict(), path)
    loaded = _tiny(pretrained=path)
    loaded.init_weights()
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == QV_NAMES
    with pytest.raises(ValueError, match='finetune must be one of'):
        _tiny(finetune='attn')


def test_input_errors():
    backbone = _tiny()
    with pytest.raises(ValueError, match='multiple of the patch size 8'):
        backbone(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        backbone(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        backbone(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match='floating-point'):
        backbone(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match='pretraining resolution'):
        backbone.encode_image(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match='context length 16'):
        backbone.encode_text(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(TypeError, match='integer token tensor'):
        backbone.encode_text(torch.zeros(1, 16))


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(model_name='RN50'), ValueError, 'ResNet'),
    (dict(model_name='no-such-arch'), ValueError, 'unknown open_clip architecture'),
    (dict(model_name='hf-hub:timm/ViT-B-16-SigLIP'), ValueError, 'built-in'),
    (dict(model_cfg=dict(TINY, vision_cfg=dict(TINY['vision_cfg'], attentional_pool=True))),
     ValueError, 'attentional_pool'),
    (dict(model_cfg=dict(TINY, vision_cfg=dict(timm_model_name='vit_base_patch16_224'))),
     ValueError, 'timm_model_name'),
    (dict(model_cfg=dict(TINY, custom_text=True)), ValueError, 'custom_text'),
    (dict(model_cfg=[1, 2]), TypeError, 'model_cfg must be a dict'),
    (dict(model_cfg=TINY, out_indices=(2, )), ValueError, r'out_indices \[2\]'),
    (dict(model_cfg=TINY, pretrained='x.pt', init_cfg=dict(type='Pretrained', checkpoint='x')),
     ValueError, 'not both'),
])
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        CLIPBackbone(**kwargs)


def test_vit_b16_parameter_count_and_tokenizer():
    backbone = CLIPBackbone('ViT-B-16', out_indices=(3, 7))
    assert sum(p.numel() for p in backbone.parameters()) == 149_620_737
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == 20_447_232 - 768 * 768
    assert (backbone.embed_dim, backbone.width, backbone.patch_size) == (512, 768, 16)
    assert backbone.pretrain_grid == (14, 14)
    assert torch.equal(backbone.tokenize(['a photo of a cat']),
                       open_clip.tokenize(['a photo of a cat']))
    with torch.no_grad():
        dense, hook3, hook7 = backbone(torch.randn(1, 3, 64, 48))
    assert dense.shape == (1, 512, 4, 3) and hook3.shape == hook7.shape == (1, 768, 4, 3)


def test_vit_l14_336_parameter_count_on_meta_device():
    with torch.device('meta'):  # shapes only: the real 428M-parameter build is slow on CPU
        backbone = CLIPBackbone('ViT-L-14-336', out_indices=(7, 15))
    assert sum(p.numel() for p in backbone.parameters()) == 427_944_193
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == 64_487_424 - 1024 * 1024
    assert (backbone.embed_dim, backbone.width, backbone.pretrain_grid) == (768, 1024, (24, 24))
    # the paper configs' pretrained='openai' resolves to OpenAI's published TorchScript file
    assert backbone._resolve_pretrained_tag('openai').endswith('/ViT-L-14-336px.pt')
    assert backbone._resolve_pretrained_tag('/some/file.pt') == '/some/file.pt'
    with pytest.raises(ValueError, match="'no-such-tag' is neither a file.*tags: \\['openai'"):
        backbone._resolve_pretrained_tag('no-such-tag')


def test_text_checkpointing_gives_the_same_text_gradients():
    torch.manual_seed(0)
    plain = _tiny()
    checkpointed = _tiny(text_with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.clip_model.transformer.grad_checkpointing
    grads = []
    for backbone in (plain, checkpointed):
        backbone.train()
        backbone.encode_text(_tokens(backbone)).square().sum().backward()
        grads.append({n: p.grad for n, p in backbone.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
