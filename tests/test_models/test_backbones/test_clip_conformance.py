"""CLIPBackbone's dense mode against vectors computed by the official CAT-Seg code."""
from typing import Optional

import open_clip
import pytest
import torch
import torch.nn.functional as F

from mmseg_escnet.models.backbones.clip import CLIPBackbone
from mmseg_escnet.checkpoints.clip_official import merge_qkv

TEXT_CFG = dict(context_length=8, vocab_size=64, width=32, heads=1, layers=1)


def _backbone_for(config: dict, pretrained: Optional[str] = None) -> CLIPBackbone:
    """A backbone whose vision tower matches a conformance ``config`` (tiny text tower)."""
    assert config['activation'] == 'QuickGELU'
    vision = dict(image_size=config['pretrain_resolution'], layers=config['layers'],
                  width=config['width'], patch_size=config['patch_size'],
                  head_width=config['width'] // config['heads'])
    return CLIPBackbone(model_cfg=dict(embed_dim=config['output_dim'], vision_cfg=vision,
                                       text_cfg=TEXT_CFG),
                        quick_gelu=True, out_indices=tuple(config['hook_layers']),
                        pretrained=pretrained).eval()


def _to_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1 + g*g, C) official tokens -> (B, C, g, g), CLS dropped."""
    batch, length, channels = tokens.shape
    side = int(round((length - 1)**0.5))
    return tokens[:, 1:].transpose(1, 2).reshape(batch, channels, side, side)


@pytest.mark.parametrize('name', ['catseg_clip_dense.pt', 'catseg_clip_dense_noresize.pt'])
def test_dense_mode_matches_catseg(name, tmp_path, conformance):
    data = conformance(name)
    backbone = _backbone_for(data['config'])
    # full OpenAI-named checkpoint: official visual weights + our (random) text tower
    state = {k: v for k, v in merge_qkv(backbone.clip_model.state_dict()).items()
             if not k.startswith('visual.')}
    state.update(data['state_dict_openai_visual'])
    path = str(tmp_path / 'openai_visual.pt')
    torch.save(state, path)
    backbone = _backbone_for(data['config'], pretrained=path)
    backbone.init_weights()

    with torch.no_grad():
        dense, *hooked = backbone(data['image'])
    torch.testing.assert_close(dense, _to_map(data['dense_tokens']), atol=1e-5, rtol=0)
    assert len(hooked) == len(data['hooked_block_outputs'])
    for got, expected in zip(hooked, data['hooked_block_outputs']):
        torch.testing.assert_close(got, _to_map(expected), atol=1e-5, rtol=0)
    if 'global_embedding' in data:
        with torch.no_grad():
            torch.testing.assert_close(backbone.encode_image(data['image']),
                                       data['global_embedding'], atol=1e-5, rtol=0)


def _perturbed_open_clip(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(3)
    model = open_clip.model.CLIP(**cfg, quick_gelu=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


CFG = dict(embed_dim=24,
           vision_cfg=dict(image_size=32, layers=3, width=64, patch_size=8, head_width=32),
           text_cfg=TEXT_CFG)


def test_dense_mode_by_hand_from_open_clip_modules():
    ref = _perturbed_open_clip(CFG)  # packed q/k/v, open_clip's own modules
    backbone = CLIPBackbone(model_cfg=CFG, out_indices=(1, 0)).eval()
    backbone.load_clip_state_dict(ref.state_dict())
    image = torch.randn(2, 3, 48, 40)  # 6x5 grid vs the 4x4 pretraining grid
    visual = ref.visual
    with torch.no_grad():
        x = visual.conv1(image).flatten(2).transpose(1, 2)  # (B, 30, C)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1)
        pos = visual.positional_embedding
        grid = pos[1:].reshape(4, 4, -1).permute(2, 0, 1)[None]  # (1, C, 4, 4)
        grid = F.interpolate(grid, size=(6, 5), mode='bicubic', align_corners=False)
        x = x + torch.cat([pos[:1], grid[0].flatten(1).T])
        x = visual.ln_pre(x)
        hooks = []
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
            hooks.append(x)
        last = visual.transformer.resblocks[-1]
        _, _, value = F.linear(last.ln_1(x), last.attn.in_proj_weight,
                               last.attn.in_proj_bias).chunk(3, dim=-1)
        z = last.attn.out_proj(value) + x[:, :1]
        out = visual.ln_post(z + last.mlp(last.ln_2(z))) @ visual.proj
        expected = out[:, 1:].transpose(1, 2).reshape(2, 24, 6, 5)
        dense, hook1, hook0 = backbone(image)
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(hook1, hooks[1][:, 1:].transpose(1, 2).reshape(2, 64, 6, 5),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(hook0, hooks[0][:, 1:].transpose(1, 2).reshape(2, 64, 6, 5),
                               atol=1e-5, rtol=0)


def test_hooks_match_open_clip_intermediates_and_last_block_ignores_q_k():
    ref = _perturbed_open_clip(CFG)
    backbone = CLIPBackbone(model_cfg=CFG, out_indices=(0, 1)).eval()
    backbone.load_clip_state_dict(ref.state_dict())
    image = torch.randn(2, 3, 32, 32)  # pretraining grid: no positional resize
    with torch.no_grad():
        dense, *hooked = backbone(image)
        inter = ref.visual.forward_intermediates(image, indices=[0, 1], intermediates_only=True)
        for got, expected in zip(hooked, inter['image_intermediates']):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        global_before = backbone.encode_image(image)
        torch.testing.assert_close(global_before, ref.encode_image(image), atol=1e-5, rtol=0)
        last = backbone.clip_model.visual.transformer.resblocks[-1].attn
        last.q_proj_weight.mul_(-2.0)
        last.k_proj_weight.add_(1.0)
        dense_after, *_ = backbone(image)
        global_after = backbone.encode_image(image)
    torch.testing.assert_close(dense_after, dense, atol=0, rtol=0)
    assert not torch.allclose(global_after, global_before, atol=1e-3)
