"""Class text embeddings, computed by the embedder's own text encoder and cached safely.

:class:`ClassEmbedder` turns a :class:`Vocabulary` into the ``(T, P, C)`` class
embeddings that CAT-Seg-style models correlate with dense image features:

1. every prompt ``template.format(synonym)`` is tokenised once per vocabulary
   by the text encoder's ``tokenize``;
2. the prompts are encoded in chunks by its ``encode_text`` and each embedding
   is L2-normalised;
3. per (class, template) the synonym embeddings are averaged and the mean is
   L2-normalised again.

**The text encoder.** The embedder is given its text encoder once, when it is
built (the segmentor gives its CLIP backbone): any object with
``encode_text((n, L) tokens) -> (n, C)`` and ``tokenize(list of N str) -> (N, L)``.
The embedder holds a plain reference, not a submodule, so:

* the encoder's weights stay in the backbone's state dict (the embedder's is
  empty) and ``model.to()``/``.half()``/``.train()`` reach them once, through the
  backbone;
* ``copy.deepcopy(model)`` gives the copy's embedder the copy's backbone
  (deepcopy's memo maps the shared reference); a deep copy of the embedder
  alone copies its encoder with it.

**What is cached.** In training mode a trainable text tower's embeddings are
recomputed on every call, with gradients (CAT-Seg fine-tunes CLIP's text
attention). A frozen text tower (SED: the encoder's ``text_trainable`` is False;
an encoder without that attribute is frozen when none of its parameters
requires gradients) is encoded once under ``torch.no_grad`` and cached, in
training as in eval mode; so is any encoder in eval mode. The embeddings of the
last ``cache_size`` vocabularies are kept, so switching back to one (a web
demo, an inferencer) costs no encoding.

**When the cache is dropped.** No object identity is involved. The cache is
valid for one *state* of the encoder's weights: the storage address, version
counter, device and dtype of each of its parameters (when the text tower is
frozen, the parameters that train, the image tower's, are left out, so that
training steps keep the text cache). Every call compares the current state
with the cached one and drops every cached vocabulary when they differ:

* in-place writes (an optimizer step, ``load_state_dict``'s copy) bump the
  version counter;
* ``to()``/``half()``/``cuda()`` and ``load_state_dict(assign=True)`` allocate
  new storage while the old one is alive, so the address changes (and the
  device or dtype);
* a new vocabulary is a new cache entry (entries are keyed by the vocabulary's
  fingerprint, the tokens' device and the autocast state, so embeddings computed
  under mixed precision are never returned outside it).

Entering training mode (``train()``) and the segmentor's ``load_state_dict``
post-hook also drop the cache explicitly. Writes through ``param.data``, which
bypass version counters, are not seen: call :meth:`ClassEmbedder.clear_cache`
after them. An encoder that is not an ``nn.Module`` has no visible weights: its
embeddings are cached in eval mode until :meth:`~ClassEmbedder.clear_cache`.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

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


class TextEncoder(Protocol):
    """What :class:`ClassEmbedder` needs of its text encoder (e.g. a CLIP backbone)."""

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``(n, L)`` tokens -> ``(n, C)`` embeddings (not necessarily normalised)."""

    def tokenize(self, texts: List[str]) -> Tensor:
        """``N`` strings -> ``(N, L)`` tokens."""


#: One parameter's part of the weights state: storage address, version counter, device, dtype.
_ParamState = Tuple[int, int, torch.device, torch.dtype]


def _autocast_state(device_type: str) -> Tuple:
    """The autocast dtype active for ``device_type`` (empty when autocast is off)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (e.g. 'meta')
        return ()
    if enabled:
        return (torch.get_autocast_dtype(device_type), )
    return ()


@MODELS.register_module()
class ClassEmbedder(nn.Module):
    """Computes and caches the L2-normalised class text embeddings of a vocabulary.

    The module has no parameters and an empty state dict: its text encoder is a plain
    reference (not a submodule) to a module owned and checkpointed elsewhere (the segmentor's
    backbone), and the tokens and cached embeddings are plain attributes, not buffers. See the
    module docstring for when the cache is dropped.

    Args:
        vocabulary: a :class:`Vocabulary`, a dict of its keyword arguments
            (e.g. ``dict(classes='ade847', synonyms='all')``), a built-in
            vocabulary name, a ``.txt``/``.json`` path or a list of class names.
        defaults (dict, optional): ``synonyms``/``templates`` for every vocabulary given
            without them (see :func:`build_vocabulary`).
        cache_size (int): Embeddings of this many recent vocabularies are kept, so
            switching back to one (a web demo, an inferencer) does not encode it again.
        text_encoder (optional): the text encoder, an object with ``encode_text`` and
            ``tokenize`` (see :class:`TextEncoder`); None: give it later with
            :meth:`set_text_encoder` (built from a config).
    """

    def __init__(self, vocabulary: VocabularySpec, defaults: Optional[dict] = None,
                 cache_size: int = 4, text_encoder: Optional[TextEncoder] = None) -> None:
        super().__init__()
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f'cache_size must be a positive int, got {cache_size!r}')
        self.cache_size = cache_size
        # (fingerprint, device, autocast) -> (T, P, C) embeddings, most recently used last;
        # all computed with the weights state self._weights
        self._recent: 'OrderedDict[Tuple, Tensor]' = OrderedDict()
        self._weights: Optional[Tuple[_ParamState, ...]] = None
        self.defaults = dict(defaults or {})
        self._vocabulary = build_vocabulary(vocabulary, self.defaults)
        self._fingerprint: Optional[str] = None  # of the tokenised vocabulary
        self._tokens: Optional[Tensor] = None  # (N, L) as returned by the tokenizer
        self._device_tokens: Optional[Tensor] = None  # (N, L) on the encoder's device
        self._group_index: Optional[Tensor] = None  # (N,) flat (class * P + template) index
        self._group_sizes: Optional[Tensor] = None  # (T * P,) prompts per (class, template)
        # object.__setattr__: a module given here must not become a submodule (its weights
        # would enter this module's state dict, and to()/train() would reach it twice)
        object.__setattr__(self, '_text_encoder', None)
        if text_encoder is not None:
            self.set_text_encoder(text_encoder)

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

    @property
    def text_encoder(self) -> Optional[TextEncoder]:
        """The text encoder (None until one is given)."""
        return self._text_encoder

    def set_text_encoder(self, text_encoder: TextEncoder) -> None:
        """Use ``text_encoder`` from now on; drops the cached tokens and embeddings.

        Args:
            text_encoder: an object with ``encode_text((n, L) tokens) -> (n, C)`` and
                ``tokenize(list of N str) -> (N, L)`` (e.g. a ``CLIPBackbone``). It is held
                by reference, not registered as a submodule.

        Raises:
            TypeError: if ``encode_text`` or ``tokenize`` is missing or not callable.
        """
        missing = [name for name in ('encode_text', 'tokenize')
                   if not callable(getattr(text_encoder, name, None))]
        if missing:
            raise TypeError(f'a text encoder needs callable encode_text and tokenize; '
                            f'{type(text_encoder).__name__} lacks {" and ".join(missing)}')
        object.__setattr__(self, '_text_encoder', text_encoder)
        self.clear_cache(tokens=True)

    def set_vocabulary(self, vocabulary: VocabularySpec) -> None:
        """Swap the vocabulary; drops its tokens (the recent embeddings stay valid).

        Args:
            vocabulary: anything accepted by the constructor.
        """
        self._vocabulary = build_vocabulary(vocabulary, self.defaults)
        self._drop_tokens()

    def clear_cache(self, tokens: bool = False) -> None:
        """Drop the cached embeddings of every vocabulary (and, if ``tokens``, the tokens).

        Weight changes are detected on their own (see the module docstring); call this after
        writing the encoder's weights through ``param.data``, or to free the memory.

        Args:
            tokens (bool): also drop the token tensor.
        """
        self._recent.clear()
        self._weights = None
        if tokens:
            self._drop_tokens()

    def _drop_tokens(self) -> None:
        self._fingerprint = None
        self._tokens = None
        self._device_tokens = None
        self._group_index = None
        self._group_sizes = None

    def train(self, mode: bool = True) -> 'ClassEmbedder':
        """Set the mode; entering training mode drops the cached embeddings."""
        super().train(mode)
        if mode:
            self.clear_cache()
        return self

    def _require_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            raise RuntimeError('this ClassEmbedder has no text encoder: give text_encoder= when '
                               'building it, or call set_text_encoder()')
        return self._text_encoder

    def _encoder_module(self) -> Optional[nn.Module]:
        encoder = self._text_encoder
        return encoder if isinstance(encoder, nn.Module) else None

    def _text_frozen(self) -> bool:
        """Whether the text tower does not train (its embeddings are cached in training too)."""
        trainable = getattr(self._text_encoder, 'text_trainable', None)
        if trainable is not None:
            return not trainable
        module = self._encoder_module()
        return module is not None and not any(p.requires_grad for p in module.parameters())

    def _weights_state(self, frozen: bool) -> Tuple[_ParamState, ...]:
        """Address, version, device and dtype of every parameter that can change the text
        embeddings: all of the encoder's, except the trainable ones of a frozen text tower."""
        module = self._encoder_module()
        if module is None:
            return ()
        return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in module.parameters()
                     if not (frozen and p.requires_grad))

    def _encoder_device(self) -> Optional[torch.device]:
        """Device of the encoder's first parameter (or buffer); None without either."""
        module = self._encoder_module()
        if module is None:
            return None
        first = next(iter(module.parameters()), None)
        if first is None:
            first = next(iter(module.buffers()), None)
        return None if first is None else first.device

    def _tokenize(self) -> None:
        """Tokenise every prompt once and build the synonym grouping index."""
        prompts = self._vocabulary.prompts()  # [T][P][S_t]
        flat: List[str] = []
        groups: List[int] = []
        num_templates = self.num_templates
        for t, per_class in enumerate(prompts):
            for p, per_template in enumerate(per_class):
                flat.extend(per_template)
                groups.extend([t * num_templates + p] * len(per_template))
        tokens = self._require_encoder().tokenize(flat)
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
        self._fingerprint = self._vocabulary.fingerprint

    def _tokens_on(self, device: Optional[torch.device]) -> Tensor:
        """The token tensor on ``device`` (moved once and kept there)."""
        if device is None:
            return self._tokens
        if self._device_tokens is None or self._device_tokens.device != device:
            self._device_tokens = self._tokens.to(device)
        return self._device_tokens

    def _encode(self, tokens: Tensor, chunk_size: int) -> Tensor:
        """Encode, normalise and average the prompts.

        Args:
            tokens (Tensor): ``(N, L)`` tokens of all prompts.
            chunk_size (int): prompts per ``encode_text`` call.

        Returns:
            Tensor: ``(T, P, C)`` L2-normalised class embeddings.
        """
        encode_text = self._require_encoder().encode_text
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

    def forward(self, chunk_size: int = 256) -> Tensor:
        """Class embeddings of the current vocabulary, by the embedder's text encoder.

        The tokens go to the device of the encoder's first parameter (or buffer), else stay
        where ``tokenize`` put them.

        Args:
            chunk_size (int): prompts per ``encode_text`` call, bounding the activation memory.

        Returns:
            Tensor: ``(T, P, C)`` class embeddings, L2-normalised over ``C``. When cached (eval
            mode, or a frozen text tower) the cached tensor itself is returned, without
            gradients: do not modify it in place.

        Raises:
            ValueError: for a bad ``chunk_size``, or an encoder or tokenizer returning
                tensors of the wrong shape.
            RuntimeError: if no text encoder was given.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f'chunk_size must be a positive int, got {chunk_size!r}')
        self._require_encoder()
        if self._tokens is None:
            self._tokenize()
        tokens = self._tokens_on(self._encoder_device())

        frozen = self._text_frozen()
        if self.training and not frozen:
            return self._encode(tokens, chunk_size)

        weights = self._weights_state(frozen)
        if weights != self._weights:  # new weights, device or dtype: nothing cached is valid
            self._recent.clear()
            self._weights = weights
        key = (self._fingerprint, tokens.device, _autocast_state(tokens.device.type))
        cached = self._recent.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self._encode(tokens, chunk_size)
            self._recent[key] = cached
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        return cached

    def extra_repr(self) -> str:
        encoder = 'None' if self._text_encoder is None else type(self._text_encoder).__name__
        return f'vocabulary={self._vocabulary!r}, text_encoder={encoder}'
