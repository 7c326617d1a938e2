"""Any-vocabulary inference with CAT-Seg / ESC-Net: :class:`OpenVocabInferencer`.

Example::

    from mmseg_escnet.apis import OpenVocabInferencer

    inferencer = OpenVocabInferencer('configs/escnet_vitl14.py', weights='escnet_vitl14.pth',
                                     vocabulary=['cat', 'dog, puppy', 'sky'])
    result = inferencer('photo.jpg')
    result['predictions']['sem_seg']      # (H0, W0) int32 class ids at the image's size
    result['predictions']['scores']       # classes present: pixel fraction, mean probability
    inferencer.set_vocabulary('ade150')   # any other vocabulary, no rebuilding

It follows :class:`mmseg.apis.MMSegInferencer` (``inputs`` = path | array | list | folder,
``batch_size``, ``return_datasamples``, ``out_dir``, ``show``, ``return_vis``) with these
differences: the class count is the vocabulary's, images are read robustly (:mod:`.image_io`),
large images are shrunk before inference, and every prediction is a dict with the label map at the
original size, the class names and per-class scores instead of a bare label map. Batches are
processed one at a time (predictions, visualisations and files are produced as they come), so a
large folder does not keep every image's ``(T, H, W)`` probabilities in memory. Label maps are
``int32`` (mmseg's are int64), half the memory of a large image; output files are named by
:mod:`.outputs` (unique within a call).
"""
import copy
import os
import os.path as osp
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from mmseg.apis import MMSegInferencer
from mmseg.structures import SegDataSample
from torch import nn

from ..checkpoints.state_dict_fit import check_state_dict_fits, checkpoint_state_dict
from ..engine.checkpoint_schemes import install as register_checkpoint_loaders
from ..models.segmentors.class_sparse import dense_probabilities
from ..text import Vocabulary
from ..visualization import make_palette, render_segmentation
from .image_io import (MAX_IMAGE_PIXELS, list_images, read_image, resize_label_map,
                       shrink_to_max_side, to_bgr_uint8, write_label_map)
from .image_limits import check_max_pixels
from .model_args import check_device, resolve_model
from .outputs import OutputNamer, class_scores, write_overlay

InputType = Union[str, 'os.PathLike[str]', np.ndarray]
VocabularyLike = Union[str, 'os.PathLike[str]', Sequence[str], dict, Vocabulary]

_ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadSegAnnotations', 'LoadDepthAnnotation')
_DEFAULT_PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]


class OpenVocabInferencer(MMSegInferencer):
    """Open-vocabulary semantic segmentation of images, with any vocabulary.

    Args:
        model (str | Config | dict): A config file (a path ending in ``.py``, ``.yml``, ``.yaml``
            or ``.json``), a ``Config`` or dict, or else a model-zoo name (resolved by
            ``mmseg_escnet.checkpoints.model_zoo.get_model``; its weights default to
            ``'zoo://<name>'``).
        weights (str, optional): Checkpoint path or URL (anything mmengine's ``CheckpointLoader``
            reads). Loaded strictly: keys or shapes that do not fit the model raise a
            ``ValueError``. None (with a config) leaves the model randomly initialised and warns:
            meant for tests only.
        vocabulary (optional): The classes to segment: a list of names (an entry ``'a, b'`` gives
            synonyms), a ``.txt`` file (one class per line) or ``.json`` list, a built-in name
            (``'ade150'``), a dict of :class:`Vocabulary` arguments or a :class:`Vocabulary`. None
            keeps the config's test vocabulary.
        device (str, optional): ``'cpu'``, ``'cuda'``, ``'cuda:1'``...; None: CUDA if available,
            else CPU. A CUDA device without CUDA available is a ``ValueError``.
        max_side (int, optional): Images whose longer side exceeds it are shrunk to it (area
            interpolation) before inference; label maps are returned at the original size. None
            disables shrinking.
        max_pixels (int, optional): Image files with more pixels are refused from their header,
            before they are decoded (see :func:`~.image_io.read_image`); None: no limit. Arrays
            are not checked (they are already decoded).
        synonyms (str | int, optional): Synonym policy for vocabularies given here or to
            :meth:`set_vocabulary` as names, files or dicts without one: ``'all'`` (every synonym,
            their embeddings averaged), ``'first'`` or k. None (default): the model's own, that
            of its training vocabulary, as ``tools/test.py`` prompts every test vocabulary; the
            same image and vocabulary then give the same logits here and in the test loop.
        templates (str | list | dict, optional): Prompt templates for such vocabularies; None
            (default): the model's own (its training vocabulary's, e.g. SED's 80 templates).
        scope (str): Registry scope.
        show_progress (bool): Show a progress bar over the batches.
    """

    preprocess_kwargs: set = set()
    forward_kwargs: set = set()
    visualize_kwargs: set = {'show', 'wait_time', 'img_out_dir', 'opacity', 'return_vis',
                             'with_legend'}
    postprocess_kwargs: set = {'pred_out_dir', 'return_datasample', 'return_probabilities'}

    def __init__(self,
                 model: Union[str, 'os.PathLike[str]', Config, dict],
                 weights: Optional[str] = None,
                 vocabulary: Optional[VocabularyLike] = None,
                 device: Optional[str] = None,
                 max_side: Optional[int] = 1024,
                 max_pixels: Optional[int] = MAX_IMAGE_PIXELS,
                 synonyms: Optional[Union[str, int]] = None,
                 templates: Optional[Union[str, Sequence[str], dict]] = None,
                 scope: str = 'mmseg',
                 show_progress: bool = False) -> None:
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                     or max_side < 1):
            raise ValueError(f'max_side must be a positive int or None, got {max_side!r}')
        cfg, weights = resolve_model(model, weights)
        self._weights = weights
        self.max_side = max_side
        self.max_pixels = check_max_pixels(max_pixels)
        self.synonyms = synonyms
        self.templates = templates
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        check_device(device)
        self._namer: Optional[OutputNamer] = None  # output names of the current call
        register_checkpoint_loaders()  # weights: zoo://, verified URLs, safe local loading
        super().__init__(model=cfg, weights=weights, device=device, scope=scope)
        self.show_progress = show_progress
        if vocabulary is None:
            self._sync_meta()
        else:
            self.set_vocabulary(vocabulary)

    # -- model, pipeline, vocabulary ---------------------------------------------------------------
    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Optional[Config]) -> None:
        """Load the weights strictly (a mismatch is an error, not a warning)."""
        if checkpoint is None:
            warnings.warn('OpenVocabInferencer: no weights given, the model is randomly '
                          'initialised and its predictions are meaningless (tests only)')
            return
        state = checkpoint_state_dict(checkpoint, f'weights {self._weights}')
        config = (cfg.filename if cfg is not None else None) or 'the config'
        check_state_dict_fits(model, state, source=str(self._weights),
                              target=f'the model of {config}')
        model.load_state_dict(state, strict=True)

    def _init_pipeline(self, cfg: Config) -> Compose:
        """The config's test pipeline without label loading, fed with arrays."""
        try:
            pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        except AttributeError:
            pipeline = copy.deepcopy(_DEFAULT_PIPELINE)
        pipeline = [t for t in pipeline
                    if str(t['type']).split('.')[-1] not in _ANNOTATION_LOADERS]
        types = [str(t['type']).split('.')[-1] for t in pipeline]
        if 'LoadImageFromFile' not in types:
            raise ValueError(f'the test pipeline of the config must start from LoadImageFromFile, '
                             f'got {types}')
        pipeline[types.index('LoadImageFromFile')]['type'] = 'LoadImageFromNDArray'
        return Compose(pipeline)

    def _init_visualizer(self, cfg: Config):
        """mmseg's visualiser, only used by ``show`` (files are written here, without backends)."""
        visualizer = dict(cfg.get('visualizer') or dict(type='SegLocalVisualizer'))
        visualizer.pop('vis_backends', None)
        visualizer.pop('save_dir', None)
        cfg.visualizer = visualizer
        return super()._init_visualizer(cfg)

    def _init_collate(self, cfg: Config):
        """The config's ``collate_fn``, else mmengine's ``pseudo_collate`` (the default)."""
        if cfg.get('test_dataloader', {}).get('collate_fn') is None:
            return pseudo_collate
        return super()._init_collate(cfg)

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary the model segments with."""
        return self.model.vocabulary

    @property
    def classes(self) -> List[str]:
        """Display names (first synonyms) of the T classes."""
        return self.vocabulary.names

    @property
    def palette(self) -> np.ndarray:
        """``(T, 3)`` ``uint8`` RGB colours of the classes."""
        return make_palette(len(self.vocabulary))

    def set_vocabulary(self, vocabulary: VocabularyLike) -> Vocabulary:
        """Segment with another vocabulary from now on.

        Args:
            vocabulary: As the constructor's ``vocabulary`` (not None). Names, files and dicts
                are prompted with :meth:`vocabulary_options`; a :class:`Vocabulary` is used as is.

        Returns:
            Vocabulary: The new vocabulary.

        Raises:
            ValueError: Empty vocabulary (an empty list or string, a file without classes), empty
                or duplicate names, unknown built-in name, missing file.
        """
        if isinstance(vocabulary, str) and not vocabulary.strip():
            raise ValueError('the vocabulary is empty: got an empty string instead of class '
                             'names, a vocabulary file or a built-in vocabulary name')
        overrides = self._prompt_overrides()
        if overrides and not isinstance(vocabulary, Vocabulary):  # the model prompts the rest
            vocabulary = ({**overrides, **vocabulary} if isinstance(vocabulary, dict) else
                          dict(classes=vocabulary, **overrides))
        self.model.set_vocabulary(vocabulary, which='test')
        self._sync_meta()
        return self.vocabulary

    def vocabulary_options(self) -> dict:
        """How a vocabulary given by names, a file or a dict without them is prompted.

        Returns:
            dict: ``synonyms`` and ``templates``: this inferencer's overrides where given, else
            the model's own (its training vocabulary's; the segmentor gives the same defaults to
            every test vocabulary, so the test loop prompts alike).
        """
        return {**self.model.vocabulary_options(), **self._prompt_overrides()}

    def _prompt_overrides(self) -> dict:
        """This inferencer's ``synonyms``/``templates``, where given."""
        return {key: value for key, value in
                (('synonyms', self.synonyms), ('templates', self.templates))
                if value is not None}

    def _sync_meta(self) -> None:
        """Class names and palette of the vocabulary into the model and the visualiser."""
        meta = dict(classes=self.classes, palette=self.palette.tolist())
        self.model.dataset_meta = meta
        self.visualizer.set_dataset_meta(**meta)

    # -- the inference loop ---------------------------------------------------------------------
    def __call__(self,
                 inputs: Union[InputType, Sequence[InputType]],
                 return_datasamples: bool = False,
                 batch_size: int = 1,
                 return_vis: bool = False,
                 show: bool = False,
                 wait_time: float = 0,
                 out_dir: str = '',
                 img_out_dir: str = 'vis',
                 pred_out_dir: str = 'pred',
                 opacity: float = 0.5,
                 with_legend: bool = True,
                 return_probabilities: bool = False) -> Any:
        """Segment images.

        Args:
            inputs: An image path, a ``(H, W[, C])`` array (**BGR** like ``cv2.imread``; grayscale,
                RGBA, 16-bit and float in [0, 1] are converted, see :mod:`.image_io`), a folder
                (its images, sorted by name) or a list of paths and arrays.
            return_datasamples (bool): Return the model's :class:`SegDataSample` (one, or a list)
                instead of dicts; their ``pred_sem_seg`` (int32) is at the original size,
                ``seg_logits`` (K, h, w) at the inference size, for the K classes in
                ``metainfo['seg_logits_classes']``; ``out_names`` in their metainfo are the
                output file names.
            batch_size (int): Images per forward pass.
            return_vis (bool): Also return the rendered overlays (RGB arrays).
            show (bool): Show each overlay in a window.
            wait_time (float): Seconds each window stays (0: until a key is pressed).
            out_dir (str): If set, overlays go to ``out_dir/img_out_dir/<name>.png`` and label
                maps to ``out_dir/pred_out_dir/<name>.png`` (uint8, or uint16 when T > 256), also
                with ``return_datasamples``. ``<name>`` is the file's stem, made unique within the
                call with a counter (``a.png``, ``a_1.png``, ``a_2.png``... the same in both
                folders), or ``<counter:08d>_vis`` / ``<counter:08d>_pred`` for arrays; see
                :mod:`.outputs`.
            img_out_dir (str): Subfolder of ``out_dir`` for overlays.
            pred_out_dir (str): Subfolder of ``out_dir`` for label maps.
            opacity (float): Weight of the class colours in the overlay, in [0, 1].
            with_legend (bool): Draw the legend of the classes present beside the overlay.
            return_probabilities (bool): Add ``probabilities`` to each prediction.

        Returns:
            dict: ``predictions``: one dict per image (the dict itself for a single image), with

            - ``sem_seg``: (H0, W0) **int32** class ids at the original size (mmseg returns
              int64; int32 halves the memory of large images);
            - ``classes``: the T display names;
            - ``scores``: one dict per class present, largest first: ``index``, ``name``,
              ``fraction`` (share of the label map's pixels) and ``mean_probability`` (mean
              probability of the class over the pixels it wins, at the inference size);
            - ``max_probabilities``: (T,) float32, every class's maximum probability (0 for the
              classes a class filter removed);
            - ``img_path``: the file, or None for an array;
            - ``probabilities`` (if asked): (T, h, w) float32 at the inference size (h, w), the
              original size unless shrunk by ``max_side`` (0 for the classes a class filter
              removed);

            and ``visualization``: the overlays (an empty list if none were asked for).
            Probabilities are the sigmoid of the logits (in the ``sliding_global`` test mode,
            the averaged probabilities of the protocol).
        """
        img_out_dir = osp.join(out_dir, img_out_dir) if out_dir else ''
        pred_out_dir = osp.join(out_dir, pred_out_dir) if out_dir else ''
        items = self._inputs_to_list(inputs)
        self._namer = OutputNamer()  # output names are unique within this call
        predictions, visualization, samples = [], [], []
        batches = self.preprocess(items, batch_size=batch_size)
        if self.show_progress:
            from rich.progress import track
            batches = track(batches, description='Inference', total=-(-len(items) // batch_size))
        for images, data in batches:
            preds = self.forward(data)
            for pred in preds:
                self._output_names(pred)
            vis = self.visualize(images, preds, return_vis=return_vis, show=show,
                                 wait_time=wait_time, img_out_dir=img_out_dir, opacity=opacity,
                                 with_legend=with_legend)
            visualization.extend(vis or [])
            if return_datasamples:
                for pred in preds:  # label maps are written in both modes, as in mmseg
                    self._write_label_map(pred, pred_out_dir)
                samples.extend(preds)
            else:
                predictions.extend(self.postprocess(preds, vis, False, pred_out_dir=pred_out_dir,
                                                    return_probabilities=return_probabilities))
        if return_datasamples:
            return samples[0] if len(samples) == 1 else samples
        if len(predictions) == 1:
            return dict(predictions=predictions[0],
                        visualization=visualization[0] if visualization else visualization)
        return dict(predictions=predictions, visualization=visualization)

    def _inputs_to_list(self, inputs: Union[InputType, Sequence[InputType]]) -> List[InputType]:
        """Expand a folder, check that files exist, wrap a single input in a list."""
        if isinstance(inputs, (str, os.PathLike)) and osp.isdir(inputs):
            return list_images(inputs)
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError('no input images: got an empty list')
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                if osp.isdir(item):
                    raise ValueError(f'input {i} is a folder ({os.fspath(item)}): pass a folder '
                                     'alone, not inside a list')
                if not osp.isfile(item):
                    raise FileNotFoundError(f'image file {os.fspath(item)} not found')
            elif not isinstance(item, np.ndarray):
                raise TypeError(f'input {i}: expected an image path or a numpy array, got '
                                f'{type(item).__name__}')
        return items

    def _load(self, item: InputType, index: int) -> Tuple[np.ndarray, Optional[str]]:
        """One input as a ``(H0, W0, 3)`` BGR uint8 image, and its path (None for arrays)."""
        if isinstance(item, np.ndarray):
            return to_bgr_uint8(item, name=f'input {index}'), None
        return read_image(item, self.max_pixels), os.fspath(item)

    def preprocess(self, inputs: List[InputType], batch_size: int = 1,
                   **kwargs) -> Iterator[Tuple[List[np.ndarray], dict]]:
        """Read, shrink and run the test pipeline, batch by batch.

        Yields:
            Tuple[list, dict]: The batch's ``(H0, W0, 3)`` BGR images and the collated model input;
            each data sample carries ``img_path`` and ``source_shape`` (H0, W0) in its metainfo.
        """
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        for start in range(0, len(inputs), batch_size):
            images, packed = [], []
            for index in range(start, min(start + batch_size, len(inputs))):
                image, path = self._load(inputs[index], index)
                data = self.pipeline(dict(img=shrink_to_max_side(image, self.max_side)))
                data['data_samples'].set_metainfo(dict(img_path=path,
                                                       source_shape=tuple(image.shape[:2])))
                images.append(image)
                packed.append(data)
            yield images, self.collate_fn(packed)

    @torch.no_grad()
    def forward(self, inputs: dict, **kwargs) -> List[SegDataSample]:
        """Run the model; adds ``probabilities`` (K, h, w) and the (H0, W0) int32 label map.

        ``probabilities`` are those of the K classes in ``metainfo['seg_logits_classes']`` (all T
        unless a class filter removed some; see ``models/segmentors/class_sparse.py``).

        Images of different sizes in one batch are run one by one (mmseg's test preprocessor
        needs equal sizes).
        """
        images, samples = inputs['inputs'], inputs['data_samples']
        if len({tuple(x.shape) for x in images}) == 1:
            preds = self.model.test_step(inputs)
        else:
            preds = [p for i in range(len(images))
                     for p in self.model.test_step(dict(inputs=[images[i]],
                                                        data_samples=[samples[i]]))]
        for pred in preds:
            logits = pred.seg_logits.data                                     # (K, h, w)
            probs = logits.sigmoid().float().cpu()  # the segmentor returns logits in every mode
            classes = pred.metainfo['seg_logits_classes'].cpu()               # (K,)
            small = classes[probs.argmax(dim=0)].to(torch.int32).numpy()      # (h, w)
            label_map = resize_label_map(small, pred.metainfo['source_shape'])  # (H0, W0) int32
            pred.set_field(probs, 'probabilities', field_type='data')
            pred.pred_sem_seg = PixelData(data=torch.from_numpy(label_map)[None])
        return preds

    def visualize(self, inputs: List[np.ndarray], preds: List[SegDataSample],
                  return_vis: bool = False, show: bool = False, wait_time: float = 0,
                  img_out_dir: str = '', opacity: float = 0.5,
                  with_legend: bool = True) -> Optional[List[np.ndarray]]:
        """Render overlays with a legend (see :func:`render_segmentation`).

        Args:
            inputs (list): The batch's ``(H0, W0, 3)`` BGR images.
            preds (list): Their predictions from :meth:`forward`.

        Returns:
            list | None: RGB canvases if ``return_vis``.
        """
        if not (return_vis or show or img_out_dir):
            return None
        canvases = []
        for image, pred in zip(inputs, preds):
            canvas, _ = render_segmentation(image[:, :, ::-1], pred.pred_sem_seg.data[0].numpy(),
                                            self.classes, self.palette, opacity, with_legend)
            name = self._output_names(pred)['vis']
            if img_out_dir:
                write_overlay(osp.join(img_out_dir, name), canvas)
            if show:
                self.visualizer.show(canvas, win_name=name, wait_time=wait_time)
            canvases.append(canvas)
            self.num_visualized_imgs += 1
        return canvases if return_vis else None

    def postprocess(self, preds: List[SegDataSample], visualization: Optional[List[np.ndarray]],
                    return_datasample: bool = False, pred_out_dir: str = '',
                    return_probabilities: bool = False) -> List[Dict[str, Any]]:
        """Per-image result dicts (see :meth:`__call__`); saves label maps to ``pred_out_dir``."""
        names = self.classes
        results = []
        for pred in preds:
            probs = pred.probabilities                                        # (K, h, w)
            classes = pred.metainfo['seg_logits_classes'].cpu()               # (K,)
            label_map = pred.pred_sem_seg.data[0].numpy()                     # (H0, W0) int32
            max_probs = torch.zeros(len(names))
            max_probs[classes] = probs.flatten(1).amax(dim=1)
            result = dict(sem_seg=label_map, classes=list(names),
                          scores=class_scores(probs, label_map, names, classes),
                          max_probabilities=max_probs.numpy(),
                          img_path=pred.metainfo['img_path'])
            if return_probabilities:
                result['probabilities'] = dense_probabilities(probs, classes, len(names)).numpy()
            self._write_label_map(pred, pred_out_dir)
            results.append(result)
        return results

    def _output_names(self, pred: SegDataSample) -> Dict[str, str]:
        """The image's output file names (``vis`` and ``pred``), assigned once per image.

        Stored in the metainfo (``out_names``), so overlays and label maps get the same name.
        """
        if 'out_names' not in pred.metainfo:
            if self._namer is None:  # visualize/postprocess called outside __call__
                self._namer = OutputNamer()
            pred.set_metainfo(dict(out_names=self._namer.assign(pred.metainfo['img_path'],
                                                                self.num_pred_imgs)))
            self.num_pred_imgs += 1
        return pred.metainfo['out_names']

    def _write_label_map(self, pred: SegDataSample, pred_out_dir: str) -> None:
        """Write the (H0, W0) label map to ``pred_out_dir/<name>.png``, if a folder is given."""
        if pred_out_dir:
            write_label_map(osp.join(pred_out_dir, self._output_names(pred)['pred']),
                            pred.pred_sem_seg.data[0].numpy(), len(self.classes))
