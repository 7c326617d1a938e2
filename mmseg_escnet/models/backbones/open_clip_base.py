"""What every open_clip CLIP backbone shares: arguments, weights loading and the text tower.

:class:`~.clip.CLIPBackbone` (ViT, CAT-Seg's dense encoding) and
:class:`~.clip_convnext.CLIPConvNeXtBackbone` (ConvNeXt, SED's) differ only in the image path
and the fine-tuning policies; the architecture lookup, ``pretrained`` (a file, a URL or an
open_clip tag), the tokenizer and ``encode_text`` are here, on open_clip's own model
(https://github.com/mlfoundations/open_clip).
"""
import os
from copy import deepcopy
from typing import List, Optional, Sequence, Tuple, Union

import open_clip
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ...checkpoints.clip_official import normalize_clip_state_dict, read_weights_file

__all__ = ['OpenCLIPBackboneBase']

#: Weights file of an open_clip tag published on the Hugging Face Hub only (fetched with
#: huggingface_hub: HF_ENDPOINT, the Hugging Face cache, offline mode; checkpoints/hub_download.py).
_HF_WEIGHTS_URL = 'https://huggingface.co/{repo}/resolve/main/open_clip_pytorch_model.bin'


class OpenCLIPBackboneBase(BaseModule):
    """Base of the CLIP backbones: ``self.clip_model`` is an open_clip ``CLIP``.

    Subclasses build ``clip_model``, set ``model_name`` (None for an explicit arch dict),
    ``finetune`` and ``pretrained``, and implement ``forward``, ``load_clip_state_dict`` and
    ``_apply_finetune_policy``.
    """

    @staticmethod
    def _check_arguments(finetune: str, policies: Sequence[str], pretrained: Optional[str],
                         init_cfg: Optional[dict]) -> None:
        """Refuse an unknown fine-tune policy and a bad or doubly given ``pretrained``."""
        if finetune not in policies:
            raise ValueError(f'finetune must be one of {tuple(policies)}, got {finetune!r}')
        if pretrained is not None and init_cfg is not None:
            raise ValueError('give either pretrained or init_cfg, not both')
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f'pretrained must be a path, URL or tag string, got '
                            f'{type(pretrained)!r}')

    @staticmethod
    def _check_plain_clip(cfg: dict, towers: str) -> None:
        """Refuse an open_clip arch dict that is not a plain CLIP (CustomTextCLIP, CoCa, keys or
        tower configs missing); ``towers`` names the supported image towers in messages."""
        for key in ('embed_dim', 'vision_cfg', 'text_cfg'):
            if key not in cfg:
                raise ValueError(f'CLIP arch config needs {key!r}; got keys {sorted(cfg)}')
        for key in ('custom_text', 'multimodal_cfg'):
            if cfg.get(key):
                raise ValueError(f'unsupported CLIP arch: {key!r} (CustomTextCLIP/CoCa); only '
                                 f'plain CLIP models with {towers} are supported')
        for tower in ('vision_cfg', 'text_cfg'):
            if not isinstance(cfg[tower], dict):
                raise TypeError(f'{tower} must be a dict, got {type(cfg[tower])!r}')

    @staticmethod
    def _architecture(model_name: Optional[str],
                      model_cfg: Optional[dict]) -> Tuple[dict, Optional[str]]:
        """The open_clip arch dict (a copy) and the model name (None for an explicit dict)."""
        if model_cfg is None:
            if not isinstance(model_name, str) or ':' in model_name:
                raise ValueError('model_name must be a built-in open_clip architecture name '
                                 f'(no hub schema), got {model_name!r}')
            cfg = open_clip.get_model_config(model_name)
            if cfg is None:
                raise ValueError(f'unknown open_clip architecture {model_name!r}; see '
                                 'open_clip.list_models()')
            return deepcopy(cfg), model_name
        if isinstance(model_cfg, dict):
            return deepcopy(dict(model_cfg)), None
        raise TypeError(f'model_cfg must be a dict, got {type(model_cfg)!r}')

    def init_weights(self) -> None:
        """Run mmengine's init, then load ``pretrained`` and re-apply the fine-tune policy."""
        super().init_weights()
        if self.pretrained is not None:
            self.load_pretrained(self.pretrained)
        self._apply_finetune_policy()

    def load_pretrained(self, path_or_url: str, *, strict: bool = True) -> None:
        """Load CLIP weights from a file, a URL or an open_clip tag into ``self.clip_model``.

        Args:
            path_or_url (str): Weights in any format :mod:`...checkpoints.clip_official` reads
                (OpenAI, open_clip, safetensors, our converted files), or a pretrained tag of
                ``model_name`` such as ``'openai'`` (resolved to its published URL).
            strict (bool): Refuse missing/unexpected keys (shape mismatches always fail).
                ``strict=False`` allows loading e.g. only the image tower.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the format is unknown or the weights do not fit the architecture;
                the message names the file and the keys.
        """
        path_or_url = self._resolve_pretrained_tag(path_or_url)
        fmt, raw = read_weights_file(path_or_url)
        self.load_clip_state_dict(normalize_clip_state_dict(raw), strict=strict,
                                  source=str(path_or_url))
        print_log(f'{type(self).__name__}: loaded {fmt} CLIP weights from {path_or_url}',
                  logger='current')

    def _resolve_pretrained_tag(self, pretrained: str) -> str:
        """Map an open_clip tag of ``model_name`` to its download URL (or Hugging Face file)."""
        if self.model_name is None or os.path.exists(pretrained) or '/' in pretrained \
                or '.' in pretrained:
            return pretrained
        tags = open_clip.list_pretrained_tags_by_model(self.model_name)
        cfg = open_clip.get_pretrained_cfg(self.model_name, pretrained) if pretrained in tags \
            else {}
        if cfg.get('url'):
            return cfg['url']
        if cfg.get('hf_hub'):
            return _HF_WEIGHTS_URL.format(repo=cfg['hf_hub'].strip('/'))
        raise ValueError(f'{pretrained!r} is neither a file nor a URL nor a pretrained tag of '
                         f'{self.model_name} with a download URL (tags: {tags})')

    @property
    def text_trainable(self) -> bool:
        """Whether any parameter of the text tower trains (else its embeddings can be cached)."""
        return any(p.requires_grad for name, p in self.clip_model.named_parameters()
                   if not name.startswith('visual.'))

    @property
    def context_length(self) -> int:
        """Text token sequence length L."""
        return self.clip_model.context_length

    @staticmethod
    def _check_image_tensor(x: torch.Tensor, multiple: int, unit: str) -> Tuple[int, int]:
        """Refuse anything but a float (B, 3, H, W) batch with H, W multiples of ``multiple``.

        Returns:
            tuple: (H / multiple, W / multiple).
        """
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f'expected a floating-point image tensor, got {type(x)!r} '
                            f'{getattr(x, "dtype", "")}')
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected images of shape (B, 3, H, W), got {tuple(x.shape)}')
        height, width = x.shape[-2:]
        if height % multiple or width % multiple:
            raise ValueError(f'image size {height}x{width} is not a multiple of the {unit} '
                             f'{multiple}')
        return height // multiple, width // multiple

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embedding at the EOT token, as open_clip's ``encode_text`` (not normalised).

        Args:
            tokens (LongTensor): (N, L) token ids from :meth:`tokenize`, L = context length.

        Returns:
            Tensor: (N, embed_dim).
        """
        if not torch.is_tensor(tokens) or tokens.is_floating_point() or tokens.dim() != 2:
            raise TypeError(f'expected an integer token tensor (N, L), got {type(tokens)!r} '
                            f'{getattr(tokens, "shape", "")}')
        if tokens.shape[1] != self.context_length:
            raise ValueError(f'token length {tokens.shape[1]} != context length '
                             f'{self.context_length}')
        return self.clip_model.encode_text(tokens)

    def tokenize(self, texts: Union[str, List[str]]) -> torch.Tensor:
        """Tokenize with the architecture's open_clip tokenizer.

        Args:
            texts (str | list[str]): N strings.

        Returns:
            LongTensor: (N, L) token ids, L = :attr:`context_length`.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError('texts must be a string or a list of strings')
        if getattr(self, '_tokenizer', None) is None:
            if self.model_name is not None:
                self._tokenizer = open_clip.get_tokenizer(self.model_name)
            else:
                self._tokenizer = open_clip.tokenizer.SimpleTokenizer(
                    context_length=self.context_length)
        return self._tokenizer(list(texts))
