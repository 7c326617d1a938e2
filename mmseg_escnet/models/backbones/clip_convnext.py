"""CLIP ConvNeXt backbone (open_clip + timm) with SED's dense image encoding.

SED (https://github.com/xb534/SED, ``open_clip/src/open_clip/timm_model.py``,
``TimmModel.forward`` with ``dense=True``) encodes images with an open_clip CLIP whose image
tower is a timm ConvNeXt trunk: it returns the stage outputs ``res2``..``res5`` (strides 4 to 32)
and ``clip_vis_dense``, every stride-32 location passed alone, as a 1x1 image, through the
trunk's head (its channel LayerNorm) and open_clip's projection head, so that it lies in the
text-embedding space.

ERR-Seg (https://github.com/lchen1019/ERR-Seg, same file) adds a stride-16 dense branch
(``dense_os16=True``): the stride-16 stage output goes through ``visual.modify_downsample`` (a
stride-1 copy of the last stage's downsample: LayerNorm2d, zero padding, 2x2 convolution), is
resized back to stride 16 and passed through the last stage's blocks and the same per-pixel
heads. Its ``CLIP_FINETUNE: weight`` rule is the ``'weight'`` fine-tune policy.

The CLIP model is open_clip's own ``CLIP``/``TimmModel``
(https://github.com/mlfoundations/open_clip) and the trunk timm's ``ConvNeXt``
(https://github.com/huggingface/pytorch-image-models); this module only adds the dense path and
the fine-tuning policy (custom trunk sizes: :mod:`.convnext_trunk`).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.registry import MODELS
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXt
from torch import nn

from ...checkpoints.clip_official import match_state_dict, normalize_clip_state_dict
from .convnext_trunk import build_convnext_clip, check_trunk_cfg
from .open_clip_base import OpenCLIPBackboneBase

__all__ = ['CLIPConvNeXtBackbone']

FINETUNE_POLICIES = ('visual', 'frozen', 'full', 'weight')
#: Never trainable: no output of the backbone depends on them.
_UNUSED_PARAMETERS = ('logit_scale', 'logit_bias')
_STAGE_STRIDES = (4, 8, 16, 32)
#: Parameter prefix of ERR-Seg's stride-16 branch (open_clip names, below ``clip_model``).
_OS16_PREFIX = 'visual.modify_downsample.'
#: Its parameters and the open_clip parameters ERR-Seg's loader initialises them from (the
#: last stage's downsample: LayerNorm2d ``0``, 2x2 convolution ``1``).
_OS16_INIT_FROM = {
    'visual.modify_downsample.0.weight': 'visual.trunk.stages.3.downsample.0.weight',
    'visual.modify_downsample.0.bias': 'visual.trunk.stages.3.downsample.0.bias',
    'visual.modify_downsample.2.weight': 'visual.trunk.stages.3.downsample.1.weight',
    'visual.modify_downsample.2.bias': 'visual.trunk.stages.3.downsample.1.bias',
}

def _check_arch_cfg(cfg: dict) -> None:
    """Refuse open_clip configs that are not a CLIP with a timm ConvNeXt-style image tower."""
    OpenCLIPBackboneBase._check_plain_clip(cfg, 'timm ConvNeXt image towers')
    vision = cfg['vision_cfg']
    if not vision.get('timm_model_name'):
        raise ValueError('unsupported CLIP arch: vision_cfg.timm_model_name is not set; only timm '
                         'ConvNeXt image towers are supported (use CLIPBackbone for ViTs)')
    pool, proj = vision.get('timm_pool', 'avg'), vision.get('timm_proj', 'linear')
    if pool not in ('', 'avg'):
        raise ValueError(f'unsupported CLIP arch: vision_cfg.timm_pool={pool!r}; the dense path '
                         "needs '' or 'avg' (no attention pooling)")
    if proj not in ('linear', 'mlp'):
        raise ValueError(f"unsupported CLIP arch: vision_cfg.timm_proj={proj!r}; expected 'linear' "
                         "or 'mlp'")


def _weight_policy_trainable(name: str) -> bool:
    """ERR-Seg's ``CLIP_FINETUNE: weight`` rule (``ERRSeg.set_weight_strategy``) for a CLIP
    parameter name.

    Image tower: the layer scales (``gamma``) and the weights, not the biases, of parameters whose
    name contains ``mlp`` or ``conv_dw`` (blocks' ``mlp.fc1/fc2`` and depthwise convolutions, an
    MLP projection head's ``head.mlp.fc1/fc2``). The official rule also names ``down_sampling``,
    which matches no parameter, so the stem, downsamples, ``modify_downsample``, norms, biases and
    a linear ``head.proj`` stay frozen. Text tower: the packed attention input projections
    ``in_proj_weight`` and the MLP input weights ``c_fc.weight`` of the transformer. Everything
    else (embeddings, ``ln_final``, ``text_projection``, ``logit_scale``) is frozen.
    """
    if 'visual' in name:
        if 'gamma' in name:
            return True
        return ('mlp' in name or 'conv_dw' in name) and 'weight' in name
    if 'transformer' in name:
        return 'in_proj_weight' in name or 'c_fc.weight' in name
    return False


@MODELS.register_module()
class CLIPConvNeXtBackbone(OpenCLIPBackboneBase):
    """open_clip CLIP with a timm ConvNeXt image tower and SED's dense image encoding.

    Built with random weights (no download, no file access; timm never fetches weights); official
    weights are loaded by :meth:`init_weights` from ``pretrained``.

    Args:
        model_name (str): Built-in open_clip ConvNeXt architecture, e.g.
            ``'convnext_base_w_320'`` (SED-B) or ``'convnext_large_d_320'`` (SED-L). Ignored for
            the architecture when ``model_cfg`` is given.
        model_cfg (dict, optional): Explicit open_clip arch dict (``embed_dim``, ``vision_cfg``
            with ``timm_model_name``/``timm_pool``/``timm_proj``..., ``text_cfg``), e.g. for tiny
            test models.
        trunk_cfg (dict, optional): Keyword arguments of timm's ``ConvNeXt`` (e.g. ``depths``,
            ``dims``, 4 values each) overriding those of the timm model named by
            ``vision_cfg.timm_model_name``; when timm does not know that name (a custom trunk),
            timm's ``convnext_base`` entry is the base. Drop path stays
            ``vision_cfg.timm_drop_path``.
        vision_overrides (dict, optional): keys of the open_clip ``vision_cfg`` to change in a
            named architecture, e.g. ``dict(timm_drop=0.1)`` (SED's ConvNeXt-L head dropout,
            which open_clip's config sets to 0).
        finetune (str): ``'visual'`` (SED's ``CLIP_FINETUNE: full``: every image-tower parameter
            ``visual.*`` trains, the text tower is frozen), ``'frozen'``, ``'full'`` (both
            towers train) or ``'weight'`` (ERR-Seg's ``CLIP_FINETUNE: weight``: image tower
            layer scales ``gamma`` and the weights, not biases, of the ``mlp``/``conv_dw``
            layers; text transformer ``attn.in_proj_weight`` and ``mlp.c_fc.weight``; all else
            frozen, including ``modify_downsample``). ``logit_scale`` is never trained
            (unused). Defaults to ``'visual'``.
        dense_os16 (bool): Add ERR-Seg's stride-16 dense branch ``visual.modify_downsample``
            (LayerNorm2d(C4), ZeroPad2d(1), Conv2d(C4, C5, 2, stride 1)) and return its output
            ``dense16`` (B, embed_dim, H/16, W/16) and res5 from :meth:`forward`. open_clip
            weights without the branch initialise it from the last stage's downsample, as
            ERR-Seg's loader does. Defaults to False (SED's outputs).
        pretrained (str, optional): Local path or http(s) URL of open_clip weights (state dict,
            ``{'state_dict': ...}`` training checkpoint, safetensors, an mmseg checkpoint with
            ``backbone.clip_model.*`` or an official SED checkpoint with
            ``sem_seg_head.predictor.clip_model.*``), or an open_clip pretrained tag of
            ``model_name`` such as ``'laion_aesthetic_s13b_b82k_augreg'`` (its Hugging Face Hub
            file, fetched with huggingface_hub).
        init_cfg (dict, optional): mmengine init config. Do not combine with ``pretrained``.
    """

    #: Whether the model has ERR-Seg's stride-16 branch (set by the constructor).
    dense_os16: bool = False

    def __init__(self,
                 model_name: str = 'convnext_base_w_320',
                 *,
                 model_cfg: Optional[dict] = None,
                 trunk_cfg: Optional[dict] = None,
                 vision_overrides: Optional[dict] = None,
                 finetune: str = 'visual',
                 dense_os16: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._check_arguments(finetune, FINETUNE_POLICIES, pretrained, init_cfg)
        cfg, model_name = self._architecture(model_name, model_cfg)
        if vision_overrides is not None:
            if not isinstance(vision_overrides, dict):
                raise TypeError(f'vision_overrides must be a dict, got {type(vision_overrides)!r}')
            cfg['vision_cfg'] = {**cfg['vision_cfg'], **vision_overrides}
        _check_arch_cfg(cfg)
        self.model_name = model_name
        self._embed_dim = int(cfg['embed_dim'])
        self.trunk_cfg = check_trunk_cfg(trunk_cfg)
        self.clip_model = build_convnext_clip(cfg, self.trunk_cfg)
        self._check_trunk()
        if not isinstance(dense_os16, bool):
            raise TypeError(f'dense_os16 must be a bool, got {type(dense_os16)!r}')
        self.dense_os16 = dense_os16
        if dense_os16:
            self._add_os16_branch()
        self.finetune = finetune
        self.pretrained = pretrained
        self._tokenizer = None
        self._apply_finetune_policy()

    def _check_trunk(self) -> None:
        """The trunk must be a timm ConvNeXt with 4 stages of strides 4, 8, 16, 32."""
        trunk = getattr(self.clip_model.visual, 'trunk', None)
        if not isinstance(trunk, ConvNeXt):
            raise ValueError(f'unsupported image tower trunk {type(trunk).__name__}: only timm '
                             'ConvNeXt trunks are supported')
        strides = tuple(info['reduction'] for info in trunk.feature_info)
        if strides != _STAGE_STRIDES:
            raise ValueError(f'the ConvNeXt trunk must have 4 stages of strides {_STAGE_STRIDES}, '
                             f'got {strides}')

    def _add_os16_branch(self) -> None:
        """ERR-Seg's ``modify_downsample``: the last stage's downsample with stride 1 and one
        pixel of zero padding, C4 -> C5 channels (the width the last stage's blocks take)."""
        in_dim, out_dim = self.stage_dims[2], self.stage_dims[3]
        self.clip_model.visual.modify_downsample = nn.Sequential(
            LayerNorm2d(in_dim, eps=1e-6),
            nn.ZeroPad2d(1),
            nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=1),
        )

    def _apply_finetune_policy(self) -> None:
        """Set ``requires_grad`` of every CLIP parameter from ``self.finetune``."""
        for name, param in self.clip_model.named_parameters():
            if name in _UNUSED_PARAMETERS or self.finetune == 'frozen':
                trainable = False
            elif self.finetune == 'full':
                trainable = True
            elif self.finetune == 'weight':
                trainable = _weight_policy_trainable(name)
            else:
                trainable = name.startswith('visual.')
            param.requires_grad_(trainable)

    def load_clip_state_dict(self, state_dict: dict, *, strict: bool = True,
                             source: str = '<state dict>') -> None:
        """Load an open_clip-named state dict (``visual.trunk.*``, ``visual.head.*``, text tower).

        With ``dense_os16``, a state dict without ``visual.modify_downsample.*`` (open_clip/LAION
        weights) fills the branch from ``visual.trunk.stages.3.downsample.*``, as ERR-Seg's
        loader does; one that has them (converted ERR-Seg weights) loads them as they are.

        Args:
            state_dict (dict): open_clip parameter names without prefix (fp16 is cast to fp32).
            strict (bool): Refuse missing/unexpected keys. Defaults to True.
            source (str): Name used in error messages.

        Raises:
            ValueError: Naming ``source`` and the offending keys; also when only some of the
                ``modify_downsample`` keys are given, or when they are given (``strict``) to a
                backbone without ``dense_os16``.
        """
        state = normalize_clip_state_dict(state_dict)
        state = self._os16_branch_state(state, strict=strict, source=source)
        state = match_state_dict(state, self.clip_model.state_dict(), grid=None, strict=strict,
                                 source=source)
        result = self.clip_model.load_state_dict(state, strict=strict)
        if result.missing_keys:
            print_log(f'CLIPConvNeXtBackbone: {len(result.missing_keys)} CLIP parameters not in '
                      f'{source} keep their initialisation, e.g. {result.missing_keys[:3]}',
                      logger='current')
        self._apply_finetune_policy()

    def _os16_branch_state(self, state: Dict[str, torch.Tensor], *, strict: bool,
                           source: str) -> Dict[str, torch.Tensor]:
        """Complete (or refuse) the ``visual.modify_downsample.*`` entries of ``state``."""
        given = sorted(k for k in state if k.startswith(_OS16_PREFIX))
        if not self.dense_os16:
            if given and strict:
                raise ValueError(f'{source}: holds the weights of ERR-Seg\'s stride-16 branch '
                                 f'{given}, which this backbone does not have; set '
                                 'dense_os16=True (or load with strict=False to drop them)')
            if given:
                print_log(f'CLIPConvNeXtBackbone: dropped {given} of {source} (dense_os16=False)',
                          logger='current')
                state = {k: v for k, v in state.items() if k not in given}
            return state
        expected = sorted(k for k in self.clip_model.state_dict() if k.startswith(_OS16_PREFIX))
        if given:
            missing = [k for k in expected if k not in state]
            if missing:
                raise ValueError(f'{source}: holds only some of the stride-16 branch weights; '
                                 f'missing keys: {missing}')
            return state
        sources = [_OS16_INIT_FROM[k] for k in expected]
        if not all(k in state for k in sources):
            return state  # nothing to copy from: a strict load reports the missing keys
        state = dict(state)
        for key, src in zip(expected, sources):
            state[key] = state[src].clone()
        print_log(f'CLIPConvNeXtBackbone: {source} has no visual.modify_downsample.*; '
                  'initialised it from visual.trunk.stages.3.downsample.* (as ERR-Seg does)',
                  logger='current')
        return state

    @property
    def embed_dim(self) -> int:
        """Joint image-text embedding dim (640 for SED-B, 768 for SED-L)."""
        return self._embed_dim

    @property
    def stage_dims(self) -> Tuple[int, int, int, int]:
        """Channels of the stage outputs res2..res5 ((128, 256, 512, 1024) for SED-B)."""
        return tuple(info['num_chs'] for info in self.clip_model.visual.trunk.feature_info)

    @property
    def skip_dims(self) -> Tuple[int, int, int]:
        """Channels of the skip features res2, res3, res4 (shallower first) that :meth:`forward`
        returns after ``dense`` (and ``dense16`` with ``dense_os16``)."""
        return self.stage_dims[:3]

    @property
    def stride(self) -> int:
        """Output stride of ``dense`` and res5."""
        return _STAGE_STRIDES[-1]

    def dense_head(self, res5: torch.Tensor) -> torch.Tensor:
        """SED's ``clip_vis_dense``: every res5 location alone through the CLIP heads.

        Each location is a 1x1 image for the trunk head (global pool of one pixel, channel
        LayerNorm ``head.norm``, flatten; ``head.fc`` is Identity) and open_clip's projection head.

        Args:
            res5 (Tensor): (B, C5, h, w) last stage output.

        Returns:
            Tensor: (B, embed_dim, h, w).
        """
        visual = self.clip_model.visual
        x = visual.trunk.norm_pre(res5)  # Identity unless head_norm_first
        batch, channels, height, width = x.shape
        x = x.permute(0, 2, 3, 1).reshape(batch * height * width, channels, 1, 1)
        # (B, C, h, w) -> (B*h*w, C, 1, 1)
        x = visual.trunk.head(x).flatten(1)  # (B*h*w, C, 1, 1) -> (B*h*w, C)
        x = visual.head(x)  # (B*h*w, C) -> (B*h*w, D)
        # (B*h*w, D) -> (B, D, h, w)
        return x.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()

    def os16_branch(self, res4: torch.Tensor) -> Dict[str, torch.Tensor]:
        """ERR-Seg's stride-16 dense branch (``TimmModel.forward``, ``os16_dense``).

        Args:
            res4 (Tensor): (B, C4, h, w) raw stride-16 stage output.

        Returns:
            dict[str, Tensor]: ``downsample`` (B, C5, h+1, w+1), the output of
            ``modify_downsample``; ``blocks`` (B, C5, h, w), after the bilinear resize back to
            (h, w) and the last stage's blocks (not its downsample); ``dense16``
            (B, embed_dim, h, w), every location through the CLIP heads (:meth:`dense_head`).
        """
        if not self.dense_os16:
            raise RuntimeError('os16_branch needs CLIPConvNeXtBackbone(dense_os16=True)')
        visual = self.clip_model.visual
        down = visual.modify_downsample(res4)  # (B, C4, h, w) -> (B, C5, h+1, w+1)
        x = F.interpolate(down, size=res4.shape[-2:], mode='bilinear', align_corners=False)
        x = visual.trunk.stages[3].blocks(x)  # (B, C5, h, w)
        return dict(downsample=down, blocks=x, dense16=self.dense_head(x))

    def forward_stages(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All dense outputs, as SED's ``TimmModel.forward(x, dense=True)`` (without ``stem``).

        Args:
            x (Tensor): (B, 3, H, W) CLIP-normalised images, H and W multiples of 32.

        Returns:
            dict[str, Tensor]: ``res2`` (B, C2, H/4, W/4), ``res3`` (B, C3, H/8, W/8), ``res4``
            (B, C4, H/16, W/16), ``res5`` (B, C5, H/32, W/32), the raw stage outputs, and
            ``dense`` (B, embed_dim, H/32, W/32); with ``dense_os16`` also ``dense16``
            (B, embed_dim, H/16, W/16), ERR-Seg's ``os16_dense`` (see :meth:`os16_branch`).
        """
        self._check_image_tensor(x, self.stride, 'stride')
        trunk = self.clip_model.visual.trunk
        out = {}
        x = trunk.stem(x)  # (B, C2, H/4, W/4)
        for index, stage in enumerate(trunk.stages):
            x = stage(x)
            out[f'res{index + 2}'] = x
        out['dense'] = self.dense_head(x)
        if self.dense_os16:
            out['dense16'] = self.os16_branch(out['res4'])['dense16']
        return out

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Dense CLIP encoding.

        Args:
            x (Tensor): (B, 3, H, W) CLIP-normalised images, H and W multiples of 32.

        Returns:
            tuple[Tensor]: Without ``dense_os16``, SED's ``(dense, res2, res3, res4)``: ``dense``
            (B, embed_dim, H/32, W/32) is ``clip_vis_dense``; ``res2`` (B, C2, H/4, W/4),
            ``res3`` (B, C3, H/8, W/8) and ``res4`` (B, C4, H/16, W/16) are the stage outputs
            (not detached). With ``dense_os16``, ERR-Seg's
            ``(dense, dense16, res2, res3, res4, res5)``: ``dense16`` (B, embed_dim, H/16, W/16)
            is ``os16_dense`` and ``res5`` (B, C5, H/32, W/32) the last stage output (ERR-Seg's
            ``os32``); the stage outputs are not detached (ERR-Seg's head detaches the ones it
            takes: os4, os8 and os16).
        """
        out = self.forward_stages(x)
        if self.dense_os16:
            return (out['dense'], out['dense16'], out['res2'], out['res3'], out['res4'],
                    out['res5'])
        return out['dense'], out['res2'], out['res3'], out['res4']
