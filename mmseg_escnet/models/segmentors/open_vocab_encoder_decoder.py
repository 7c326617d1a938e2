"""The open-vocabulary encoder-decoder shared by CAT-Seg, ESC-Net, SED and LMSeg.

Data flow (B images, T classes, P prompt templates, C CLIP embedding dim, grid h x w)::

    images (B, 3, H, W), CLIP-normalised by the data preprocessor
      -> bilinear resize to the CLIP resolution (384 for ViT-B/16, 336 for ViT-L/14, 768 for
         SED's ConvNeXt)
      -> backbone:  dense (B, C, h, w), skip features (ViT: block outputs [(B, D, h, w), ...];
                    ConvNeXt: stages res2..res4 at 8h, 4h, 2h)
      -> text:      class embeddings (T, P, C) of the active vocabulary, L2-normalised
      -> neck:      AggregatedCost(cost=(B, hidden, T', h, w), class_index=...)
      -> head:      DecodeInputs (the neck's output, skip features, T) -> logits (B, T, H', W')
                    (CAT-Seg/ESC-Net: 4h x 4w, SED: 8h x 8w)

Inference modes (``test_cfg.mode``): mmseg's ``'whole'`` and ``'slide'``, and
``'sliding_global'``, CAT-Seg's evaluation protocol (squash to 640 x 640, 384 px crops with overlap
plus a global view, averaged in sigmoid space; :mod:`.sliding_global_inference`), used for every
number of the papers. The loss and the other modes are mmseg's :class:`EncoderDecoder`.
The number of classes is not fixed: it is the size of the active vocabulary (``vocabulary`` in
training, ``test_vocabulary`` in eval mode), which can be changed at any time with
:meth:`set_vocabulary`.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ...text import Vocabulary
from ..layers.cost_volume import HEAD_CLASS_FILTERS, check_class_filter
from ..structures import DecodeInputs
from ..text import ClassEmbedder
from .class_sparse import flip_back, postprocess_sparse, set_prediction
from .sliding_global_inference import parse_protocol_cfg, sliding_global_inference

VocabularyLike = Union[str, Sequence[str], dict, Vocabulary]
#: The ``test_cfg`` keys of each inference mode.
TEST_CFG_KEYS = {
    'whole': {'mode', 'class_filter', 'resize_probabilities'},
    'slide': {'mode', 'class_filter', 'crop_size', 'stride'},
    'sliding_global': {'mode', 'class_filter', 'kernel', 'overlap', 'out_size',
                       'views_per_batch'},
}


@MODELS.register_module()
class OpenVocabEncoderDecoder(EncoderDecoder):
    """CLIP backbone + cost-aggregation neck + decode head, with a swappable vocabulary.

    Args:
        backbone (dict): Config of a CLIP backbone (e.g. ``CLIPBackbone``). It must provide
            ``forward(x) -> (dense, *block_outputs)``, ``encode_text`` and ``tokenize``.
        neck (dict): Config of the aggregation neck (e.g. ``CATSegAggregator``).
        decode_head (dict): Config of the decode head (e.g. ``CATSegHead``).
        vocabulary (str | list | dict): Training vocabulary: a built-in name (``'coco_stuff171'``), a
            path to a ``.txt``/``.json`` class list, a list of names, or ``Vocabulary`` kwargs
            (``dict(classes=..., synonyms='first', templates='catseg')``).
        test_vocabulary (optional): Vocabulary used in eval mode; defaults to ``vocabulary``.
            Given without ``templates``/``synonyms`` (a name, a file, a list), it takes those of
            ``vocabulary``, as does any test vocabulary :meth:`set_vocabulary` sets later.
        clip_resolution (int | tuple): Size the images are resized to before CLIP, (H, W).
        text_chunk_size (int): Prompts encoded per text-encoder call (bounds memory).
        train_cfg, data_preprocessor, init_cfg: As in :class:`EncoderDecoder`.
        test_cfg (dict): ``mode='whole'`` / ``'slide'`` as in :class:`EncoderDecoder`, or
            ``dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640),
            views_per_batch=0)`` for CAT-Seg's protocol. ``seg_logits`` are logits in every
            mode (in ``sliding_global`` the logit of the averaged probabilities). In every
            mode ``class_filter=dict(type='topk', k=32)`` (LMSeg's rule) or
            ``dict(type='pixel_topk', k=8)`` (SED's rule) or ``dict(type='sed_cer', k=8)``
            (SED's category early rejection, by a head with auxiliary heads) runs everything
            after the initial correlation on the kept classes only; the others never win, and
            ``seg_logits`` hold only the kept classes (:mod:`.class_sparse`).
            ``resize_probabilities=True`` (``whole`` mode) resizes sigmoid probabilities instead
            of logits, as SED does. Unknown keys are refused.
    """

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 decode_head: ConfigType,
                 vocabulary: VocabularyLike,
                 test_vocabulary: Optional[VocabularyLike] = None,
                 clip_resolution: Union[int, Tuple[int, int]] = 384,
                 text_chunk_size: int = 256,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck, train_cfg=train_cfg,
                         test_cfg=test_cfg, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if isinstance(clip_resolution, int):
            clip_resolution = (clip_resolution, clip_resolution)
        self.clip_resolution = tuple(clip_resolution)
        self.test_class_filter()  # a bad filter or test_cfg key fails when the model is built
        self.text_chunk_size = text_chunk_size
        self.train_text = ClassEmbedder(vocabulary)
        # a test vocabulary given without templates/synonyms is prompted like the training one
        # (SED's 80 templates are the neck's input channels)
        trained = self.train_text.vocabulary
        self.test_text = ClassEmbedder(vocabulary if test_vocabulary is None else test_vocabulary,
                                       defaults=dict(templates=trained.templates,
                                                     synonyms=trained.synonym_policy))
        for embedder in (self.train_text, self.test_text):
            self._check_prompt_channels(embedder.vocabulary)
        self._check_clip_dims()
        # New weights make cached text embeddings stale, even without a train() in between.
        self.register_load_state_dict_post_hook(self._clear_text_caches)

    @staticmethod
    def _clear_text_caches(module: 'OpenVocabEncoderDecoder', incompatible_keys) -> None:
        module.train_text.clear_cache()
        module.test_text.clear_cache()

    # -- vocabulary ------------------------------------------------------------------------------
    def _init_decode_head(self, decode_head: ConfigType) -> None:
        """Build the head; the class count comes from the vocabulary, not from the head config."""
        self.decode_head = MODELS.build(decode_head)
        self.align_corners = self.decode_head.align_corners

    @property
    def class_embedder(self) -> ClassEmbedder:
        """The embedder of the active vocabulary (training or test, by ``self.training``)."""
        return self.train_text if self.training else self.test_text

    @property
    def vocabulary(self) -> Vocabulary:
        """The active vocabulary."""
        return self.class_embedder.vocabulary

    @property
    def num_classes(self) -> int:
        """Number of classes of the active vocabulary (what the logits' channel axis holds)."""
        return len(self.vocabulary)

    @property
    def out_channels(self) -> int:
        """Same as :attr:`num_classes` (used by mmseg's slide inference)."""
        return self.num_classes

    def _check_clip_dims(self) -> None:
        """Refuse a neck whose CLIP widths (``clip_dims``) are not the backbone's embedding width.

        Raises:
            ValueError: naming the neck's arguments and the backbone's ``embed_dim``.
        """
        embed_dim = getattr(self.backbone, 'embed_dim', None)
        dims = getattr(getattr(self, 'neck', None), 'clip_dims', {})
        wrong = {name: dim for name, dim in dims.items() if dim != embed_dim}
        if isinstance(embed_dim, int) and wrong:
            parts = ', '.join(f'neck.{name}={dim}' for name, dim in wrong.items())
            raise ValueError(f'{parts} but the backbone embeds images and text in '
                             f'backbone.embed_dim={embed_dim} channels: set them to {embed_dim}')

    def _check_prompt_channels(self, vocabulary: Vocabulary) -> None:
        """Refuse a vocabulary whose prompts per class (P) are not the model's input channels.

        Raises:
            ValueError: naming the vocabulary's P and every part's ``prompt_channel``.
        """
        expected = {name: part.prompt_channel for name, part in
                    (('neck', getattr(self, 'neck', None)), ('decode_head', self.decode_head))
                    if isinstance(getattr(part, 'prompt_channel', None), int)}
        try:
            num_prompts = vocabulary.num_prompts
        except (OSError, ValueError):  # a descriptions file read on first use: checked then
            return
        wrong = {name: p for name, p in expected.items() if p != num_prompts}
        if wrong:
            parts = ', '.join(f'{name}.prompt_channel={p}' for name, p in wrong.items())
            raise ValueError(
                f'vocabulary {vocabulary.source!r} gives {num_prompts} prompts per class '
                f'(templates or description channels), but the model takes {parts}: set '
                f'prompt_channel to {num_prompts} or prompt the vocabulary with '
                f'{next(iter(wrong.values()))} templates')

    def set_vocabulary(self, vocabulary: VocabularyLike, which: str = 'test') -> None:
        """Replace the test (default), training or both vocabularies; caches are invalidated.

        Args:
            vocabulary: Anything :class:`ClassEmbedder` accepts.
            which (str): ``'test'``, ``'train'`` or ``'both'``.

        Raises:
            ValueError: for a bad ``which``, or a vocabulary whose prompts per class are not the
                model's ``prompt_channel`` (the previous vocabulary is kept).
        """
        if which not in ('test', 'train', 'both'):
            raise ValueError(f"which must be 'test', 'train' or 'both', got {which!r}")
        for name, embedder in (('train', self.train_text), ('test', self.test_text)):
            if which not in (name, 'both'):
                continue
            previous = embedder.vocabulary
            embedder.set_vocabulary(vocabulary)
            try:
                self._check_prompt_channels(embedder.vocabulary)
            except ValueError:
                embedder.set_vocabulary(previous)  # a refused vocabulary changes nothing
                raise

    def text_embeddings(self) -> Tensor:
        """Class embeddings of the active vocabulary, (T, P, C), L2-normalised.

        Recomputed with gradients in training when CLIP's text tower trains (CAT-Seg fine-tunes its
        attention); cached in eval mode, and in training when the text tower is frozen (SED), until
        the vocabulary or the weights change or the model goes back to training.
        """
        frozen = not getattr(self.backbone, 'text_trainable', True)
        return self.class_embedder(self.backbone.encode_text, self.backbone.tokenize,
                                   chunk_size=self.text_chunk_size, frozen=frozen)

    def test_class_filter(self) -> Optional[dict]:
        """The checked ``test_cfg.class_filter`` (None: no filter), after checking ``test_cfg``.

        Raises:
            KeyError: for a ``test_cfg`` key the mode does not take.
            ValueError: for an unknown rule, bad ``k``, or a rule the decode head cannot apply
                (``'sed_cer'`` needs SED's auxiliary heads).
        """
        test_cfg = self.test_cfg or {}
        allowed = TEST_CFG_KEYS.get(test_cfg.get('mode', 'whole'))
        if allowed is None:
            raise ValueError(f"test_cfg.mode must be one of {sorted(TEST_CFG_KEYS)}, got "
                             f"{test_cfg.get('mode')!r}")
        unknown = set(test_cfg) - allowed
        if unknown:
            raise KeyError(f"test_cfg for mode {test_cfg.get('mode', 'whole')!r} has unknown keys "
                           f'{sorted(unknown)}; allowed: {sorted(allowed)}')
        class_filter = check_class_filter(test_cfg.get('class_filter'))
        if class_filter is not None and class_filter['type'] in HEAD_CLASS_FILTERS and \
                class_filter['type'] not in getattr(self.decode_head, 'class_filters', ()):
            raise ValueError(f"class_filter type {class_filter['type']!r} needs a decode head "
                             f'that applies it (SEDHead); {type(self.decode_head).__name__} '
                             "does not: use 'pixel_topk', the same rule on the correlation")
        return class_filter

    # -- features --------------------------------------------------------------------------------
    def image_features(self, inputs: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """CLIP's dense features and skip features of the images, at the CLIP resolution.

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.

        Returns:
            tuple: dense (B, C, h, w) features in the text space, and the backbone's skip
            features (ViT: [(B, D, h, w), ...]).
        """
        if inputs.shape[-2:] != self.clip_resolution:
            inputs = F.interpolate(inputs, size=self.clip_resolution, mode='bilinear',
                                   align_corners=False)
        dense, *clip_features = self.backbone(inputs)
        return dense, clip_features

    def extract_feat(self, inputs: Tensor, text: Optional[Tensor] = None) -> DecodeInputs:
        """Run CLIP, the text encoder and the neck.

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.
            text (Tensor, optional): (T, P, C) precomputed class embeddings (an exported model's
                constant); default: those of the active vocabulary.

        Returns:
            DecodeInputs: the neck's :class:`AggregatedCost` (``cost`` (B, hidden, T', h, w),
            ``class_index``) plus the backbone's skip features and T.
        """
        dense, clip_features, text, class_filter = self.neck_inputs(inputs, text)
        cost = self.neck(dense, text, dense, class_filter=class_filter)
        return DecodeInputs.from_cost(cost, clip_features, text.shape[1], class_filter)

    def neck_inputs(self, inputs: Tensor, text: Optional[Tensor] = None
                    ) -> Tuple[Tensor, List[Tensor], Tensor, Optional[dict]]:
        """What the neck is given for ``inputs`` (the one place that decides it).

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.
            text (Tensor, optional): (T, P, C) class embeddings; default: the active vocabulary's.

        Returns:
            tuple: dense features (B, C, h, w), the skip features [(B, D, h, w)], the class
            embeddings (B, T, P, C) and the test-time class filter (None in training).
        """
        dense, clip_features = self.image_features(inputs)       # (B, C, h, w), [(B, D, h, w)]
        if text is None:
            text = self.text_embeddings()                         # (T, P, C)
        text = text.unsqueeze(0).expand(inputs.shape[0], *text.shape)  # (T, P, C) -> (B, T, P, C)
        class_filter = None if self.training else self.test_class_filter()
        return dense, clip_features, text, class_filter

    def loss(self, inputs: Tensor, data_samples: List) -> dict:
        """Training losses; see :meth:`EncoderDecoder.loss`."""
        if not self.training:
            raise RuntimeError('loss() needs the model in training mode (model.train())')
        return super().loss(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None) -> Tensor:
        """Network forward without post-processing: logits (B, T, H', W') (the head's size)."""
        return self.decode_head.forward(self.extract_feat(inputs))

    # -- inference -------------------------------------------------------------------------------
    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: Optional[List] = None) -> List[SegDataSample]:
        """mmseg's post-processing on the kept classes only, with argmax semantics always.

        See :mod:`.class_sparse`: classes that are ``PRUNED_LOGIT`` everywhere are not resized,
        and a one-class vocabulary labels every pixel 0 (mmseg would threshold a sigmoid).

        Args:
            seg_logits (Tensor): (B, T, h, w) logits.
            data_samples (list, optional): as in :meth:`EncoderDecoder.postprocess_result`.

        Returns:
            list[SegDataSample]: with ``seg_logits`` (K, H0, W0) of the classes in
            ``metainfo['seg_logits_classes']`` (K,) and ``pred_sem_seg`` (1, H0, W0).
        """
        return postprocess_sparse(seg_logits, data_samples, self.align_corners)

    def predict(self, inputs: Tensor, data_samples: Optional[List] = None) -> List[SegDataSample]:
        """Predict label maps at the original image size.

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised, possibly padded images.
            data_samples (list, optional): Their :class:`SegDataSample` (``img_shape``,
                ``ori_shape``, padding and flip meta).

        Returns:
            list[SegDataSample]: with ``seg_logits`` (K, H0, W0) of the K classes kept (all T
            without a class filter or pruning) listed in ``metainfo['seg_logits_classes']``, and
            ``pred_sem_seg`` (1, H0, W0) vocabulary indices.
        """
        mode = self.test_cfg.get('mode', 'whole')
        if mode == 'whole':  # mmseg's whole_inference + postprocess_result, on K classes
            return postprocess_sparse(
                self._forward(inputs), data_samples, self.align_corners,
                input_size=inputs.shape[2:],
                resize_probabilities=self.test_cfg.get('resize_probabilities', False))
        if mode != 'sliding_global':  # 'slide': mmseg's (T, H, W) canvas, then K classes
            return super().predict(inputs, data_samples)
        kernel, overlap, out_size, views_per_batch = parse_protocol_cfg(self.test_cfg)
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=inputs.shape[2:]))
                            for _ in range(inputs.shape[0])]
        height, width = inputs.shape[2:]
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            left, right, top, bottom = meta.get('img_padding_size',
                                                meta.get('padding_size', [0, 0, 0, 0]))
            image = inputs[i:i + 1, :, top:height - bottom, left:width - right]  # unpadded
            probs, classes = sliding_global_inference(
                self._forward, image, kernel=kernel, overlap=overlap, out_size=out_size,
                views_per_batch=views_per_batch)                            # (1, K, 640, 640)
            probs = F.interpolate(flip_back(probs, meta), size=tuple(meta['ori_shape'][:2]),
                                  mode='bilinear', align_corners=False)[0]  # (K, H0, W0)
            # labels from the averaged probabilities (the protocol), logits as in every mode
            set_prediction(sample, torch.logit(probs), classes)
        return data_samples
