"""ERR-Seg: a ConvNeXt CLIP's dense features at two strides, a compact vocabulary per image.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg (``err_seg_model.py``,
``err_seg_head.py``, ``decoder.py``).

Data flow (B images, T classes, C CLIP dim, K kept classes, H x W the stride-16 grid)::

    images (B, 3, H0, W0), normalised -> squashed to the CLIP resolution (ERR-Seg: 640)
      -> backbone (CLIPConvNeXtBackbone, dense_os16=True): dense32 (B, C, H/2, W/2),
         dense16 (B, C, H, W), stage outputs os4, os8, os16, os32
      -> neck (ERRSegNeck): the K classes of every image from the stride-16 correlation (class
         filter 'rrhc'; in training the ground-truth classes first), cost maps at both strides,
         RRCA layers                                           (B, A, K, H, W), classes (B, K)
      -> head (ERRSegHead): up-decoder guided by os16, os8, os4   logits (B, T, 4H, 4W)

Everything else (vocabularies, inference modes, class filters, post-processing, the BCE loss) is
:class:`OpenVocabEncoderDecoder`'s; the test-time K is ``test_cfg.class_filter`` (the benchmark
configs set ERR-Seg's per benchmark).
"""
from typing import List, Optional, Sequence

import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..structures import DecodeInputs
from .open_vocab_encoder_decoder import OpenVocabEncoderDecoder

__all__ = ['ERRSegEncoderDecoder']


@MODELS.register_module()
class ERRSegEncoderDecoder(OpenVocabEncoderDecoder):
    """:class:`OpenVocabEncoderDecoder` for ERR-Seg's two-stride dense features and per-image
    vocabulary.

    The backbone must return ``(dense32, dense16, os4, os8, os16, os32)``
    (``CLIPConvNeXtBackbone(dense_os16=True)``); the neck is :class:`ERRSegNeck`.

    Args:
        **kwargs: The arguments of :class:`OpenVocabEncoderDecoder`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not getattr(self.backbone, 'dense_os16', False):
            raise ValueError(f'ERRSegEncoderDecoder needs the stride-16 dense features: '
                             f'backbone=dict(type=CLIPConvNeXtBackbone, dense_os16=True), got '
                             f'{type(self.backbone).__name__} without them')

    def extract_feat(self, inputs: Tensor, text: Optional[Tensor] = None,
                     required_classes: Optional[Sequence[Tensor]] = None) -> DecodeInputs:
        """Run CLIP, the text encoder and the neck.

        Args:
            inputs (Tensor): (B, 3, H0, W0) normalised images.
            text (Tensor, optional): (T, P, C) class embeddings; default: the active vocabulary's.
            required_classes (Sequence[Tensor], optional): training: per image, the ascending
                ground-truth classes the neck keeps first.

        Returns:
            DecodeInputs: the aggregated cost (B, A, K, H, W), the kept classes (B, K), the stage
            outputs os4, os8, os16 for the head, and T.
        """
        dense32, features, text, class_filter = self.neck_inputs(inputs, text)
        dense16, os4, os8, os16, os32 = features
        cost = self.neck(dense32, dense16, text, os32, os16, class_filter=class_filter,
                         required_classes=required_classes)
        return DecodeInputs.from_cost(cost, [os4, os8, os16], text.shape[1])

    def ground_truth_classes(self, data_samples: List) -> List[Tensor]:
        """Per image, the ascending classes of its label map (``ignore_index`` excluded).

        Raises:
            ValueError: for a label that is neither a class of the training vocabulary nor
                ``ignore_index``.
        """
        ignore, num_classes = self.decode_head.ignore_index, self.num_classes
        kept = []
        for i, sample in enumerate(data_samples):
            classes = sample.gt_sem_seg.data.unique()
            classes = classes[classes != ignore].long()
            wrong = classes[(classes < 0) | (classes >= num_classes)]
            if len(wrong):
                raise ValueError(f'image {i} of the batch has ground-truth labels '
                                 f'{wrong.tolist()} that are not among the {num_classes} training '
                                 f'classes nor ignore_index={ignore} (check the dataset\'s '
                                 'reduce_zero_label and the ignore value)')
            kept.append(classes)
        return kept

    def loss(self, inputs: Tensor, data_samples: List) -> dict:
        """Training losses: the neck keeps every image's ground-truth classes first (K of them
        at most), then its most frequent ones; the BCE covers all T classes (the others have
        ``PRUNED_LOGIT``, as official).

        Args:
            inputs (Tensor): (B, 3, H, W) normalised images.
            data_samples (list[SegDataSample]): with ``gt_sem_seg``.

        Returns:
            dict: the decode head's losses.
        """
        if not self.training:
            raise RuntimeError('loss() needs the model in training mode (model.train())')
        with torch.no_grad():
            required = self.ground_truth_classes(data_samples)
        feats = self.extract_feat(inputs, required_classes=required)
        return self._decode_head_forward_train(feats, data_samples)
