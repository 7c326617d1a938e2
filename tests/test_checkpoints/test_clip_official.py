"""CLIP weight files: every supported format loads into CLIPBackbone and reproduces open_clip."""
import copy
import functools
import http.server
import importlib.util
import os.path as osp
import threading
import warnings

import open_clip
import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from safetensors.torch import save_file

from mmseg_escnet.checkpoints.download import cache_path
from mmseg_escnet.models.backbones.clip import CLIPBackbone
from mmseg_escnet.checkpoints.clip_official import (detect_format, load_clip_weights,
                                                        merge_qkv, resize_pos_embed, split_qkv)

# Tiny OpenAI-style arch: head width 64 everywhere, so open_clip's OpenAI loader infers it too.
TINY = dict(embed_dim=32,
            vision_cfg=dict(image_size=32, layers=2, width=128, patch_size=16, head_width=64),
            text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=1, layers=2))
CONVERTER = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'model_converters',
                     'clip2mmseg.py')


def _perturbed_clip(cfg: dict, seed: int) -> nn.Module:
    """open_clip CLIP (QuickGELU) with every parameter moved off its default init."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg, quick_gelu=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


@pytest.fixture(scope='module')
def ref():
    model = _perturbed_clip(TINY, seed=0)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(['a photo of a cat in the scene', 'grass'])
    with torch.no_grad():
        expected = (model.encode_image(image), model.encode_text(tokens))
    return dict(model=model, image=image, tokens=tokens, expected=expected)


@pytest.fixture(scope='module')
def files(ref, tmp_path_factory):
    """The reference model saved in every supported format."""
    root = tmp_path_factory.mktemp('clip_weights')
    model, state = ref['model'], ref['model'].state_dict()
    paths = dict(torchscript=str(root / 'ViT-tiny.pt'), openai=str(root / 'openai_sd.pt'),
                 open_clip=str(root / 'open_clip_model.bin'),
                 open_clip_ckpt=str(root / 'epoch_1.pth'),
                 safetensors=str(root / 'open_clip_model.safetensors'),
                 mmseg=str(root / 'converted.pth'))
    # OpenAI's archives hold the causal mask as a constant, not as a state-dict buffer
    scripted = copy.deepcopy(model)
    mask = scripted._buffers.pop('attn_mask')
    scripted.attn_mask = mask
    with warnings.catch_warnings():  # tracer and deprecation warnings
        warnings.simplefilter('ignore')
        traced = torch.jit.trace_module(
            scripted, dict(encode_image=(ref['image'], ), encode_text=(ref['tokens'], )),
            check_trace=False)
    torch.jit.save(traced, paths['torchscript'])
    openai_sd = {k: v.half() for k, v in state.items()}
    openai_sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16),
                     vocab_size=torch.tensor(49408))
    torch.save(openai_sd, paths['openai'])
    torch.save(state, paths['open_clip'])
    torch.save(dict(epoch=1, name='run', state_dict={'module.' + k: v for k, v in state.items()}),
               paths['open_clip_ckpt'])
    save_file({k: v.contiguous() for k, v in state.items()}, paths['safetensors'])
    spec = importlib.util.spec_from_file_location('clip2mmseg', CONVERTER)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converter.main([paths['torchscript'], paths['mmseg']])
    return paths


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args) -> None:
        pass


def _backbone(**kwargs) -> CLIPBackbone:
    return CLIPBackbone(model_cfg=TINY, out_indices=(0, ), **kwargs).eval()


@pytest.mark.parametrize('name, fmt', [('torchscript', 'torchscript'), ('openai', 'openai'),
                                       ('open_clip', 'open_clip'),
                                       ('open_clip_ckpt', 'open_clip'),
                                       ('safetensors', 'safetensors'), ('mmseg', 'mmseg')])
def test_every_format_matches_open_clip(ref, files, name, fmt):
    path = files[name]
    assert detect_format(path) == fmt
    backbone = _backbone(pretrained=path)
    backbone.init_weights()
    if name == 'openai':  # fp16 weights: compare with open_clip's own OpenAI loader
        reference = open_clip.load_openai_model(path, precision='fp32', device='cpu').eval()
        with torch.no_grad():
            expected = (reference.encode_image(ref['image']),
                        reference.encode_text(ref['tokens']))
        assert not torch.allclose(expected[0], ref['expected'][0], atol=1e-5)  # fp16 did round
    else:
        expected = ref['expected']
    with torch.no_grad():
        image_emb = backbone.encode_image(ref['image'])
        text_emb = backbone.encode_text(ref['tokens'])
    torch.testing.assert_close(image_emb, expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(text_emb, expected[1], atol=1e-5, rtol=0)


def test_torchscript_archive_matches_open_clip_loader(ref, files):
    # open_clip's OpenAI loader accepts the archive (it rounds weights through fp16, so the
    # tolerance here is fp16's; our loader keeps fp32 and matches at 1e-5 above)
    reference = open_clip.load_openai_model(files['torchscript'], precision='fp32',
                                            device='cpu').eval()
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_image(ref['image']), ref['expected'][0],
                                   atol=5e-3, rtol=0)
    loaded = load_clip_weights(files['torchscript'])
    assert set(loaded) == set(ref['model'].state_dict())
    assert all(v.dtype == torch.float32 for v in loaded.values())


def test_converted_checkpoint_layout_and_mmengine_load(ref, files):
    ckpt = torch.load(files['mmseg'], map_location='cpu', weights_only=True)  # plain types only
    assert set(ckpt) == {'state_dict', 'meta'}
    keys = list(ckpt['state_dict'])
    assert all(k.startswith('backbone.clip_model.') for k in keys)
    assert 'backbone.clip_model.visual.transformer.resblocks.1.attn.q_proj_weight' in keys
    assert not any(k.endswith('in_proj_weight') for k in keys)
    assert ckpt['meta']['source_format'] == 'torchscript'

    class Segmentor(nn.Module):  # what load_from=DST sees: the backbone under `backbone.`

        def __init__(self):
            super().__init__()
            self.backbone = _backbone()

    seg = Segmentor()
    load_checkpoint(seg, files['mmseg'], map_location='cpu', strict=True)
    with torch.no_grad():
        torch.testing.assert_close(seg.backbone.encode_image(ref['image']), ref['expected'][0],
                                   atol=1e-5, rtol=0)
    # the converted file reads back to exactly the original open_clip tensors
    back = load_clip_weights(files['mmseg'])
    for key, value in ref['model'].state_dict().items():
        assert torch.equal(back[key], value), key


def test_packed_state_dict_loads_into_split_attention(ref):
    backbone = _backbone()
    backbone.clip_model.load_state_dict(ref['model'].state_dict(), strict=True)
    attn = backbone.clip_model.transformer.resblocks[1].attn
    packed = ref['model'].transformer.resblocks[1].attn.in_proj_weight
    assert attn.in_proj_weight is None
    assert torch.equal(torch.cat([attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight]),
                       packed)
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_text(ref['tokens']), ref['expected'][1],
                                   atol=1e-5, rtol=0)


def test_split_merge_round_trip(ref):
    state = ref['model'].state_dict()
    split = split_qkv(state)
    assert 'visual.transformer.resblocks.0.attn.k_proj_weight' in split
    assert split['visual.transformer.resblocks.0.attn.k_proj_weight'].shape == (128, 128)
    assert not any(k.endswith('in_proj_weight') for k in split)
    merged = merge_qkv(split)
    assert set(merged) == set(state)
    assert all(torch.equal(merged[k], state[k]) for k in state)
    with pytest.raises(ValueError, match='k_proj_weight'):
        merge_qkv({k: v for k, v in split.items() if not k.endswith('k_proj_weight')})


def test_positional_embedding_resized_on_load(ref, tmp_path):
    path = str(tmp_path / 'grid2.bin')
    torch.save(ref['model'].state_dict(), path)
    big = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], image_size=64))  # grid 2x2 -> 4x4
    backbone = CLIPBackbone(model_cfg=big, out_indices=(), pretrained=path)
    backbone.init_weights()
    expected = {'visual.positional_embedding': ref['model'].visual.positional_embedding.detach()}
    target = open_clip.model.CLIP(**big, quick_gelu=True)
    open_clip.model.resize_pos_embed(expected, target, interpolation='bicubic', antialias=False)
    got = backbone.clip_model.visual.positional_embedding.detach()
    assert got.shape == (17, 128)
    torch.testing.assert_close(got, expected['visual.positional_embedding'], atol=1e-6, rtol=0)
    torch.testing.assert_close(resize_pos_embed(got, (4, 4)), got)  # same grid: unchanged


def test_load_errors_name_file_and_keys(ref, tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing_here.pt'):
        load_clip_weights(str(tmp_path / 'nothing_here.pt'))
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'this is not a checkpoint' * 10)
    with pytest.raises(ValueError, match='garbage.pt.*not a supported'):
        load_clip_weights(str(garbage))
    other = tmp_path / 'resnet_like.pth'
    torch.save({'conv.weight': torch.zeros(2)}, other)
    with pytest.raises(ValueError, match='no CLIP weights'):
        load_clip_weights(str(other))

    wide = dict(TINY, vision_cfg=dict(TINY['vision_cfg'], width=192, head_width=64))
    path = str(tmp_path / 'wide.bin')
    torch.save(open_clip.model.CLIP(**wide, quick_gelu=True).state_dict(), path)
    backbone = _backbone(pretrained=path)
    with pytest.raises(ValueError, match=r'wide\.bin.*visual\.conv1\.weight.*\(192, 3, 16, 16\)'):
        backbone.init_weights()

    visual_only = str(tmp_path / 'visual_only.pt')
    torch.save({k: v for k, v in ref['model'].state_dict().items() if k.startswith('visual.')},
               visual_only)
    with pytest.raises(ValueError, match=r'visual_only\.pt.*missing keys.*text_projection'):
        _backbone().load_pretrained(visual_only)
    backbone = _backbone()
    backbone.load_pretrained(visual_only, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(ref['image']), ref['expected'][0],
                                   atol=1e-5, rtol=0)


def test_url_download_into_the_checkpoint_cache(ref, files, tmp_path):
    handler = functools.partial(_QuietHandler, directory=osp.dirname(files['open_clip']))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/open_clip_model.bin'
        backbone = _backbone(pretrained=url)
        backbone.init_weights()
        cached = cache_path(url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert cached.startswith(str(tmp_path)) and osp.isfile(cached)  # conftest's temporary cache
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(ref['image']), ref['expected'][0],
                                   atol=1e-5, rtol=0)


def test_model_name_reference_is_the_backbone_clip():
    """clip2mmseg's --model-name checks against open_clip's shapes (meta device), which are
    CLIPBackbone's: same keys (q/k/v packed), same shapes, same patch grid."""
    from mmseg_escnet.checkpoints.clip_official import open_clip_reference
    reference, grid = open_clip_reference('ViT-B-16')
    backbone = CLIPBackbone('ViT-B-16', out_indices=(), finetune='frozen')
    ours = merge_qkv(backbone.clip_model.state_dict())
    assert {k: tuple(v.shape) for k, v in reference.items()} == \
        {k: tuple(v.shape) for k, v in ours.items()}
    assert grid == backbone.pretrain_grid
    with pytest.raises(ValueError, match=r"unknown open_clip architecture 'ViT-Nope'"):
        open_clip_reference('ViT-Nope')


def test_model_name_mismatch_is_named(files, load_script, tmp_path):
    tool = load_script('tools/model_converters/clip2mmseg.py')
    with pytest.raises(ValueError, match=r'ViT-tiny\.pt: ViT-B-16: weights do not match the '
                       r'configured CLIP architecture: shape mismatch for .*missing keys'):
        tool.convert(files['torchscript'], str(tmp_path / 'out.pth'), model_name='ViT-B-16')
    assert not (tmp_path / 'out.pth').exists()
