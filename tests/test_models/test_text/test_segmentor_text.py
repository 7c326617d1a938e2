"""The segmentor's class embedders own its backbone as their text encoder: no state-dict keys,
deep copies use the copy's backbone, and the cached text follows the backbone's weights."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _build(seed: int = 0):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'))
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    return MODELS.build(cfg.model)


def _count_text_calls(model) -> list:
    """Record every call of the backbone's CLIP text tower."""
    clip = model.backbone.clip_model
    calls = []
    clip.encode_text = lambda tokens, *a, **k: calls.append(tokens.shape[0]) or \
        type(clip).encode_text(clip, tokens, *a, **k)
    return calls


def _fresh_text(model) -> torch.Tensor:
    """The test vocabulary's embeddings computed by a new embedder on ``model``'s backbone."""
    from mmseg_escnet.models.text import ClassEmbedder
    embedder = ClassEmbedder(model.test_text.vocabulary, text_encoder=model.backbone).eval()
    with torch.no_grad():
        return embedder(chunk_size=model.text_chunk_size).clone()


@pytest.fixture(scope='module')
def model():
    return _build()


def test_embedders_hold_the_backbone_without_state_dict_keys(model):
    assert model.train_text.text_encoder is model.backbone
    assert model.test_text.text_encoder is model.backbone
    keys = list(model.state_dict())
    assert not [k for k in keys if k.startswith(('train_text.', 'test_text.'))]
    modules = [name for name, _ in model.named_modules()]
    assert not [name for name in modules if name.startswith(('train_text.', 'test_text.'))]
    assert list(model.test_text.children()) == [] and list(model.train_text.children()) == []
    assert model.backbone.text_trainable  # CAT-Seg fine-tunes the text tower


def test_deepcopy_gives_the_copy_its_own_backbone(model):
    clone = copy.deepcopy(model).eval()
    assert clone.test_text.text_encoder is clone.backbone is not model.backbone
    assert clone.train_text.text_encoder is clone.backbone
    calls = _count_text_calls(clone)
    with torch.no_grad():
        clone.backbone.clip_model.text_projection.mul_(-1.0)
        copied = clone.text_embeddings()
    assert calls  # encoded by the copy's text tower
    torch.testing.assert_close(copied, _fresh_text(clone))
    model.eval()
    with torch.no_grad():
        original = model.text_embeddings()
    assert not torch.allclose(original, copied, atol=1e-3)
    torch.testing.assert_close(original, _fresh_text(model))


def test_cached_text_follows_weights_steps_and_dtype():
    model = _build().eval()
    calls = _count_text_calls(model)
    with torch.no_grad():
        first = model.text_embeddings()
        assert model.text_embeddings() is first
    encoded = len(calls)
    assert encoded > 0

    # weight loading (through the segmentor: its hook and the version counters agree)
    other = _build(seed=1)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = model.text_embeddings()
    assert len(calls) == 2 * encoded and not torch.allclose(loaded, first, atol=1e-3)
    torch.testing.assert_close(loaded, _fresh_text(other.eval()))

    # mmengine's checkpoint loading (what load_checkpoint and the Runner use)
    from mmengine.runner.checkpoint import load_state_dict
    load_state_dict(model, _build(seed=2).state_dict())
    with torch.no_grad():
        reloaded = model.text_embeddings()
    assert len(calls) == 3 * encoded and not torch.allclose(reloaded, loaded, atol=1e-3)
    torch.testing.assert_close(reloaded, _fresh_text(model))

    # an optimizer step on the text tower while the model stays in eval mode
    model.train()
    model.text_embeddings().sum().backward()  # trainable tower: gradients, no cache
    model.eval()
    with torch.no_grad():
        before = model.text_embeddings().clone()
    optimizer = torch.optim.SGD([p for p in model.backbone.parameters() if p.requires_grad],
                                lr=100.0)
    optimizer.step()
    with torch.no_grad():
        stepped = model.text_embeddings()
    assert not torch.allclose(before, stepped, atol=1e-4)
    torch.testing.assert_close(stepped, _fresh_text(model))

    # a dtype move of the whole model
    model.double()
    with torch.no_grad():
        doubled = model.text_embeddings()
    assert doubled.dtype == torch.float64
    torch.testing.assert_close(doubled.float(), stepped, atol=1e-5, rtol=1e-4)

    # swapping the vocabulary
    model.float()
    model.set_vocabulary(['red thing', 'blue thing'])
    with torch.no_grad():
        swapped = model.text_embeddings()
    assert swapped.shape[0] == 2
    torch.testing.assert_close(swapped, _fresh_text(model))


def test_vocabulary_options_are_the_training_prompting(model):
    trained = model.train_text.vocabulary
    options = model.vocabulary_options()
    assert options == dict(templates=trained.templates, synonyms=trained.synonym_policy)
    previous = model.test_text.vocabulary
    try:
        model.set_vocabulary(['cat, kitty', 'sky'])
        model.eval()
        assert model.vocabulary.templates == trained.templates
        assert model.vocabulary.synonym_policy == trained.synonym_policy
        model.set_vocabulary(dict(classes=['cat, kitty', 'sky'], synonyms='all'))  # its own wins
        assert model.vocabulary.synonyms[0] == ['cat', 'kitty']
    finally:
        model.set_vocabulary(previous)
