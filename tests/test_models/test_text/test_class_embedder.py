"""Tests for ClassEmbedder: values, shapes, chunking, and a cache that cannot go stale.

The embedder owns (a reference to) its text encoder. Cache hits are checked by counting the
encoder's calls; every invalidation is checked against a direct computation with the
encoder's current weights.
"""
import copy
from types import SimpleNamespace
from typing import List

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg_escnet.models.text.class_embedder import ClassEmbedder
from mmseg_escnet.text.vocabulary import Vocabulary

DIM = 8
CLASSES = ['sofa, couch, lounge', 'cat', 'dog, puppy']
TEMPLATES = ['a {}.', 'the {} here', 'photo of {}']
NUM_PROMPTS = 18  # 3 templates * (3 + 1 + 2) synonyms


class FakeTextEncoder(nn.Module):
    """A toy text tower (embedding, mean over tokens, projection) with a character tokenizer.

    Counts its ``tokenize`` calls and records the batch size of every ``encode_text`` call.
    ``visual`` stands for an image tower: it never changes the text embeddings.
    """

    def __init__(self, dim: int = DIM, length: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(64, dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.visual = nn.Linear(2, 2)
        self.length = length
        self.batch_sizes: List[int] = []
        self.tokenize_calls = 0

    def tokenize(self, texts: List[str]) -> Tensor:
        """Characters -> ids in [1, 63], zero-padded: (N, L)."""
        self.tokenize_calls += 1
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [ord(ch) % 63 + 1 for ch in text[:self.length]]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(n, L) -> (n, C)."""
        self.batch_sizes.append(tokens.shape[0])
        return self.proj(self.embed(tokens).mean(dim=1))

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)


def direct_embeddings(vocab: Vocabulary, encoder: FakeTextEncoder) -> Tensor:
    """Reference, one prompt at a time: normalise -> mean over synonyms -> normalise."""
    rows = []
    with torch.no_grad():
        for per_class in vocab.prompts():
            per_template = []
            for prompts in per_class:
                embs = []
                for prompt in prompts:
                    tokens = encoder.tokenize([prompt]).to(encoder.embed.weight.device)
                    embs.append(F.normalize(encoder.proj(encoder.embed(tokens).mean(1))[0], dim=0))
                mean = torch.stack(embs).mean(0)
                per_template.append(mean / mean.norm())
            rows.append(torch.stack(per_template))
    return torch.stack(rows)  # (T, P, C)


def make(synonyms='all', **kwargs):
    encoder = FakeTextEncoder()
    vocab = Vocabulary(CLASSES, synonyms=synonyms, templates=TEMPLATES)
    return ClassEmbedder(vocab, text_encoder=encoder, **kwargs), encoder


def assert_direct(out: Tensor, embedder: ClassEmbedder, encoder: FakeTextEncoder) -> None:
    expected = direct_embeddings(embedder.vocabulary, encoder).to(out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


class Segmentor(nn.Module):
    """A segmentor's layout: the backbone is the text encoder, the embedder refers to it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = FakeTextEncoder()
        self.test_text = ClassEmbedder(dict(classes=CLASSES, templates=TEMPLATES),
                                       text_encoder=self.backbone)


# -- values ----------------------------------------------------------------------------------------
def test_values_and_shape():
    embedder, encoder = make()
    embedder.eval()
    out = embedder()
    assert out.shape == (3, 3, DIM)  # (T, P, C)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 3))
    assert_direct(out, embedder, encoder)
    # the synonym average really differs from the first synonym alone
    first = direct_embeddings(Vocabulary(CLASSES, templates=TEMPLATES), encoder)
    assert not torch.allclose(out[0], first[0], atol=1e-3)
    torch.testing.assert_close(out[1], first[1], atol=1e-6, rtol=1e-5)  # 'cat' has 1 synonym


def test_first_synonym_policy_and_chunking():
    embedder, encoder = make(synonyms='first')
    embedder.eval()
    assert_direct(embedder(), embedder, encoder)
    assert encoder.batch_sizes == [9]  # T * P * 1 prompts in one chunk
    chunked_embedder, chunked_encoder = make(synonyms='all')
    chunked = chunked_embedder.eval()(chunk_size=4)
    assert chunked_encoder.batch_sizes == [4, 4, 4, 4, 2]  # 18 prompts
    assert_direct(chunked, chunked_embedder, chunked_encoder)


# -- caching ---------------------------------------------------------------------------------------
def test_eval_cache_hit_calls_no_encoder():
    embedder, encoder = make()
    embedder.eval()
    out1 = embedder(chunk_size=8)
    assert encoder.calls == 3  # ceil(18 / 8)
    out2 = embedder(chunk_size=8)
    out3 = embedder()
    assert encoder.calls == 3 and encoder.tokenize_calls == 1
    assert out2 is out1 and out3 is out1
    assert not out1.requires_grad


def test_trainable_tower_recomputes_with_gradients_in_training():
    embedder, encoder = make()
    embedder.train()
    out1 = embedder()
    out2 = embedder()
    assert encoder.batch_sizes == [NUM_PROMPTS, NUM_PROMPTS] and encoder.tokenize_calls == 1
    assert out1.requires_grad and out1 is not out2
    (out1 * torch.randn_like(out1)).sum().backward()
    assert encoder.embed.weight.grad.abs().sum() > 0
    assert encoder.proj.weight.grad.abs().sum() > 0
    assert_direct(out1.detach(), embedder, encoder)


def test_frozen_tower_is_cached_in_training_and_image_tower_steps_keep_it():
    embedder, encoder = make()
    encoder.embed.requires_grad_(False)
    encoder.proj.requires_grad_(False)  # frozen text tower; encoder.visual still trains
    encoder.text_trainable = False  # what the CLIP backbones report
    embedder.train()
    out = embedder()
    assert embedder() is out and encoder.calls == 1 and not out.requires_grad
    optimizer = torch.optim.SGD(encoder.visual.parameters(), lr=1.0)
    encoder.visual(torch.randn(3, 2)).sum().backward()
    optimizer.step()  # the image tower trains: the text cache stays
    assert embedder() is out and encoder.calls == 1
    with torch.no_grad():
        encoder.proj.weight.mul_(-2.0)  # a frozen text weight changed in place: recomputed
    changed = embedder()
    assert encoder.calls == 2
    assert not torch.allclose(changed, out)
    assert_direct(changed, embedder, encoder)


def test_frozen_without_text_trainable_attribute():
    """An encoder without ``text_trainable`` is frozen when none of its parameters trains."""
    embedder, encoder = make()
    encoder.requires_grad_(False)
    embedder.train()
    assert embedder() is embedder() and encoder.calls == 1
    encoder.proj.weight.requires_grad_(True)  # now trainable: recomputed with gradients
    assert embedder().requires_grad and encoder.calls == 2


def test_train_drops_the_cache():
    embedder, encoder = make()
    embedder.eval()
    embedder()
    parent = nn.Sequential(embedder)  # a module tree's train()/eval() reaches the embedder
    parent.train()
    parent.eval()
    embedder()
    assert encoder.calls == 2 and encoder.tokenize_calls == 1  # tokens survive mode changes


# -- invalidation: every event that changes the encoder's weights ---------------------------------
def test_weight_loading_invalidates():
    embedder, encoder = make()
    embedder.eval()
    before = embedder().clone()
    other = FakeTextEncoder(seed=1)
    encoder.load_state_dict(other.state_dict())  # straight into the encoder: no hook involved
    after = embedder()
    assert encoder.calls == 2
    assert not torch.allclose(before, after, atol=1e-3)
    assert_direct(after, embedder, encoder)
    assert embedder() is after and encoder.calls == 2  # and cached again
    encoder.load_state_dict(FakeTextEncoder(seed=2).state_dict(), assign=True)  # new tensors
    assert_direct(embedder(), embedder, encoder)
    assert encoder.calls == 3


def test_optimizer_step_in_eval_mode_invalidates():
    """Eval, then an optimizer step on the text tower without train(): no stale embeddings."""
    embedder, encoder = make()
    optimizer = torch.optim.SGD(encoder.parameters(), lr=10.0)
    embedder.train()
    (embedder() * torch.randn(3, 3, DIM)).sum().backward()
    embedder.eval()
    before = embedder().clone()
    calls = encoder.calls
    optimizer.step()  # e.g. a validation between backward and step
    after = embedder()
    assert encoder.calls == calls + 1
    assert not torch.allclose(before, after, atol=1e-3)
    assert_direct(after, embedder, encoder)


def test_dtype_moves_invalidate_even_back_and_forth():
    embedder, encoder = make()
    embedder.eval()
    out32 = embedder()
    encoder.double()
    out64 = embedder()
    assert out64.dtype == torch.float64 and encoder.calls == 2
    torch.testing.assert_close(out64.float(), out32, atol=1e-6, rtol=1e-5)
    encoder.half()
    out16 = embedder()
    assert out16.dtype == torch.float16 and encoder.calls == 3
    encoder.float()  # the weights now hold half-precision values: not out32 again
    back = embedder()
    assert back.dtype == torch.float32 and encoder.calls == 4
    assert_direct(back, embedder, encoder)
    assert not torch.equal(back, out32)


def test_device_moves_invalidate():
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA to check a device move')
    embedder, encoder = make()
    embedder.eval()
    embedder()
    encoder.cuda()
    out = embedder()
    assert out.device.type == 'cuda' and encoder.calls == 2 and encoder.tokenize_calls == 1
    assert_direct(out, embedder, encoder)
    encoder.cpu()
    assert embedder().device.type == 'cpu' and encoder.calls == 3


def test_autocast_is_its_own_cache_entry():
    embedder, encoder = make()
    embedder.eval()
    out = embedder()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = embedder()
        assert embedder() is mixed
    assert mixed.dtype == torch.bfloat16 and encoder.calls == 2
    assert embedder() is out and out.dtype == torch.float32 and encoder.calls == 2


def test_swapping_the_vocabulary():
    embedder, encoder = make()
    embedder.eval()
    out1 = embedder()
    embedder.set_vocabulary(['car', 'bus'])
    assert embedder.num_classes == 2 and embedder.num_templates == 1
    out2 = embedder()
    assert out2.shape == (2, 1, DIM) and encoder.tokenize_calls == 2
    assert_direct(out2, embedder, encoder)
    embedder.set_vocabulary(dict(classes=CLASSES, synonyms='all', templates=TEMPLATES))
    assert embedder() is out1 and encoder.calls == 2  # a recent vocabulary: not encoded


def test_recent_vocabularies_are_not_encoded_again():
    embedder, encoder = make(cache_size=2)
    embedder.eval()
    first = embedder()
    embedder.set_vocabulary(['car', 'bus'])
    embedder()
    calls = encoder.calls
    embedder.set_vocabulary(dict(classes=CLASSES, synonyms='all', templates=TEMPLATES))
    assert embedder() is first  # back to the first: no encoding
    assert encoder.calls == calls
    embedder.set_vocabulary(['tree'])
    embedder()
    embedder.set_vocabulary(['car', 'bus'])  # pushed out by 'tree' (cache_size 2): encoded
    embedder()
    assert encoder.calls == calls + 2
    with torch.no_grad():
        encoder.embed.weight.add_(1.0)  # new weights: no recent vocabulary survives
    embedder.set_vocabulary(['tree'])
    assert_direct(embedder(), embedder, encoder)
    assert encoder.calls == calls + 3
    embedder.clear_cache()
    embedder()
    assert encoder.calls == calls + 4
    with pytest.raises(ValueError, match='cache_size'):
        ClassEmbedder(['a'], cache_size=0)


# -- the encoder is held by reference ------------------------------------------------------------
def test_no_state_dict_keys_and_one_conversion():
    model = Segmentor()
    assert list(model.state_dict()) == [f'backbone.{k}' for k in model.backbone.state_dict()]
    assert model.test_text.state_dict() == {} and list(model.test_text.parameters()) == []
    assert [name for name, _ in model.named_modules()].count('backbone') == 1
    assert 'test_text.backbone' not in dict(model.named_modules())
    assert model.test_text.text_encoder is model.backbone
    model.eval()
    model.half()  # reaches the backbone once, through the segmentor
    assert model.backbone.proj.weight.dtype == torch.float16
    assert model.test_text().dtype == torch.float16
    model.float()
    assert model.test_text().dtype == torch.float32
    assert 'text_encoder=FakeTextEncoder' in repr(model.test_text)


def test_deepcopy_uses_the_copys_encoder():
    model = Segmentor().eval()
    original = model.test_text()
    clone = copy.deepcopy(model)
    assert clone.test_text.text_encoder is clone.backbone
    assert clone.backbone is not model.backbone
    with torch.no_grad():
        clone.backbone.proj.weight.mul_(-1.0).add_(0.5)
    copied = clone.test_text()
    assert model.backbone.calls == 1 and clone.backbone.calls == 2  # the copy's own encoder
    assert_direct(copied, clone.test_text, clone.backbone)
    assert model.test_text() is original and model.backbone.calls == 1
    assert not torch.allclose(copied, original, atol=1e-3)


def test_set_text_encoder_and_construction_forms():
    assert ClassEmbedder('voc20').num_classes == 20
    assert ClassEmbedder(['a', 'b, c']).vocabulary.synonyms == [['a'], ['b']]
    embedder = ClassEmbedder(dict(classes=['a', 'b'], templates='imagenet'))
    assert embedder.num_templates == 80 and embedder.text_encoder is None
    assert list(embedder.parameters()) == [] and embedder.state_dict() == {}
    assert 'num_classes=2' in repr(embedder)
    from mmseg.registry import MODELS
    built = MODELS.build(dict(type='ClassEmbedder', vocabulary=dict(classes=CLASSES,
                                                                      templates=TEMPLATES)))
    with pytest.raises(RuntimeError, match='no text encoder'):
        built()
    first = FakeTextEncoder()
    built.set_text_encoder(first)
    built.eval()
    built()
    second = FakeTextEncoder(seed=3)
    built.set_text_encoder(second)  # another encoder: its own tokens and embeddings
    out = built()
    assert second.calls == 1 and second.tokenize_calls == 1 and first.calls == 1
    assert_direct(out, built, second)
    assert list(built.children()) == [] and built.state_dict() == {}


def test_errors():
    with pytest.raises(TypeError, match="needs a 'classes' key"):
        ClassEmbedder(dict(synonyms='all'))
    with pytest.raises(TypeError, match='lacks tokenize'):
        ClassEmbedder(['a'], text_encoder=SimpleNamespace(encode_text=lambda t: t))
    embedder, encoder = make()
    with pytest.raises(ValueError, match='chunk_size must be a positive int'):
        embedder(chunk_size=0)

    class Wrong(FakeTextEncoder):
        mode = 'shape'

        def tokenize(self, texts):
            if self.mode == 'list':
                return [[0]] * len(texts)
            if self.mode == 'shape':
                return torch.zeros(2, 4, dtype=torch.long)
            return super().tokenize(texts)

        def encode_text(self, tokens):
            if self.mode == 'rank':
                return tokens.float().unsqueeze(-1)  # (n, L, 1)
            return tokens.float()[:1]  # wrong n

    wrong = Wrong()
    embedder = ClassEmbedder(dict(classes=CLASSES, synonyms='all', templates=TEMPLATES),
                             text_encoder=wrong)
    with pytest.raises(ValueError, match=r'tokenize must return \(N, L\) tokens with N = 18'):
        embedder()
    wrong.mode = 'list'
    with pytest.raises(TypeError, match='tokenize must return a Tensor'):
        embedder()
    wrong.mode = 'rank'
    with pytest.raises(ValueError, match=r'encode_text must map \(18, L\) tokens to \(18, C\)'):
        embedder()
    wrong.mode = 'n'
    with pytest.raises(ValueError, match=r'encode_text must map \(18, L\) tokens'):
        embedder()


def test_real_open_clip_tokenizer():
    open_clip = pytest.importorskip('open_clip')
    tokenizer = open_clip.get_tokenizer('ViT-B-16')

    class TinyClipText(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(49408, DIM)
            self.calls: List[int] = []

        def tokenize(self, texts):
            self.calls.append(len(texts))
            return tokenizer(texts)

        def encode_text(self, tokens):
            # (n, 77) -> (n, C): embedding of the EOT token (the max id), as CLIP pools it
            eot = tokens.argmax(dim=-1)
            return self.embed(tokens)[torch.arange(tokens.shape[0]), eot]

    text = TinyClipText()
    embedder = ClassEmbedder(dict(classes='voc20', templates=['a photo of a {}.', '{}']),
                             text_encoder=text)
    embedder.train()
    out = embedder(chunk_size=16)
    assert out.shape == (20, 2, DIM)
    assert text.calls == [40]
    assert embedder._tokens.shape == (40, 77)
    assert torch.equal(embedder._tokens[0], tokenizer(['a photo of a aeroplane.'])[0])
    embedder()
    assert text.calls == [40]
