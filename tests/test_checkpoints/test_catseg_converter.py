"""Converter of official CAT-Seg (detectron2) checkpoints: names, round trip, refusals.

The official checkpoint is simulated from a tiny random CAT-Seg: every tensor is renamed here as
the official code names it (read from cvlab-kaist/CAT-Seg: ``cat_seg_model.py``,
``modeling/heads/cat_seg_head.py``, ``modeling/transformer/{cat_seg_predictor,model}.py``,
``third_party/{clip,model_vpt}.py``):

* ``CATSeg`` root: ``sem_seg_head`` then ``upsample1``/``upsample2`` (ConvTranspose2d); the
  pixel mean/std buffers are registered non-persistent, ``backbone`` is None.
* ``sem_seg_head.predictor.clip_model``: OpenAI CLIP whose ``Attention`` chunks the packed
  ``in_proj_weight`` (3C, C) into ``q/k/v_proj_weight`` Parameters (views of one storage) and
  removes ``in_proj_weight``; ``in_proj_bias`` stays packed; ``logit_scale`` is a Parameter.
  Text features and the causal mask are plain attributes; no prompt tokens (PROMPT_DEPTH 0).
* ``sem_seg_head.predictor.transformer``: the ``Aggregator``, whose shifted Swin block keeps its
  ``attn_mask`` as a persistent buffer.
"""
import re
import os.path as osp
from collections import OrderedDict

import open_clip
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.checkpoints.clip_architecture import (check_architecture, clip_architecture,
                                                        clip_architecture_from_config)
from mmseg_escnet.checkpoints import convert_catseg_checkpoint
from mmseg_escnet.models.decode_heads.catseg_head import CATSegHead
from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregator

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CFG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
VITB_CFG = osp.join(ROOT, 'configs', 'catseg_vitb16.py')
CLIP = 'sem_seg_head.predictor.clip_model.'
AGG = 'sem_seg_head.predictor.transformer.'
QKV = ('q_proj_weight', 'k_proj_weight', 'v_proj_weight')


class NotAWeight:
    """A custom class: pickling it needs more than weights_only loading allows."""


def _history():
    """The message hub of an MMEngine training checkpoint: a HistoryBuffer with a value."""
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(1.0)
    return {'log_scalars': {'train/loss': buffer}}


def _build(seed: int) -> torch.nn.Module:
    cfg = Config.fromfile(TINY_CFG)
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    return MODELS.build(cfg.model).eval()


def _official_clip(name: str, value: torch.Tensor, packed: bool, sd: dict, ours: dict) -> None:
    """Add one CLIP tensor under its official name (q/k/v as the official ``Attention``)."""
    if not name.endswith(QKV):
        sd[CLIP + name] = value.clone()
        return
    stem = name[:-len(QKV[0])]
    if name.endswith(QKV[0]):  # once per attention, when its q weight comes by
        weight = torch.cat([ours['backbone.clip_model.' + stem + s] for s in QKV])  # (3C, C)
        if packed:
            sd[CLIP + stem + 'in_proj_weight'] = weight
        else:
            for suffix, part in zip(QKV, weight.chunk(3, dim=0)):  # views of one storage
                sd[CLIP + stem + suffix] = part


def official_state_dict(model: torch.nn.Module, packed: bool = False) -> OrderedDict:
    """``model``'s weights under the official CAT-Seg names, official buffers included."""
    ours = model.state_dict()
    sd = OrderedDict()
    for key, value in ours.items():
        if key.startswith('backbone.clip_model.'):
            _official_clip(key[len('backbone.clip_model.'):], value, packed, sd, ours)
        elif key.startswith('neck.'):
            sd[AGG + key[len('neck.'):]] = value.clone()
        elif key.startswith('decode_head.upsample'):
            sd[key[len('decode_head.'):]] = value.clone()  # children of the CATSeg root
        elif key.startswith('decode_head.'):
            sd[AGG + key[len('decode_head.'):]] = value.clone()  # Aggregator's decoder
        else:
            raise AssertionError(f'unexpected key in our model: {key}')
    for name, buf in model.neck.named_buffers():  # persistent in the official Aggregator
        if name.endswith('attn_mask'):
            sd[AGG + name] = buf.clone()
    return sd


def detectron2_checkpoint(state_dict: dict) -> dict:
    """What detectron2's Checkpointer writes around the model weights."""
    return dict(model=state_dict, iteration=79999,
                optimizer=dict(state={}, param_groups=[dict(lr=2e-4, params=[0, 1])]),
                scheduler=dict(base_lrs=[2e-4], last_epoch=80000))


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/model_converters/catseg2mmseg.py')


@pytest.fixture(scope='module')
def model():
    """Tiny CAT-Seg, every weight perturbed so that no two tensors coincide by init."""
    net = _build(0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    return net


@pytest.fixture(scope='module')
def official_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp('official') / 'model_final_tiny.pth'
    torch.save(detectron2_checkpoint(official_state_dict(model)), path)
    return str(path)


@pytest.fixture(scope='module')
def image():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))


def test_cli_round_trip(tool, model, official_file, image, tmp_path, capsys):
    dst = str(tmp_path / 'out' / 'catseg_tiny_mmseg.pth')
    tool.main([official_file, dst, '--config', TINY_CFG])
    out = capsys.readouterr().out
    reference = model.state_dict()
    assert out.count('\n') == 1
    assert out.startswith(f'converted {len(reference)} tensors (ViT (width 64, 3 layers, patch 4, '
                          '96px; text width 64, 2 layers; embed dim 32), 1 constant buffers '
                          'dropped), loads strictly into')

    saved = torch.load(dst, map_location='cpu', weights_only=True)  # plain types only
    assert sorted(saved) == ['meta', 'state_dict']
    assert saved['meta']['converter'] == 'tools/model_converters/catseg2mmseg.py'
    assert saved['meta']['source'] == official_file
    assert saved['meta']['config'] == osp.join('configs', 'catseg_tiny_synthetic.py')
    assert saved['meta']['clip'] == dict(vision_width=64, vision_layers=3, patch_size=4,
                                         image_size=96, embed_dim=32, text_width=64,
                                         text_layers=2)
    assert saved['meta']['dropped_keys'] == [AGG + 'layers.0.swin_block.block_2.attn_mask']
    state = saved['state_dict']
    assert list(state) == sorted(reference)
    for key, value in reference.items():
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value), key

    fresh = _build(seed=123)
    with torch.no_grad():
        assert not torch.equal(fresh._forward(image), model._forward(image))
    load_checkpoint(fresh, dst, map_location='cpu', strict=True)  # what load_from does
    with torch.no_grad():
        assert torch.equal(fresh._forward(image), model._forward(image))
    assert all(torch.equal(v, reference[k]) for k, v in fresh.state_dict().items())


def test_packed_attention_in_bare_state_dict(model):
    """OpenAI-style packed ``in_proj_weight``, no detectron2 wrapper: same result."""
    sd = official_state_dict(model, packed=True)
    assert not any(k.endswith(QKV) for k in sd)
    converted = convert_catseg_checkpoint(sd)
    reference = model.state_dict()
    assert sorted(converted) == sorted(reference)
    assert all(torch.equal(converted[k], v) for k, v in reference.items())


@pytest.mark.parametrize('key,match', [
    (AGG + 'extra_scale', r"1 entries are not part of CAT-Seg: \['" + AGG.replace('.', r'\.') +
     r"extra_scale'\]"),
    ('pixel_mean', r"not part of CAT-Seg: \['pixel_mean'\]"),
    (CLIP + 'visual.transformer.prompt_tokens',
     r'prompt_tokens.*visual prompt tokens: .*PROMPT_DEPTH/PROMPT_LENGTH > 0'),
    ('backbone.layers.0.blocks.0.norm1.weight',
     r"1 backbone\.\* keys .*'backbone\.layers\.0\.blocks\.0\.norm1\.weight'.*early CAT-Seg "
     r'version with an extra Swin/ResNet backbone'),
])
def test_refuses_keys_that_are_not_catseg(model, key, match):
    sd = official_state_dict(model)
    sd[key] = torch.zeros(3)
    with pytest.raises(ValueError, match=match):
        convert_catseg_checkpoint(detectron2_checkpoint(sd))


def test_refuses_incomplete_and_malformed(model):
    sd = official_state_dict(model)
    del sd['upsample2.weight']
    with pytest.raises(ValueError, match=r"not a complete CAT-Seg checkpoint: missing "
                       r"\['upsample2\.weight'\]"):
        convert_catseg_checkpoint(sd)
    sd = official_state_dict(model)
    del sd[CLIP + 'transformer.resblocks.1.attn.k_proj_weight']
    with pytest.raises(ValueError, match=r'transformer\.resblocks\.1\.attn\.: needs all of'):
        convert_catseg_checkpoint(sd)
    sd = official_state_dict(model)
    sd[CLIP + 'visual.transformer.resblocks.0.attn.in_proj_weight'] = torch.zeros(192, 64)
    with pytest.raises(ValueError, match=r'attention weights both packed and split: '
                       r"\['visual\.transformer\.resblocks\.0\.attn\.in_proj_weight'\]"):
        convert_catseg_checkpoint(sd)
    with pytest.raises(TypeError, match='expected a checkpoint dict, got list'):
        convert_catseg_checkpoint([1])


def test_architecture_mismatch_vs_config(tool, official_file, tmp_path, capsys):
    dst = tmp_path / 'never_written.pth'
    with pytest.raises(ValueError, match=r'checkpoint is ViT \(width 64, 3 layers, patch 4, '
                       r'96px; .*\) but .*catseg_vitb16\.py builds ViT-B/16$'):
        tool.convert(official_file, str(dst), config=VITB_CFG)
    assert tool.run_cli(tool.main, tool.CONVERTER,
                        [official_file, str(dst), '--config', VITB_CFG]) == 1
    err = capsys.readouterr().err
    assert re.match(r'tools/model_converters/catseg2mmseg.py: error: .*model_final_tiny.pth: '
                    r'checkpoint is ViT', err), err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=r'no default config for a ViT \(width 64, .*\) CAT-Seg '
                       'checkpoint; pass --config'):
        tool.convert(official_file, str(dst))
    assert not dst.exists()


def test_released_architectures():
    """Names from CLIP shapes (official naming, real open_clip key sets on the meta device)."""
    archs = {}
    for model_name in ('ViT-B-16', 'ViT-L-14-336'):
        with torch.device('meta'):
            clip = open_clip.model.CLIP(**open_clip.get_model_config(model_name))
        sd = {CLIP + k: v for k, v in clip.state_dict().items()}
        archs[model_name] = clip_architecture(sd)
        assert archs[model_name] == clip_architecture_from_config(dict(model_name=model_name))
    assert archs['ViT-B-16'].name == 'ViT-B/16'
    assert archs['ViT-L-14-336'].name == 'ViT-L/14@336px'
    assert (archs['ViT-B-16'].vision_width, archs['ViT-L-14-336'].vision_width) == (768, 1024)
    with pytest.raises(ValueError,
                       match='^checkpoint is ViT-L/14@336px but catseg_vitb16.py builds ViT-B/16$'):
        check_architecture(archs['ViT-L-14-336'], archs['ViT-B-16'], 'catseg_vitb16.py')
    with pytest.raises(ValueError, match=r'no CLIP ViT weights found: none of '
                       r"\['sem_seg_head\.predictor\.clip_model\.visual\.conv1\.weight'"):
        clip_architecture({'upsample1.weight': torch.zeros(1)})


@pytest.mark.parametrize('edit,match', [
    ('drop_key', r"missing keys \['neck\.layers\.0\.attention\.norm2\.bias'\]"),
    ('reshape', r"shape mismatch \['decode_head\.head\.bias: checkpoint \(2,\) vs model \(1,\)'\]"),
    ('mask', r'block_2\.attn_mask differs from the model\'s neck\.layers\.0\.swin_block\.block_2'
     r'\.attn_mask \(another feature_resolution/window_size\?\)'),
])
def test_strict_check_against_config(tool, model, tmp_path, edit, match):
    sd = official_state_dict(model)
    if edit == 'drop_key':
        del sd[AGG + 'layers.0.attention.norm2.bias']
    elif edit == 'reshape':
        sd[AGG + 'head.bias'] = torch.zeros(2)
    else:
        sd[AGG + 'layers.0.swin_block.block_2.attn_mask'].fill_(0.)
    src = str(tmp_path / 'edited.pth')
    torch.save(detectron2_checkpoint(sd), src)
    with pytest.raises(ValueError, match=match):
        tool.convert(src, str(tmp_path / 'out.pth'), config=TINY_CFG)
    assert not (tmp_path / 'out.pth').exists()


def test_refuses_files_that_are_not_checkpoints(tool, tmp_path):
    cases = {
        'text.pth': (None, r"text\.pth: is not a torch checkpoint \(it starts with b'this'\)"),
        'object.pth': ({'model': {}, 'extra': NotAWeight()},
                       r'object\.pth: holds Python objects besides tensors \(.*NotAWeight\), '
                       r'which are not unpickled for safety'),
        'legacy.pth': ({'model': {}, 'extra': NotAWeight()},
                       r'legacy\.pth: holds Python objects besides tensors \([\w.]*NotAWeight\)'),
        'page.pth': (b'\n<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n',
                     r'page\.pth: is an HTML page, not a checkpoint: the download probably failed'),
        'train.pth': ({'state_dict': {'x': torch.zeros(1)}, 'message_hub': _history()},
                      r"train\.pth: is an mmseg/MMEngine training checkpoint \(message_hub, "
                      r"state_dict\), .*not an official CAT-Seg checkpoint: .*needs no conversion"),
        'list.pth': ([torch.zeros(1)], r'list\.pth: holds a list, expected a checkpoint dict'),
        'meta.pth': ({'lr': 0.1, 'name': 'x'},
                     r"meta\.pth: expected a detectron2 checkpoint .* entries that are not named "
                     r"tensors: \['lr', 'name'\]"),
        'mmseg.pth': ({'state_dict': {'neck.conv1.weight': torch.zeros(1)}, 'meta': {}},
                      r"mmseg\.pth: .*'state_dict' entry and no 'model' entry: it looks like an "
                      'mmseg/MMEngine checkpoint'),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        if content is None:
            path.write_text('this is not a checkpoint\n')
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path, _use_new_zipfile_serialization=name != 'legacy.pth')
        with pytest.raises(ValueError, match=match) as error:
            tool.convert(str(path), str(tmp_path / 'out.pth'), config=TINY_CFG)
        assert 'publish_model' not in str(error.value) and 'see below' not in str(error.value)
    with pytest.raises(FileNotFoundError, match='checkpoint file not found: .*missing.pth'):
        tool.convert(str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth'))


def test_conformance_aggregator_keys(conformance, model):
    """The official Aggregator keys of the conformance file, inside a whole checkpoint."""
    data = conformance('catseg_aggregator_pool2.pt')
    cfg = data['config']
    aggregator = data['state_dict_official']
    head = CATSegHead(clip_width=16, upsample_dims=tuple(cfg['decoder_guidance_dims']),
                      decoder_guidance_proj_dims=tuple(cfg['decoder_guidance_proj_dims']),
                      decoder_dims=tuple(cfg['decoder_dims']), hidden_dim=cfg['hidden_dim'])
    sd = {k: v for k, v in official_state_dict(model).items() if k.startswith(CLIP)}
    sd.update(aggregator)
    sd.update({k: v for k, v in head.state_dict().items() if k.startswith('upsample')})
    converted = convert_catseg_checkpoint(detectron2_checkpoint(sd))

    neck_children = ('layers', 'conv1', 'guidance_projection', 'text_guidance_projection')
    masks = [k for k in aggregator if k.endswith('attn_mask')]
    assert len(masks) == cfg['num_layers']
    for key, value in aggregator.items():
        rest = key[len(AGG):]
        target = ('neck.' if rest.split('.')[0] in neck_children else 'decode_head.') + rest
        if key in masks:
            assert target not in converted
        else:
            assert torch.equal(converted[target], value), key
    assert sum(k.startswith(('neck.', 'decode_head.')) for k in converted) == \
        len(aggregator) - len(masks) + 4  # + upsample1/2 weight and bias

    neck = CATSegAggregator(
        embed_dim=cfg['text_guidance_dim'],
        text_guidance_dim=cfg['text_guidance_proj_dim'],
        appearance_guidance_dim=cfg['appearance_guidance_proj_dim'],
        num_layers=cfg['num_layers'], num_heads=cfg['nheads'], hidden_dim=cfg['hidden_dim'],
        pooling_size=tuple(cfg['pooling_size']),
        feature_resolution=tuple(cfg['feature_resolution']), window_size=cfg['window_size'],
        prompt_channel=cfg['prompt_channel'])
    neck.load_state_dict({k[5:]: v for k, v in converted.items() if k.startswith('neck.')},
                         strict=True)
    head.load_state_dict({k[12:]: v for k, v in converted.items() if k.startswith('decode_head.')},
                         strict=True)
