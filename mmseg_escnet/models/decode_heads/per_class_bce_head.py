"""The base of the per-class decoders (CAT-Seg's, SED's): one logit map per class, BCE loss.

Both official codes (cvlab-kaist/CAT-Seg, xb534/SED) decode every class with the same 1-channel
head and train it with a binary cross-entropy against one-hot targets, the ignored pixels counting
as negatives of every class.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.utils import SampleList

from ..structures import PRUNED_LOGIT

__all__ = ['PerClassBCEHead']


class PerClassBCEHead(BaseDecodeHead):
    """mmseg's ``BaseDecodeHead`` without its classifier and loss modules.

    Args:
        in_channels (int): channels of the cost volume the head reads.
        channels (int): channels before the head's own 1-channel conv.
        num_classes (int): a placeholder for mmseg (the vocabulary sets T).
        ignore_index (int): label of ignored pixels.
        align_corners (bool): of the bilinear resizes.
        init_cfg (dict, optional): mmengine init config.
        **kwargs: the rest of ``BaseDecodeHead``'s arguments, except ``loss_decode``.
    """

    def __init__(self, *, in_channels: int, channels: int, num_classes: int,
                 ignore_index: int, align_corners: bool, init_cfg: Optional[dict],
                 **kwargs) -> None:
        if 'loss_decode' in kwargs:
            raise TypeError(f'{type(self).__name__} computes its own BCE loss; loss_decode is '
                            'not supported')
        kwargs.setdefault('dropout_ratio', 0.0)
        # loss_decode=[] builds no (unused) mmseg loss module.
        super().__init__(in_channels=in_channels, channels=channels, num_classes=num_classes,
                         ignore_index=ignore_index, align_corners=align_corners,
                         init_cfg=init_cfg, loss_decode=[], **kwargs)
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
