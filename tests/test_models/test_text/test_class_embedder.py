"""Tests for ClassEmbedder: values, shapes, chunking and cache invalidation."""
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


class FakeTokenizer:
    """Characters -> ids in [1, 63], zero-padded to a fixed length; counts its calls."""

    def __init__(self, length: int = 16) -> None:
        self.length = length
        self.calls = 0

    def __call__(self, texts: List[str]) -> Tensor:
        self.calls += 1
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [ord(ch) % 63 + 1 for ch in text[:self.length]]
            out[i, :len(ids)] = torch.tensor(ids)
        return out


class FakeTextEncoder(nn.Module):
    """Embedding + mean over tokens; records the batch size of every call."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(64, dim)
        self.batch_sizes: List[int] = []

    def encode_text(self, tokens: Tensor) -> Tensor:
        self.batch_sizes.append(tokens.shape[0])
        return self.embed(tokens.to(self.embed.weight.device)).mean(dim=1)  # (n, L, C) -> (n, C)


def hand_embeddings(vocab: Vocabulary, encoder: FakeTextEncoder, tokenize) -> Tensor:
    """Reference: per (class, template) normalise -> mean over synonyms -> normalise."""
    rows = []
    with torch.no_grad():
        for per_class in vocab.prompts():
            per_template = []
            for prompts in per_class:
                embs = [F.normalize(encoder.embed(tokenize([p])).mean(1)[0], dim=0)
                        for p in prompts]
                mean = torch.stack(embs).mean(0)
                per_template.append(mean / mean.norm())
            rows.append(torch.stack(per_template))
    return torch.stack(rows)  # (T, P, C)


def make(synonyms='all'):
    vocab = Vocabulary(CLASSES, synonyms=synonyms, templates=TEMPLATES)
    return ClassEmbedder(vocab), FakeTextEncoder(), FakeTokenizer()


def test_values_and_shape():
    embedder, encoder, tokenize = make()
    embedder.eval()
    out = embedder(encoder.encode_text, tokenize)
    assert out.shape == (3, 3, DIM)  # (T, P, C)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 3))
    expected = hand_embeddings(embedder.vocabulary, encoder, FakeTokenizer())
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    # the synonym average really differs from the first synonym alone
    first = hand_embeddings(Vocabulary(CLASSES, templates=TEMPLATES), encoder, FakeTokenizer())
    assert not torch.allclose(out[0], first[0], atol=1e-3)
    torch.testing.assert_close(out[1], first[1], atol=1e-6, rtol=1e-5)  # 'cat' has 1 synonym


def test_first_synonym_policy_and_chunking():
    embedder, encoder, tokenize = make(synonyms='first')
    embedder.eval()
    full = embedder(encoder.encode_text, tokenize).clone()
    expected = hand_embeddings(embedder.vocabulary, encoder, FakeTokenizer())
    torch.testing.assert_close(full, expected, atol=1e-6, rtol=1e-5)
    assert encoder.batch_sizes == [9]  # T * P * 1 prompts in one chunk
    chunked_embedder, chunked_encoder, _ = make(synonyms='all')
    chunked_embedder.eval()
    chunked = chunked_embedder(chunked_encoder.encode_text, FakeTokenizer(), chunk_size=4)
    assert chunked_encoder.batch_sizes == [4, 4, 4, 4, 2]  # 18 prompts = 3*(3+1+2)
    all_embedder, all_encoder, _ = make(synonyms='all')
    all_embedder.eval()
    torch.testing.assert_close(chunked, all_embedder(all_encoder.encode_text, FakeTokenizer()))


def test_eval_cache_reused():
    embedder, encoder, tokenize = make()
    embedder.eval()
    out1 = embedder(encoder.encode_text, tokenize, chunk_size=8)
    calls = len(encoder.batch_sizes)
    assert calls == 3  # ceil(18 / 8)
    out2 = embedder(encoder.encode_text, tokenize, chunk_size=8)
    assert len(encoder.batch_sizes) == calls
    assert out2 is out1
    assert not out1.requires_grad
    assert tokenize.calls == 1


def test_train_invalidates_cache_no_stale_embeddings():
    """CAT-Seg's stale-cache bug: eval, train (weights change), eval must see new weights."""
    embedder, encoder, tokenize = make()
    embedder.eval()
    before = embedder(encoder.encode_text, tokenize).clone()
    embedder.train()
    with torch.no_grad():
        encoder.embed.weight.mul_(-1.5).add_(0.3)
    embedder.eval()
    after = embedder(encoder.encode_text, tokenize)
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, hand_embeddings(embedder.vocabulary, encoder,
                                                      FakeTokenizer()), atol=1e-6, rtol=1e-5)
    assert tokenize.calls == 1  # tokens survive mode changes
    # a module tree's train()/eval() reaches the embedder too
    parent = nn.Sequential(embedder)
    calls = len(encoder.batch_sizes)
    parent.train()
    parent.eval()
    embedder(encoder.encode_text, tokenize)
    assert len(encoder.batch_sizes) == calls + 1


def test_set_vocabulary_invalidates():
    embedder, encoder, tokenize = make()
    embedder.eval()
    out1 = embedder(encoder.encode_text, tokenize)
    embedder.set_vocabulary(['car', 'bus'])
    assert embedder.num_classes == 2 and embedder.num_templates == 1
    out2 = embedder(encoder.encode_text, tokenize)
    assert out2.shape == (2, 1, DIM)
    assert tokenize.calls == 2
    torch.testing.assert_close(out2, hand_embeddings(embedder.vocabulary, encoder,
                                                     FakeTokenizer()), atol=1e-6, rtol=1e-5)
    embedder.set_vocabulary(dict(classes=CLASSES, synonyms='all', templates=TEMPLATES))
    torch.testing.assert_close(embedder(encoder.encode_text, tokenize), out1)


def test_recent_vocabularies_are_not_encoded_again():
    embedder, encoder, tokenize = make()
    embedder.cache_size = 2
    embedder.eval()
    first = embedder(encoder.encode_text, tokenize)
    embedder.set_vocabulary(['car', 'bus'])
    embedder(encoder.encode_text, tokenize)
    calls = len(encoder.batch_sizes)
    embedder.set_vocabulary(dict(classes=CLASSES, synonyms='all', templates=TEMPLATES))
    assert embedder(encoder.encode_text, tokenize) is first  # back to the first: no encoding
    assert len(encoder.batch_sizes) == calls
    embedder.set_vocabulary(['tree'])
    embedder(encoder.encode_text, tokenize)
    embedder.set_vocabulary(['car', 'bus'])  # pushed out by 'tree' (cache_size 2): encoded
    embedder(encoder.encode_text, tokenize)
    assert len(encoder.batch_sizes) == calls + 2
    embedder.clear_cache()  # new weights: nothing recent survives
    embedder.set_vocabulary(['tree'])
    embedder(encoder.encode_text, tokenize)
    assert len(encoder.batch_sizes) == calls + 3
    with pytest.raises(ValueError, match='cache_size'):
        ClassEmbedder(['a'], cache_size=0)


def test_training_recomputes_with_gradients():
    embedder, encoder, tokenize = make()
    embedder.train()
    out1 = embedder(encoder.encode_text, tokenize)
    out2 = embedder(encoder.encode_text, tokenize)
    assert len(encoder.batch_sizes) == 2 and tokenize.calls == 1
    assert out1.requires_grad and out1 is not out2
    weights = torch.randn_like(out1)
    (out1 * weights).sum().backward()
    grad = encoder.embed.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    torch.testing.assert_close(out1.detach(), hand_embeddings(embedder.vocabulary, encoder,
                                                              FakeTokenizer()),
                               atol=1e-6, rtol=1e-5)


def test_dtype_and_encoder_changes_invalidate():
    embedder, encoder, tokenize = make()
    embedder.eval()
    out32 = embedder(encoder.encode_text, tokenize)
    encoder.double()
    out64 = embedder(encoder.encode_text, tokenize)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, atol=1e-6, rtol=1e-5)
    other = FakeTextEncoder()
    with torch.no_grad():
        other.embed.weight.normal_()
    out_other = embedder(other.encode_text, tokenize)
    assert len(other.batch_sizes) == 1
    assert not torch.allclose(out_other, out32, atol=1e-3)


def test_tokens_follow_encoder_device():
    embedder, encoder, tokenize = make()
    embedder.eval()
    embedder(encoder.encode_text, tokenize, device='cpu')
    assert embedder._tokens_on(torch.device('cpu')).device.type == 'cpu'
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA to check a device move')
    encoder.cuda()
    out = embedder(encoder.encode_text, tokenize)
    assert out.device.type == 'cuda' and tokenize.calls == 1


def test_construction_forms_and_no_state():
    assert ClassEmbedder('voc20').num_classes == 20
    assert ClassEmbedder(['a', 'b, c']).vocabulary.synonyms == [['a'], ['b']]
    embedder = ClassEmbedder(dict(classes=['a', 'b'], templates='imagenet'))
    assert embedder.num_templates == 80
    assert list(embedder.parameters()) == [] and embedder.state_dict() == {}
    assert 'num_classes=2' in repr(embedder)
    from mmseg.registry import MODELS
    built = MODELS.build(dict(type='ClassEmbedder', vocabulary=dict(classes='ade150')))
    assert isinstance(built, ClassEmbedder) and built.num_classes == 150


def test_errors():
    with pytest.raises(TypeError, match="needs a 'classes' key"):
        ClassEmbedder(dict(synonyms='all'))
    embedder, encoder, tokenize = make()
    with pytest.raises(ValueError, match='chunk_size must be a positive int'):
        embedder(encoder.encode_text, tokenize, chunk_size=0)
    with pytest.raises(ValueError, match=r'tokenize must return \(N, L\) tokens with N = 18'):
        embedder(encoder.encode_text, lambda texts: torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match='tokenize must return a Tensor'):
        embedder(encoder.encode_text, lambda texts: [[0]] * len(texts))
    with pytest.raises(ValueError, match=r'encode_text must map \(18, L\) tokens to \(18, C\)'):
        embedder(lambda tokens: tokens.float().unsqueeze(-1), tokenize)  # (n, L, 1)
    with pytest.raises(ValueError, match=r'encode_text must map \(18, L\) tokens'):
        embedder(lambda tokens: tokens.float()[:1], tokenize)  # wrong n


def test_real_open_clip_tokenizer():
    open_clip = pytest.importorskip('open_clip')
    tokenizer = open_clip.get_tokenizer('ViT-B-16')
    calls = []

    def counting_tokenizer(texts):
        calls.append(len(texts))
        return tokenizer(texts)

    class TinyClipText(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(49408, DIM)

        def encode_text(self, tokens):
            # (n, 77) -> (n, C): embedding of the EOT token (the max id), as CLIP pools it
            eot = tokens.argmax(dim=-1)
            return self.embed(tokens)[torch.arange(tokens.shape[0]), eot]

    embedder = ClassEmbedder(dict(classes='voc20', templates=['a photo of a {}.', '{}']))
    text = TinyClipText()
    embedder.train()
    out = embedder(text.encode_text, counting_tokenizer, chunk_size=16)
    assert out.shape == (20, 2, DIM)
    assert calls == [40]
    assert embedder._tokens.shape == (40, 77)
    expected = tokenizer(['a photo of a aeroplane.'])[0]
    assert torch.equal(embedder._tokens[0], expected)
    embedder(text.encode_text, counting_tokenizer)
    assert calls == [40]
