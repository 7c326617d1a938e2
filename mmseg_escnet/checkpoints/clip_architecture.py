"""What CLIP ViT a state dict holds, and what CLIP a config builds (shapes only).

Used by the CAT-Seg format (:mod:`.catseg_official`) to refuse a checkpoint whose CLIP is not
the one the config builds before any model is built, and to pick the default config of a
released checkpoint (``ViT-B/16`` or ``ViT-L/14@336px``).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping

from torch import Tensor

__all__ = [
    'OFFICIAL_CLIP_PREFIX', 'CLIP_PREFIX', 'CLIPArchitecture', 'KNOWN_ARCHITECTURES',
    'clip_architecture', 'clip_architecture_from_config', 'check_architecture'
]

#: Prefix of the CLIP model in an official CAT-Seg checkpoint.
OFFICIAL_CLIP_PREFIX = 'sem_seg_head.predictor.clip_model.'
#: Prefix of the CLIP model in our segmentor.
CLIP_PREFIX = 'backbone.clip_model.'


@dataclass(frozen=True)
class CLIPArchitecture:
    """Shape-defining hyper-parameters of a CLIP ViT (what a config must match).

    Attributes:
        vision_width (int): Vision transformer width (768 for ViT-B/16, 1024 for ViT-L/14).
        vision_layers (int): Vision transformer blocks.
        patch_size (int): Patch side in pixels.
        image_size (int): Resolution the visual positional embedding was made for.
        embed_dim (int): Joint image-text embedding dim.
        text_width (int): Text transformer width.
        text_layers (int): Text transformer blocks.
    """
    vision_width: int
    vision_layers: int
    patch_size: int
    image_size: int
    embed_dim: int
    text_width: int
    text_layers: int

    @property
    def name(self) -> str:
        """``'ViT-B/16'``, ``'ViT-L/14@336px'`` or a description of another architecture."""
        for name, arch in KNOWN_ARCHITECTURES.items():
            if arch == self:
                return name
        return (f'ViT (width {self.vision_width}, {self.vision_layers} layers, patch '
                f'{self.patch_size}, {self.image_size}px; text width {self.text_width}, '
                f'{self.text_layers} layers; embed dim {self.embed_dim})')


#: The CLIP models of the released CAT-Seg checkpoints.
KNOWN_ARCHITECTURES: Dict[str, CLIPArchitecture] = {
    'ViT-B/16': CLIPArchitecture(768, 12, 16, 224, 512, 512, 12),
    'ViT-L/14@336px': CLIPArchitecture(1024, 24, 14, 336, 768, 768, 12),
}


def _num_blocks(keys: List[str], stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r'(\d+)\.')
    return len({m.group(1) for m in map(pattern.match, keys) if m})


def clip_architecture(state_dict: Mapping[str, Tensor]) -> CLIPArchitecture:
    """Read the CLIP architecture from tensor shapes.

    Args:
        state_dict (Mapping[str, Tensor]): An official CAT-Seg state dict
            (``sem_seg_head.predictor.clip_model.*``), a converted one (``backbone.clip_model.*``)
            or bare CLIP weights. Only shapes are read (``meta`` tensors work).

    Returns:
        CLIPArchitecture: The architecture; ``.name`` is e.g. ``'ViT-B/16'``.

    Raises:
        ValueError: If the CLIP tensors the architecture is read from are missing.
    """
    prefix = next((p for p in (OFFICIAL_CLIP_PREFIX, CLIP_PREFIX, '')
                   if p + 'visual.conv1.weight' in state_dict), None)
    if prefix is None:
        tried = [p + 'visual.conv1.weight' for p in (OFFICIAL_CLIP_PREFIX, CLIP_PREFIX, '')]
        raise ValueError(f'no CLIP ViT weights found: none of {tried} is in the state dict')
    needed = ('visual.conv1.weight', 'visual.positional_embedding', 'visual.proj',
              'ln_final.weight')
    missing = [prefix + k for k in needed if prefix + k not in state_dict]
    if missing:
        raise ValueError(f'cannot read the CLIP architecture: missing {missing}')
    conv1 = state_dict[prefix + 'visual.conv1.weight'].shape  # (width, 3, patch, patch)
    num_pos = state_dict[prefix + 'visual.positional_embedding'].shape[0]  # 1 + grid**2
    grid = round((num_pos - 1)**0.5)
    if grid * grid != num_pos - 1:
        raise ValueError(f'{prefix}visual.positional_embedding has {num_pos - 1} patch entries, '
                         'not a square grid')
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    return CLIPArchitecture(
        vision_width=int(conv1[0]),
        vision_layers=_num_blocks(keys, 'visual.transformer.resblocks.'),
        patch_size=int(conv1[-1]),
        image_size=int(conv1[-1]) * grid,
        embed_dim=int(state_dict[prefix + 'visual.proj'].shape[1]),
        text_width=int(state_dict[prefix + 'ln_final.weight'].shape[0]),
        text_layers=_num_blocks(keys, 'transformer.resblocks.'))


def clip_architecture_from_config(backbone_cfg: Mapping) -> CLIPArchitecture:
    """The CLIP architecture a ``CLIPBackbone`` config builds, without building it.

    Args:
        backbone_cfg (Mapping): ``model.backbone`` of a config: ``model_name`` (open_clip
            architecture, e.g. ``'ViT-B-16'``) or an explicit ``model_cfg``.

    Returns:
        CLIPArchitecture: open_clip's defaults fill the fields the config leaves out.

    Raises:
        ValueError: If ``model_name`` is not an open_clip architecture.
    """
    import open_clip

    model_cfg = backbone_cfg.get('model_cfg')
    if model_cfg is None:
        name = backbone_cfg.get('model_name', 'ViT-B-16')
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(f'backbone.model_name={name!r} is not an open_clip architecture')
    vision = open_clip.model.CLIPVisionCfg(**dict(model_cfg.get('vision_cfg', {})))
    text = open_clip.model.CLIPTextCfg(**dict(model_cfg.get('text_cfg', {})))
    image_size = vision.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return CLIPArchitecture(vision_width=vision.width, vision_layers=vision.layers,
                            patch_size=vision.patch_size, image_size=image_size,
                            embed_dim=model_cfg['embed_dim'], text_width=text.width,
                            text_layers=text.layers)


def check_architecture(checkpoint_arch: CLIPArchitecture, config_arch: CLIPArchitecture,
                       config: str = 'the config') -> None:
    """Refuse a checkpoint whose CLIP is not the one the config builds.

    Args:
        checkpoint_arch (CLIPArchitecture): From :func:`clip_architecture`.
        config_arch (CLIPArchitecture): From :func:`clip_architecture_from_config`.
        config (str): Config name for the message.

    Raises:
        ValueError: ``'checkpoint is ViT-L/14@336px but <config> builds ViT-B/16'``.
    """
    if checkpoint_arch != config_arch:
        raise ValueError(f'checkpoint is {checkpoint_arch.name} but {config} builds '
                         f'{config_arch.name}')
