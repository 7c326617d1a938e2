"""Class text embeddings with token and eval-mode caching.

:class:`ClassEmbedder` turns a :class:`Vocabulary` into the ``(T, P, C)`` class
embeddings that CAT-Seg-style models correlate with dense image features:

1. every prompt ``template.format(synonym)`` is tokenised once per vocabulary;
2. the prompts are encoded in chunks by the caller's ``encode_text`` and each
   embedding is L2-normalised;
3. per (class, template) the synonym embeddings are averaged and the mean is
   L2-normalised again.

In training mode the embeddings are recomputed on every call with gradients
(CAT-Seg fine-tunes CLIP's text attention), unless the caller says the text
encoder is frozen (SED). In eval mode, or frozen, they are computed once under
``torch.no_grad`` and cached. Unlike CAT-Seg, whose eval cache is never
reset, the cache is dropped when the module returns to training mode and when the
encoder's weights, device, dtype or identity change. The embeddings of the last
``cache_size`` vocabularies are kept, so switching back to one costs no encoding.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...text import Vocabulary

VocabularySpec = Union[Vocabulary, str, Sequence[str], Dict]


def build_vocabulary(vocabulary: VocabularySpec,
                     defaults: Optional[dict] = None) -> Vocabulary:
    """Build a :class:`Vocabulary` from any accepted form.

    Args:
        vocabulary: a :class:`Vocabulary`; a dict of ``Vocabulary`` keyword
            arguments (``classes`` plus optional ``synonyms``/``templates``);
            or anything ``Vocabulary(classes=...)`` accepts (a built-in name,
            a file path or a list of class names).
        defaults (dict, optional): ``synonyms``/``templates`` for a vocabulary
            that does not set them (a model's prompting, e.g. SED's 80
            templates); ignored for a :class:`Vocabulary`.

    Returns:
        Vocabulary: the vocabulary.

    Raises:
        TypeError: a dict without ``classes`` or with unknown keys.
    """
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    defaults = dict(defaults or {})
    if isinstance(vocabulary, dict):
        if 'classes' not in vocabulary:
            raise TypeError(f"a vocabulary dict needs a 'classes' key, got keys "
                            f'{sorted(vocabulary)}')
        return Vocabulary(**{**defaults, **vocabulary})
    return Vocabulary(vocabulary, **defaults)


def _encoder_module(encode_text: Callable) -> Optional[nn.Module]:
    """The module behind ``encode_text`` (itself or a bound method's owner)."""
    if isinstance(encode_text, nn.Module):
        return encode_text
    owner = getattr(encode_text, '__self__', None)
    return owner if isinstance(owner, nn.Module) else None


def _encoder_identity(encode_text: Callable) -> Tuple[int, ...]:
    """An identity for ``encode_text`` that is stable across bound-method lookups."""
    owner = getattr(encode_text, '__self__', None)
    func = getattr(encode_text, '__func__', None)
    if owner is not None and func is not None:
        return (id(owner), id(func))
    return (id(encode_text), )


@MODELS.register_module()
class ClassEmbedder(nn.Module):
    """Computes and caches the L2-normalised class text embeddings.

    The module has no parameters: the text encoder is passed to
    :meth:`forward` as a callable, so it stays owned (and checkpointed) by the
    backbone. The token tensor and the eval-mode embeddings are plain
    attributes, not buffers, so they never enter a state dict.

    Args:
        vocabulary: a :class:`Vocabulary`, a dict of its keyword arguments
            (e.g. ``dict(classes='ade847', synonyms='all')``), a built-in
            vocabulary name, a ``.txt``/``.json`` path or a list of class names.
        defaults (dict, optional): ``synonyms``/``templates`` for every vocabulary given
            without them (see :func:`build_vocabulary`).
        cache_size (int): Eval-mode embeddings of this many recent vocabularies are kept, so
            switching back to one (a web demo, an inferencer) does not encode it again.
    """

    def __init__(self, vocabulary: VocabularySpec, defaults: Optional[dict] = None,
                 cache_size: int = 4) -> None:
        super().__init__()
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f'cache_size must be a positive int, got {cache_size!r}')
        self.cache_size = cache_size
        # (cache key) -> (T, P, C) embeddings of recent vocabularies, most recent last
        self._recent: 'OrderedDict[Tuple, Tensor]' = OrderedDict()
        self.defaults = dict(defaults or {})
        self._vocabulary = build_vocabulary(vocabulary, self.defaults)
        self._tokens: Optional[Tensor] = None  # (N, L) as returned by the tokenizer
        self._device_tokens: Optional[Tensor] = None  # (N, L) on the encoder's device
        self._group_index: Optional[Tensor] = None  # (N,) flat (class * P + template) index
        self._cache: Optional[Tensor] = None  # (T, P, C), eval mode only
        self._cache_key: Optional[Tuple] = None

    @property
    def vocabulary(self) -> Vocabulary:
        """The current vocabulary."""
        return self._vocabulary

    @property
    def num_classes(self) -> int:
        """Number of classes T."""
        return len(self._vocabulary)

    @property
    def num_templates(self) -> int:
        """Number of prompt templates (or description channels) P."""
        return self._vocabulary.num_prompts

    def set_vocabulary(self, vocabulary: VocabularySpec) -> None:
        """Swap the vocabulary; drops the cached tokens and embeddings.

        Args:
            vocabulary: anything accepted by the constructor.
        """
        self._vocabulary = build_vocabulary(vocabulary, self.defaults)
        self._cache = None  # the recent vocabularies' embeddings stay valid
        self._cache_key = None
        self._tokens = None
        self._device_tokens = None
        self._group_index = None

    def clear_cache(self, tokens: bool = False) -> None:
        """Drop the cached eval embeddings (and, if ``tokens``, the tokens).

        Call this after changing the text encoder's weights in place while the
        module stays in eval mode (e.g. loading a checkpoint between two
        evaluations without a ``train()`` call in between).

        Args:
            tokens (bool): also drop the token tensor.
        """
        self._cache = None
        self._cache_key = None
        self._recent.clear()
        if tokens:
            self._tokens = None
            self._device_tokens = None
            self._group_index = None

    def train(self, mode: bool = True) -> 'ClassEmbedder':
        """Set the mode; entering training mode drops the eval cache."""
        super().train(mode)
        if mode:
            self.clear_cache()
        return self

    def _tokenize(self, tokenize: Callable[[List[str]], Tensor]) -> None:
        """Tokenise every prompt once and build the synonym grouping index."""
        prompts = self._vocabulary.prompts()  # [T][P][S_t]
        flat: List[str] = []
        groups: List[int] = []
        num_templates = self.num_templates
        for t, per_class in enumerate(prompts):
            for p, per_template in enumerate(per_class):
                flat.extend(per_template)
                groups.extend([t * num_templates + p] * len(per_template))
        tokens = tokenize(flat)
        if not isinstance(tokens, Tensor):
            raise TypeError(f'tokenize must return a Tensor, got {type(tokens).__name__}')
        if tokens.dim() != 2 or tokens.shape[0] != len(flat):
            raise ValueError(f'tokenize must return (N, L) tokens with N = {len(flat)} prompts, '
                             f'got shape {tuple(tokens.shape)}')
        self._tokens = tokens
        self._device_tokens = None
        self._group_index = torch.tensor(groups, dtype=torch.long)
        # prompts per (class, template): the synonyms averaged into one embedding
        sizes = [0] * (max(groups) + 1)
        for group in groups:
            sizes[group] += 1
        self._group_sizes = torch.tensor(sizes, dtype=torch.long)

    def _tokens_on(self, device: Optional[torch.device]) -> Tensor:
        """The token tensor on ``device`` (moved once and kept there)."""
        if device is None:
            return self._tokens
        if self._device_tokens is None or self._device_tokens.device != device:
            self._device_tokens = self._tokens.to(device)
        return self._device_tokens

    def _encode(self, encode_text: Callable[[Tensor], Tensor], tokens: Tensor,
                chunk_size: int) -> Tensor:
        """Encode, normalise and average the prompts.

        Args:
            encode_text: maps ``(n, L)`` tokens to ``(n, C)`` embeddings.
            tokens (Tensor): ``(N, L)`` tokens of all prompts.
            chunk_size (int): prompts per ``encode_text`` call.

        Returns:
            Tensor: ``(T, P, C)`` L2-normalised class embeddings.
        """
        chunks = []
        for start in range(0, tokens.shape[0], chunk_size):
            part = tokens[start:start + chunk_size]
            emb = encode_text(part)
            if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != part.shape[0]:
                shape = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
                raise ValueError(f'encode_text must map ({part.shape[0]}, L) tokens to '
                                 f'({part.shape[0]}, C) embeddings, got {shape}')
            chunks.append(F.normalize(emb, dim=-1))
        emb = torch.cat(chunks)  # (N, C)

        num_groups = self.num_classes * self.num_templates
        index = self._group_index.to(emb.device)
        sums = emb.new_zeros(num_groups, emb.shape[1]).index_add(0, index, emb)  # (T*P, C)
        counts = self._group_sizes.to(device=emb.device, dtype=emb.dtype)  # (T*P,)
        mean = sums / counts.unsqueeze(1)
        mean = F.normalize(mean, dim=-1)
        # (T*P, C) -> (T, P, C)
        return mean.view(self.num_classes, self.num_templates, -1)

    def forward(self,
                encode_text: Callable[[Tensor], Tensor],
                tokenize: Callable[[List[str]], Tensor],
                chunk_size: int = 256,
                device: Optional[Union[str, torch.device]] = None,
                frozen: bool = False) -> Tensor:
        """Class embeddings of the current vocabulary.

        Args:
            encode_text: the text encoder, mapping ``(n, L)`` tokens to
                ``(n, C)`` embeddings (e.g. ``clip_model.encode_text``).
            tokenize: maps a list of ``N`` strings to ``(N, L)`` tokens (e.g.
                ``open_clip.get_tokenizer('ViT-B-16')``). Called once per
                vocabulary; the tokenizer is assumed not to change.
            chunk_size (int): prompts per ``encode_text`` call, bounding the
                activation memory in eval mode.
            device: where the tokens go. Defaults to the device of the first
                parameter or buffer of the module behind ``encode_text`` (the
                module itself or a bound method's owner), else the tokens stay
                where ``tokenize`` put them.
            frozen (bool): the text encoder does not train (SED): the embeddings
                are cached in training mode too, as in eval mode.

        Returns:
            Tensor: ``(T, P, C)`` class embeddings, L2-normalised over ``C``.
            In eval mode the cached tensor itself is returned: do not modify it
            in place.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f'chunk_size must be a positive int, got {chunk_size!r}')
        module = _encoder_module(encode_text)
        first = None
        if module is not None:
            first = next(iter(module.parameters()), None)
            if first is None:
                first = next(iter(module.buffers()), None)
        if device is None and first is not None:
            device = first.device
        device = torch.device(device) if device is not None else None

        if self._tokens is None:
            self._tokenize(tokenize)
        tokens = self._tokens_on(device)

        if self.training and not frozen:
            return self._encode(encode_text, tokens, chunk_size)

        key = (self._vocabulary.fingerprint, tokens.device,
               first.dtype if first is not None else None, _encoder_identity(encode_text))
        if self._cache is None or self._cache_key != key:
            self._cache = self._recent.pop(key, None)  # a recent vocabulary: no encoding
            if self._cache is None:
                with torch.no_grad():
                    self._cache = self._encode(encode_text, tokens, chunk_size)
            self._cache_key = key
            self._recent[key] = self._cache
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        return self._cache

    def extra_repr(self) -> str:
        return f'vocabulary={self._vocabulary!r}'
