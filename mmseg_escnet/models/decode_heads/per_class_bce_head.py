"""The base of the per-class decoders (CAT-Seg's, SED's, ERR-Seg's): one logit map per class, BCE
loss.

The official codes (cvlab-kaist/CAT-Seg, xb534/SED, lchen1019/ERR-Seg) decode every class with the
same 1-channel head and train it with a binary cross-entropy against one-hot targets, the ignored
pixels counting as negatives of every class.
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.utils import SampleList

from ..layers.class_chunks import check_class_chunk_size
from ..structures import PRUNED_LOGIT

__all__ = ['PerClassBCEHead']


class PerClassBCEHead(BaseDecodeHead):
    """mmseg's ``BaseDecodeHead`` without its classifier and loss modules.

    The heads read the cost volume in the layout (B, C, T, h, w) of
    :mod:`mmseg_escnet.models.structures`.

    Args:
        hidden_dim (int): channels C of the cost volume the head reads (mmseg's
            ``in_channels``).
        decoder_dims (Sequence[int]): output channels of the decoder stages, one per stage; the
            last feeds the head's own 1-channel conv (mmseg's ``channels``).
        class_chunk_size (int, optional): classes decoded at once (None: all).
        num_classes (int): a placeholder for mmseg (the vocabulary sets T).
        ignore_index (int): label of ignored pixels.
        align_corners (bool): of the bilinear resizes.
        init_cfg (dict, optional): mmengine init config.
        **kwargs: the rest of ``BaseDecodeHead``'s arguments, except ``loss_decode``.
    """

    #: Constructor arguments the segmentor fills from the model: argument -> size name
    #: (``'embed_dim'``, ``'num_prompts'``, ``'skip_width'`` or ``'skip_dims'``; see the necks'
    #: :attr:`~mmseg_escnet.models.necks.cost_opening.CostVolumeNeck.derived_sizes`).
    derived_sizes: Dict[str, str] = {}

    def __init__(self, *, hidden_dim: int, decoder_dims: Sequence[int],
                 class_chunk_size: Optional[int], num_classes: int, ignore_index: int,
                 align_corners: bool, init_cfg: Optional[dict], **kwargs) -> None:
        if 'loss_decode' in kwargs:
            raise TypeError(f'{type(self).__name__} computes its own BCE loss; loss_decode is '
                            'not supported')
        kwargs.setdefault('dropout_ratio', 0.0)
        # loss_decode=[] builds no (unused) mmseg loss module.
        super().__init__(in_channels=hidden_dim, channels=decoder_dims[-1],
                         num_classes=num_classes, ignore_index=ignore_index,
                         align_corners=align_corners, init_cfg=init_cfg, loss_decode=[], **kwargs)
        self.hidden_dim = hidden_dim
        self.num_stages = len(decoder_dims)
        self.class_chunk_size = check_class_chunk_size(class_chunk_size)
        del self.conv_seg  # the decoder ends in its own 1-channel ``head`` conv

    def one_hot_targets(self, batch_data_samples: SampleList, num_classes: int,
                        dtype: torch.dtype) -> torch.Tensor:
        """(B, T, H, W) one-hot targets; ignored pixels are all-zero (negatives, as official)."""
        seg_label = self._stack_batch_gt(batch_data_samples)[:, 0].long()  # (B, H, W)
        valid = seg_label != self.ignore_index
        target = F.one_hot(seg_label.where(valid, 0), num_classes)       # (B, H, W, T)
        return (target * valid[..., None]).permute(0, 3, 1, 2).to(dtype)  # (B, T, H, W)

    def bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean BCE over all B*T*H*W elements of (B, T, h, w) logits resized bilinearly to the
        (B, T, H, W) target."""
        logits = F.interpolate(logits, size=target.shape[-2:], mode='bilinear',
                               align_corners=self.align_corners)
        return F.binary_cross_entropy_with_logits(logits, target)

    @staticmethod
    def scatter_classes(logits: torch.Tensor, class_index: Optional[torch.Tensor],
                        num_classes: int) -> torch.Tensor:
        """(B, T', H, W) logits of the neck's classes -> (B, T, H, W), ``PRUNED_LOGIT`` for the
        classes the neck dropped (``class_index`` (B, T'); None: all T were kept)."""
        if class_index is None:
            return logits
        assert class_index.shape == logits.shape[:2], (class_index.shape, logits.shape)
        out = logits.new_full((logits.shape[0], num_classes, *logits.shape[-2:]), PRUNED_LOGIT)
        return out.scatter(1, class_index[:, :, None, None].expand_as(logits), logits)

    def loss_by_feat(self, seg_logits: torch.Tensor,
                     batch_data_samples: SampleList) -> Dict[str, torch.Tensor]:
        """The loss of CAT-Seg and ERR-Seg: per-class binary cross-entropy on upsampled logits.

        Logits are resized bilinearly to the label size; the target is one-hot over the T
        classes, with ignored pixels as all-zero rows (they count as negatives, as in the
        official code); the BCE is averaged over all B*T*H*W elements.

        Args:
            seg_logits (torch.Tensor): (B, T, h, w) logits.
            batch_data_samples (list[SegDataSample]): samples with ``gt_sem_seg`` (1, H, W).

        Returns:
            dict: ``loss_bce`` scalar.
        """
        seg_logits = seg_logits.float()  # resized and scored in float32 under AMP (ERR-Seg's too)
        target = self.one_hot_targets(batch_data_samples, seg_logits.shape[1], seg_logits.dtype)
        return dict(loss_bce=self.bce(seg_logits, target))
