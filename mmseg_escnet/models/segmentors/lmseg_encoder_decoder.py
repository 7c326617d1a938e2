"""LMSeg: CAT-Seg's cost aggregation on CLIP features fused with SAM's, prompted by descriptions.

Tang et al., "LMSeg: Unleashing the Power of Large-Scale Models for Open-Vocabulary Semantic
Segmentation", arXiv 2412.00364. No official code is public; every reading taken here is listed
with its reason in docs/lmseg.md.

Data flow (B images, T classes, C CLIP dim, S SAM dim, CLIP grid h x w, SAM grid g x g)::

    images (B, 3, H, W), CLIP-normalised
      -> CLIP backbone at the CLIP resolution: F_c (B, C, h, w), skip features [(B, D, h, w)]
      -> SAM image encoder at its input size:  F_s (B, S, g, g)
      -> fusion: F = w * F_c + (1 - w) * adapter(F_s)          (B, C, h, w)
      -> text: one embedding per class, the mean of its attribute descriptions (T, 1, C)
      -> CAT-Seg's aggregator (cosine cost of F against the text, Swin + linear class
         attention) and upsampling head -> logits (B, T, 4h, 4w)

Everything else (vocabularies, inference modes, class filters, post-processing) is
:class:`OpenVocabEncoderDecoder`'s.
"""
from typing import List, Tuple

from mmseg.registry import MODELS
from mmseg.utils import ConfigType
from torch import Tensor

from .model_sizes import fill_sizes, model_sizes
from .open_vocab_encoder_decoder import OpenVocabEncoderDecoder


@MODELS.register_module()
class LMSegEncoderDecoder(OpenVocabEncoderDecoder):
    """:class:`OpenVocabEncoderDecoder` whose dense CLIP features are fused with SAM's.

    Args:
        sam_encoder (dict): Config of the SAM feature extractor (``SAMImageEncoder``).
        fusion (dict): Config of the fusion (``SAMCLIPFusion``); its ``sam_dim`` must equal the
            encoder's output channels.
        **kwargs: The arguments of :class:`OpenVocabEncoderDecoder` (backbone, neck,
            decode_head, vocabulary, test_vocabulary, clip_resolution, train_cfg, test_cfg,
            data_preprocessor, ...).
    """

    def __init__(self, *, sam_encoder: ConfigType, fusion: ConfigType, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sam_encoder = MODELS.build(sam_encoder)
        sizes = model_sizes(self.backbone, self.train_text.vocabulary)
        self.fusion = MODELS.build(fill_sizes(fusion, sizes, 'fusion'))
        sam_dim = self.fusion.adapter.in_channels
        if sam_dim != self.sam_encoder.out_channels:
            raise ValueError(f'fusion.sam_dim ({sam_dim}) must equal the SAM encoder\'s output '
                             f'channels ({self.sam_encoder.out_channels})')

    def image_features(self, inputs: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Fused dense features and CLIP's skip features.

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.

        Returns:
            tuple: fused (B, C, h, w) features (the cost volume's and the appearance guidance's
            input) and CLIP's skip features for the decoder.
        """
        clip_dense, clip_features = super().image_features(inputs)  # (B, C, h, w), [...]
        sam_feats = self.sam_encoder(inputs)                         # (B, S, g, g)
        return self.fusion(clip_dense, sam_feats), clip_features
