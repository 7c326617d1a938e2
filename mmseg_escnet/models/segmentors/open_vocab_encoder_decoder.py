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
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ...text import Vocabulary
from ..structures import ClassFilter, DecodeInputs
from ..text import ClassEmbedder
from .class_sparse import flip_back, postprocess_sparse, set_prediction
from .inference_settings import InferenceSettings, ReadOnlyConfig, precision_context
from .model_sizes import fill_sizes, model_sizes
from .sliding_global_inference import sliding_global_inference

VocabularyLike = Union[str, Sequence[str], dict, Vocabulary]


@MODELS.register_module()
class OpenVocabEncoderDecoder(EncoderDecoder):
    """CLIP backbone + cost-aggregation neck + decode head, with a swappable vocabulary.

    Args:
        backbone (dict): Config of a CLIP backbone (e.g. ``CLIPBackbone``). It must provide
            ``forward(x) -> (dense, *block_outputs)``, ``encode_text`` and ``tokenize``.
        neck (dict): Config of the aggregation neck (e.g. ``CATSegAggregator``).
        decode_head (dict): Config of the decode head (e.g. ``CATSegHead``). The arguments of
            the neck and head that follow from the backbone and the vocabulary (their class's
            ``derived_sizes``: CLIP widths, prompts per class) are filled in here; a configured
            value that differs fails, naming both (:mod:`.model_sizes`).
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
            of logits, as SED does. Unknown keys are refused. It is parsed once into
            :attr:`inference_settings` (:mod:`.inference_settings`); change it with
            :meth:`set_inference_settings` (assigning ``model.test_cfg`` does the same).
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
        # EncoderDecoder.__init__'s steps, with the neck's and head's sizes derived in between
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        # the embedders hold the backbone as their text encoder by reference (no new state-dict
        # keys); their caches follow its weights without object identities (models/text)
        self.train_text = ClassEmbedder(vocabulary, text_encoder=self.backbone)
        # a test vocabulary given without templates/synonyms is prompted like the training one
        # (SED's 80 templates are the neck's input channels)
        trained = self.train_text.vocabulary
        self.test_text = ClassEmbedder(vocabulary if test_vocabulary is None else test_vocabulary,
                                       defaults=dict(templates=trained.templates,
                                                     synonyms=trained.synonym_policy),
                                       text_encoder=self.backbone)
        sizes = model_sizes(self.backbone, trained)
        self.neck = MODELS.build(fill_sizes(neck, sizes, 'neck'))
        self._init_decode_head(fill_sizes(decode_head, sizes, 'decode_head'))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg  # parsed and checked (set_inference_settings)
        if isinstance(clip_resolution, int):
            clip_resolution = (clip_resolution, clip_resolution)
        self.clip_resolution = tuple(clip_resolution)
        self.text_chunk_size = text_chunk_size
        self._check_prompt_channels(self.test_text.vocabulary)
        # New weights make cached text embeddings stale, even without a train() in between.
        self.register_load_state_dict_post_hook(self._clear_text_caches)

    @staticmethod
    def _clear_text_caches(module: 'OpenVocabEncoderDecoder', incompatible_keys) -> None:
        module.train_text.clear_cache()
        module.test_text.clear_cache()

    def vocabulary_options(self) -> dict:
        """How :meth:`set_vocabulary` prompts a test vocabulary given without prompting.

        Returns:
            dict: ``templates`` and ``synonyms`` (the synonym policy) of the training
            vocabulary, given to every test vocabulary set by names, a file, or a dict without
            those keys; a dict's own keys and a :class:`Vocabulary` take precedence.
        """
        return dict(self.test_text.defaults)

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
        the vocabulary or the backbone's weights, device or dtype change, or the model goes back
        to training. The embedders encode with the backbone they were built with.
        """
        return self.class_embedder(chunk_size=self.text_chunk_size)

    # -- inference settings ----------------------------------------------------------------------
    @property
    def inference_settings(self) -> InferenceSettings:
        """The checked ``test_cfg`` (:class:`InferenceSettings`)."""
        return self._inference_settings

    def set_inference_settings(self, settings: Union[InferenceSettings, dict, None]
                               ) -> InferenceSettings:
        """Change how the model predicts in eval mode (the one place that does).

        Args:
            settings (InferenceSettings | dict | None): the new settings, or a ``test_cfg``
                dict (None: ``whole`` without a filter). For a change of some keys, pass
                ``model.inference_settings.replace(mode=..., ...)``.

        Returns:
            InferenceSettings: the settings now in use.

        Raises:
            KeyError, ValueError: for a bad ``test_cfg`` (:meth:`InferenceSettings.from_cfg`), or a
                class filter of the head stage (``'sed_cer'``) that the decode head cannot apply
                (it needs SED's auxiliary heads); the previous settings are kept.
        """
        settings = InferenceSettings.from_cfg(settings)
        head = getattr(self, 'decode_head', None)
        rule = settings.class_filter
        if head is not None and rule is not None and rule.stage == 'head' and \
                rule.type not in getattr(head, 'class_filters', ()):
            raise ValueError(f'class_filter type {rule.type!r} needs a decode head that applies '
                             f'it (SEDHead); {type(head).__name__} does not: use '
                             "'pixel_topk', the same rule on the correlation")
        self._inference_settings = settings
        return settings

    @property
    def test_cfg(self) -> ReadOnlyConfig:
        """The inference settings as a read-only ``test_cfg`` mapping (with attribute access)."""
        return ReadOnlyConfig(self._inference_settings.to_cfg())

    @test_cfg.setter
    def test_cfg(self, cfg: Union[InferenceSettings, dict, None]) -> None:
        """``model.test_cfg = cfg`` is :meth:`set_inference_settings` (mmseg assigns it)."""
        self.set_inference_settings(cfg)

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
        return DecodeInputs.from_cost(cost, clip_features, text.shape[1],
                                      self.stage_class_filter('head'))

    def neck_inputs(self, inputs: Tensor, text: Optional[Tensor] = None
                    ) -> Tuple[Tensor, List[Tensor], Tensor, Optional[ClassFilter]]:
        """What the neck is given for ``inputs`` (the one place that decides it).

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.
            text (Tensor, optional): (T, P, C) class embeddings; default: the active vocabulary's.

        Returns:
            tuple: dense features (B, C, h, w), the skip features [(B, D, h, w)], the class
            embeddings (B, T, P, C) and the test-time class filter the neck applies (None in
            training, without a filter, or for a filter the decode head applies).
        """
        dense, clip_features = self.image_features(inputs)       # (B, C, h, w), [(B, D, h, w)]
        if text is None:
            text = self.text_embeddings()                         # (T, P, C)
        text = text.unsqueeze(0).expand(inputs.shape[0], *text.shape)  # (T, P, C) -> (B, T, P, C)
        return dense, clip_features, text, self.stage_class_filter('neck')

    def stage_class_filter(self, stage: str) -> Optional[ClassFilter]:
        """The test-time class filter if ``stage`` (``'neck'`` or ``'head'``) applies it; None in
        training, without a filter, or for the other stage's filter."""
        class_filter = None if self.training else self.inference_settings.class_filter
        return class_filter if class_filter is not None and class_filter.stage == stage else None

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

    def _network(self, forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``forward`` under ``test_cfg.precision`` (autocast on CUDA), its logits in float32."""
        def run(*args) -> Tensor:
            with precision_context(self.inference_settings.precision, args[0].device):
                return forward(*args).float()
        return run

    def sliding_forward(self) -> Tuple[Callable[..., Tensor], Optional[Callable[[Tensor], Any]]]:
        """The network forward of the sliding + global protocol and what it computes once per
        image (``forward`` and ``canvas_features`` of :func:`.sliding_global_inference`)."""
        return self._forward, None

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
        settings = self.inference_settings
        precision_context(settings.precision, inputs.device)  # refuses what cannot run, first
        if settings.mode == 'whole':  # mmseg's whole_inference + postprocess_result, on K classes
            return postprocess_sparse(
                self._network(self._forward)(inputs), data_samples, self.align_corners,
                input_size=inputs.shape[2:],
                resize_probabilities=settings.resize_probabilities)
        if settings.mode == 'slide':  # 'slide': mmseg's (T, H, W) canvas, then K classes
            with precision_context(settings.precision, inputs.device):
                return super().predict(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=inputs.shape[2:]))
                            for _ in range(inputs.shape[0])]
        height, width = inputs.shape[2:]
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            left, right, top, bottom = meta.get('img_padding_size',
                                                meta.get('padding_size', [0, 0, 0, 0]))
            image = inputs[i:i + 1, :, top:height - bottom, left:width - right]  # unpadded
            forward, canvas_features = self.sliding_forward()
            if canvas_features is not None:  # under the same precision as the views
                canvas_features = self._network(canvas_features)
            probs, classes = sliding_global_inference(
                self._network(forward), image, kernel=settings.kernel, overlap=settings.overlap,
                out_size=settings.out_size, views_per_batch=settings.views_per_batch,
                canvas_features=canvas_features)                            # (1, K, 640, 640)
            probs = F.interpolate(flip_back(probs, meta), size=tuple(meta['ori_shape'][:2]),
                                  mode='bilinear', align_corners=False)[0]  # (K, H0, W0)
            # labels from the averaged probabilities (the protocol), logits as in every mode
            set_prediction(sample, torch.logit(probs), classes)
        return data_samples
