"""CLIP ViT backbone (open_clip) with CAT-Seg's dense image encoding.

Modified from CAT-Seg (https://github.com/cvlab-kaist/CAT-Seg, ``cat_seg/third_party/
model_vpt.py``, MIT License): separate q/k/v attention weights so that only Wq and Wv are
fine-tuned, and the dense forward whose last block keeps only the value path. The CLIP model
itself is open_clip's (https://github.com/mlfoundations/open_clip).
"""
from typing import Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from ...checkpoints.clip_official import match_state_dict, merge_qkv, resize_pos_embed
from .open_clip_base import OpenCLIPBackboneBase

FINETUNE_POLICIES = ('attention', 'frozen', 'full')
# Trainable under the 'attention' policy (CAT-Seg's CLIP_FINETUNE: "attention").
_ATTENTION_TRAINABLE = ('.attn.q_proj_weight', '.attn.v_proj_weight')
_TOWER_BLOCKS = ('visual.transformer.resblocks.', 'transformer.resblocks.')
# Values open_clip options must keep: others change the plain CLIP ViT the dense path relies on.
_PLAIN_VIT_VISION = dict(timm_model_name=None, attentional_pool=False, pos_embed_type='learnable',
                         pool_type='tok', final_ln_after_pool=False, no_ln_pre=False,
                         ls_init_value=None, patch_dropout=0., output_tokens=False,
                         block_type=None, qk_norm=False, scaled_cosine_attn=False,
                         scale_heads=False, scale_attn_inner=False, scale_attn=False,
                         scale_fc=False)
_PLAIN_VIT_TEXT = dict(hf_model_name=None, embed_cls=False, ls_init_value=None,
                       output_tokens=False, block_type=None, qk_norm=False,
                       scaled_cosine_attn=False, scale_heads=False, scale_attn_inner=False,
                       scale_attn=False, scale_fc=False)


class SplitQKVMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` holding Wq, Wk, Wv as separate Parameters (CAT-Seg naming).

    Uses torch's own ``_qkv_same_embed_dim=False`` path, so the forward is torch's. Parameters:
    ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (C, C), ``in_proj_bias`` (3C,) and
    ``out_proj``. A state dict holding a packed ``in_proj_weight`` (3C, C), q/k/v stacked in
    that order, is split when loaded.

    Args:
        embed_dim (int): Channels C.
        num_heads (int): Attention heads.
        batch_first (bool): Whether inputs are (B, L, C). Defaults to True (open_clip).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, batch_first: bool = True) -> None:
        super().__init__(embed_dim, num_heads, bias=True, batch_first=batch_first)
        q, k, v = self.in_proj_weight.detach().chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
        self._qkv_same_embed_dim = False
        self.register_parameter('in_proj_weight', None)
        self.q_proj_weight = nn.Parameter(q.clone())
        self.k_proj_weight = nn.Parameter(k.clone())
        self.v_proj_weight = nn.Parameter(v.clone())

    @classmethod
    def from_packed(cls, attn: nn.MultiheadAttention) -> 'SplitQKVMultiheadAttention':
        """Copy a packed ``nn.MultiheadAttention`` (values, dtype, device) into a split one."""
        if not attn._qkv_same_embed_dim or attn.in_proj_bias is None or attn.bias_k is not None:
            raise ValueError('only self-attention with packed in_proj_weight and biases '
                             'can be split')
        new = cls(attn.embed_dim, attn.num_heads, batch_first=attn.batch_first)
        new.dropout = attn.dropout
        new.to(device=attn.in_proj_weight.device, dtype=attn.in_proj_weight.dtype)
        with torch.no_grad():
            new.load_state_dict(attn.state_dict())  # packed -> split on load
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        packed = state_dict.pop(prefix + 'in_proj_weight', None)
        if packed is not None:
            for name, part in zip(('q', 'k', 'v'), packed.chunk(3, dim=0)):
                state_dict.setdefault(f'{prefix}{name}_proj_weight', part)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _check_arch_cfg(cfg: dict) -> None:
    """Refuse open_clip architectures that are not a plain CLIP ViT (clear ValueError)."""
    OpenCLIPBackboneBase._check_plain_clip(cfg, 'ViT image towers')
    for tower, table in (('vision_cfg', _PLAIN_VIT_VISION), ('text_cfg', _PLAIN_VIT_TEXT)):
        tcfg = cfg[tower]
        if tower == 'vision_cfg' and isinstance(tcfg.get('layers', 12), (list, tuple)):
            raise ValueError('unsupported CLIP arch: ResNet vision tower (vision_cfg.layers is '
                             'a list); only ViT towers are supported')
        for key, default in table.items():
            value = tcfg.get(key, default)
            if value != default and not (key == 'block_type' and value == 'default'):
                raise ValueError(f'unsupported CLIP arch: {tower}.{key}={value!r} (e.g. '
                                 'attentional pooler, timm/HF towers, custom blocks); only plain '
                                 'CLIP ViT towers are supported')


@MODELS.register_module()
class CLIPBackbone(OpenCLIPBackboneBase):
    """open_clip CLIP ViT with CAT-Seg's dense image encoding and q/v fine-tuning.

    The model is built with random weights (no download, no file access); official weights are
    loaded by :meth:`init_weights` from ``pretrained``.

    Args:
        model_name (str): Built-in open_clip ViT architecture, e.g. ``'ViT-B-16'``,
            ``'ViT-L-14-336'``. Ignored for the architecture when ``model_cfg`` is given.
        model_cfg (dict, optional): Explicit open_clip arch dict (``embed_dim``,
            ``vision_cfg``, ``text_cfg``), e.g. for tiny test models.
        quick_gelu (bool): Use QuickGELU, as OpenAI CLIP does. Defaults to True. An arch config
            that sets ``quick_gelu: true`` itself always uses it.
        out_indices (Sequence[int]): 0-based vision blocks whose output residual stream is
            returned after the dense features; must be before the last block. Defaults to
            (3, 7), CAT-Seg's choice for ViT-B/16.
        finetune (str): ``'attention'`` (only Wq and Wv of every vision and text block train),
            ``'frozen'`` or ``'full'``. Defaults to ``'attention'``.
        pretrained (str, optional): Local path or http(s) URL of CLIP weights (OpenAI
            TorchScript/state dict, open_clip state dict or safetensors, or a checkpoint from
            ``tools/model_converters/clip2mmseg.py``), or an open_clip pretrained tag of
            ``model_name`` such as ``'openai'`` (resolved to its published URL).
        text_with_cp (bool): Activation checkpointing of the text tower's blocks (open_clip's
            ``grad_checkpointing``): less memory in training, same gradients. Defaults to False.
        init_cfg (dict, optional): mmengine init config. Do not combine with ``pretrained``.
    """

    def __init__(self,
                 model_name: str = 'ViT-B-16',
                 *,
                 model_cfg: Optional[dict] = None,
                 quick_gelu: bool = True,
                 out_indices: Sequence[int] = (3, 7),
                 finetune: str = 'attention',
                 pretrained: Optional[str] = None,
                 text_with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._check_arguments(finetune, FINETUNE_POLICIES, pretrained, init_cfg)
        cfg, model_name = self._architecture(model_name, model_cfg)
        _check_arch_cfg(cfg)
        self.model_name = model_name
        self.quick_gelu = bool(quick_gelu or cfg.pop('quick_gelu', False))
        cfg.pop('custom_text', None)
        self.clip_model = open_clip.model.CLIP(**cfg, quick_gelu=self.quick_gelu)
        # open_clip's own per-block activation checkpointing of the text tower: in training the
        # T x P prompts keep (T*P, 77, width) activations per block, the largest CLIP cost with
        # big vocabularies; recomputing them in backward gives the same gradients.
        self.clip_model.transformer.grad_checkpointing = bool(text_with_cp)
        self._split_attention()

        num_layers = len(self.clip_model.visual.transformer.resblocks)
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not isinstance(i, int) or not 0 <= i < num_layers - 1]
        if bad:
            raise ValueError(f'out_indices {bad} out of range: the vision tower has {num_layers} '
                             f'blocks and hooks must be in [0, {num_layers - 2}]')
        self.out_indices = out_indices
        self.finetune = finetune
        self.pretrained = pretrained
        self._tokenizer = None
        self._apply_finetune_policy()

    def _split_attention(self) -> None:
        """Replace every block's packed attention by :class:`SplitQKVMultiheadAttention`."""
        visual = self.clip_model.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError(f'unsupported vision tower {type(visual).__name__}: only plain '
                             'open_clip ViTs are supported')
        if visual.patch_size[0] != visual.patch_size[1]:
            raise ValueError(f'non-square patches {visual.patch_size} are not supported')
        for tower in (visual.transformer, self.clip_model.transformer):
            if not tower.batch_first:
                raise ValueError('expected a batch-first open_clip transformer')
            for block in tower.resblocks:
                if not isinstance(block, ResidualAttentionBlock) or not isinstance(
                        block.attn, nn.MultiheadAttention):
                    raise ValueError(f'unsupported transformer block {type(block).__name__}')
                block.attn = SplitQKVMultiheadAttention.from_packed(block.attn)

    def _unreachable_parameters(self) -> Tuple[str, ...]:
        """CLIP parameters no output of this backbone depends on in training.

        The dense forward replaces the last vision block's attention by its value path, so that
        block's q and k weights get no gradient, and ``logit_scale`` is never used. They stay frozen
        under every policy: otherwise DDP fails on parameters without gradients, and optimizers
        would keep state (and weight decay) for parameters that cannot learn. (Official CAT-Seg
        lists the last Wq as trainable, but its gradient is always zero.)
        """
        last = f'visual.transformer.resblocks.{len(self.clip_model.visual.transformer.resblocks) - 1}'
        return (f'{last}.attn.q_proj_weight', f'{last}.attn.k_proj_weight', 'logit_scale',
                'logit_bias')

    def _apply_finetune_policy(self) -> None:
        """Set ``requires_grad`` of every CLIP parameter from ``self.finetune``."""
        unreachable = self._unreachable_parameters()
        for name, param in self.clip_model.named_parameters():
            if name in unreachable or self.finetune == 'frozen':
                trainable = False
            elif self.finetune == 'full':
                trainable = True
            else:
                trainable = name.startswith(_TOWER_BLOCKS) and name.endswith(_ATTENTION_TRAINABLE)
            param.requires_grad_(trainable)

    def load_clip_state_dict(self, state_dict: dict, *, strict: bool = True,
                             source: str = '<state dict>') -> None:
        """Load an open_clip-named state dict (packed or split q/k/v) into ``self.clip_model``.

        A visual positional embedding made for another grid is resized bicubically to
        :attr:`pretrain_grid`.

        Args:
            state_dict (dict): open_clip/OpenAI parameter names without prefix.
            strict (bool): Refuse missing/unexpected keys. Defaults to True.
            source (str): Name used in error messages.
        """
        state = merge_qkv(state_dict)
        reference = merge_qkv(self.clip_model.state_dict())
        state = match_state_dict(state, reference, grid=self.pretrain_grid, strict=strict,
                                 source=source)
        self.clip_model.load_state_dict(state, strict=strict)  # packed q/k/v split on load
        self._apply_finetune_policy()

    @property
    def embed_dim(self) -> int:
        """Joint image-text embedding dim (512 for ViT-B/16, 768 for ViT-L/14)."""
        return self.clip_model.visual.output_dim

    @property
    def width(self) -> int:
        """Vision transformer width (768 for ViT-B/16, 1024 for ViT-L/14)."""
        return self.clip_model.visual.conv1.out_channels

    @property
    def skip_dims(self) -> Tuple[int, ...]:
        """Channels of the skip features :meth:`forward` returns after ``dense``, shallower first
        (the width of every block in ``out_indices``)."""
        return (self.width, ) * len(self.out_indices)

    @property
    def patch_size(self) -> int:
        """Side of the square patches."""
        return self.clip_model.visual.patch_size[0]

    @property
    def pretrain_grid(self) -> Tuple[int, int]:
        """Patch grid (h, w) the positional embedding was made for."""
        return tuple(self.clip_model.visual.grid_size)

    def _dense_pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        """Positional embedding (1 + h*w, C), patch part bicubic-resized when the grid differs."""
        return resize_pos_embed(self.clip_model.visual.positional_embedding, grid,
                                old_grid=self.pretrain_grid)

    @staticmethod
    def _value_path_block(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
        """CAT-Seg's last block: value path + out_proj, CLS-token residual, then the MLP.

        Args:
            block (ResidualAttentionBlock): The last vision block (split attention).
            x (Tensor): (B, 1 + h*w, C) residual stream entering the block.

        Returns:
            Tensor: (B, 1 + h*w, C).
        """
        attn = block.attn
        channels = attn.embed_dim
        y = block.ln_1(x)
        v = F.linear(y, attn.v_proj_weight, attn.in_proj_bias[2 * channels:])
        z = attn.out_proj(v) + x[:, :1]  # residual is the CLS input, broadcast to all tokens
        return z + block.mlp(block.ln_2(z))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Dense CLIP encoding (CAT-Seg's ``encode_image(x, dense=True)``).

        Args:
            x (Tensor): (B, 3, H, W) CLIP-normalised images, H and W multiples of the patch size.

        Returns:
            tuple[Tensor]: ``(dense, *hooked)``: ``dense`` (B, embed_dim, h, w), every patch token
            after ``ln_post`` and ``proj``; ``hooked[i]`` (B, width, h, w), the residual stream
            leaving block ``out_indices[i]``. h = H / patch, w = W / patch; CLS dropped.
        """
        grid = self._check_image_tensor(x, self.patch_size, 'patch size')
        visual = self.clip_model.visual
        batch = x.shape[0]
        tokens = visual.conv1(x.to(visual.conv1.weight.dtype))  # (B, C, h, w)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
        cls = visual.class_embedding.to(tokens.dtype).expand(batch, 1, -1)  # (B, 1, C)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1 + h*w, C)
        tokens = visual.ln_pre(tokens + self._dense_pos_embed(grid).to(tokens.dtype))

        blocks = visual.transformer.resblocks
        hooked = {}
        for index, block in enumerate(blocks[:-1]):
            tokens = block(tokens)  # (B, 1 + h*w, C)
            hooked[index] = tokens
        tokens = self._value_path_block(blocks[-1], tokens)
        tokens = visual.ln_post(tokens) @ visual.proj  # (B, 1 + h*w, C) -> (B, 1 + h*w, D)

        def to_map(seq: torch.Tensor) -> torch.Tensor:
            # (B, 1 + h*w, C) -> (B, C, h, w), CLS dropped
            return seq[:, 1:].transpose(1, 2).reshape(batch, seq.shape[-1], *grid)

        return (to_map(tokens), *(to_map(hooked[i]) for i in self.out_indices))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Global CLIP image embedding, as open_clip's ``encode_image`` (not normalised).

        Args:
            x (Tensor): (B, 3, H, W) CLIP-normalised images at the pretraining resolution.

        Returns:
            Tensor: (B, embed_dim).
        """
        grid = self._check_image_tensor(x, self.patch_size, 'patch size')
        if grid != self.pretrain_grid:
            raise ValueError(f'encode_image needs the pretraining resolution '
                             f'{tuple(g * self.patch_size for g in self.pretrain_grid)}, got '
                             f'{tuple(x.shape[-2:])}; use forward() for dense features')
        return self.clip_model.encode_image(x)
