"""What ESC-Net's pseudo prompts are, block by block, for one batch of images.

ESC-Net (Lee et al., Fig. 2, Fig. 3, Fig. 6) prompts SAM in every ESC block from a class score map.
:func:`trace_escnet_prompts` runs a built ESC-Net segmentor up to its neck and returns, per block,
the score map its PPG read and the prompts it made; the pictures
(``tools/analysis/visualize_escnet.py``) and the per-block prompt IoUs
(``tools/analysis/escnet_prompt_iou.py``) are drawn from it, so every entry point sees the same
prompts as the model.

Everything lives on the CLIP grid (h, w) of the network input: the (possibly padded) image the
data preprocessor made, resized to the model's ``clip_resolution``. A grid cell (row i, col j)
is the point (x, y) = (j, i) and covers the input pixels ``[i * Hp / h, (i + 1) * Hp / h)``
(likewise for columns), for an input of ``Hp x Wp`` pixels.
"""
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..models.necks.esc_neck import BlockPrompts, ESCNeck

__all__ = [
    'ClassPrompts', 'PromptTrace', 'check_escnet_config', 'check_escnet_model',
    'trace_escnet_prompts'
]


class ClassPrompts(NamedTuple):
    """One ESC block's PPG input and prompts for one (image, class) pair, as NumPy arrays.

    Attributes:
        score (np.ndarray): (h, w) float32, the class score map the PPG read.
        probability (np.ndarray): (h, w) float32 in [0, 1], Fig. 3 (b).
        regions (np.ndarray): (h, w) int64 region id 0..K-1 of the foreground cells, -1 on the
            background; the foreground (Fig. 3 (c)) is ``regions >= 0``, the regions Fig. 3 (d).
        points (np.ndarray, optional): (K, 2) float32 (x, y) in grid cells (cell (i, j) is
            (j, i)); None when the model uses no points.
        boxes (np.ndarray, optional): (K, 4) float32 (x0, y0, x1, y1) in grid units; the region
            spans the cells from x0 + 0.5 to x1 + 0.5 (SAM's half-cell shift puts them on its
            outer edges); None when the model uses no boxes.
        mask (np.ndarray, optional): (s*h, s*w) float32 mask-prompt logits (s = 4 for SAM);
            None when the model uses no mask prompt.
    """
    score: np.ndarray
    probability: np.ndarray
    regions: np.ndarray
    points: Optional[np.ndarray]
    boxes: Optional[np.ndarray]
    mask: Optional[np.ndarray]

    @property
    def foreground(self) -> np.ndarray:
        """(h, w) bool, the PPG's binary foreground (Fig. 3 (c))."""
        return self.regions >= 0


class PromptTrace(NamedTuple):
    """The prompts of every ESC block for B images.

    Attributes:
        blocks (list[BlockPrompts]): one per ESC block: ``score`` (B, T', h, w) and ``prompts``
            (maps indexed ``b*T' + t``).
        class_index (Tensor, optional): (B, T') the vocabulary index of slice ``t``; None when
            all T classes were kept.
        num_classes (int): T, the vocabulary size.
    """
    blocks: List[BlockPrompts]
    class_index: Optional[Tensor]
    num_classes: int

    @property
    def grid(self) -> tuple:
        """(h, w), the CLIP grid the prompts live on."""
        return tuple(self.blocks[0].score.shape[-2:])

    def kept_classes(self, batch: int) -> List[int]:
        """Vocabulary indices of the classes the model kept for image ``batch`` (ascending)."""
        if self.class_index is None:
            return list(range(self.num_classes))
        return [int(c) for c in self.class_index[batch]]

    def class_slot(self, batch: int, class_id: int) -> Optional[int]:
        """Slice ``t`` of vocabulary class ``class_id`` for image ``batch`` (None if pruned)."""
        if self.class_index is None:
            return class_id if 0 <= class_id < self.num_classes else None
        hits = (self.class_index[batch] == class_id).nonzero()
        return int(hits[0]) if len(hits) else None

    def class_prompts(self, block: int, batch: int, class_id: int) -> Optional[ClassPrompts]:
        """What block ``block`` read and made for class ``class_id`` of image ``batch``.

        Args:
            block (int): ESC block index, 0 for the first.
            batch (int): image index in the batch.
            class_id (int): vocabulary index of the class.

        Returns:
            ClassPrompts | None: CPU NumPy arrays; None if the model pruned or filtered the
            class for this image (it then has no prompts).
        """
        slot = self.class_slot(batch, class_id)
        if slot is None:
            return None
        record = self.blocks[block]
        prompts = record.prompts
        index = batch * record.score.shape[1] + slot  # maps are indexed b*T' + t

        def pick(tensor: Optional[Tensor]) -> Optional[np.ndarray]:
            return None if tensor is None else tensor[index].detach().float().cpu().numpy()

        return ClassPrompts(score=record.score[batch, slot].detach().float().cpu().numpy(),
                            probability=pick(prompts.probability),
                            regions=prompts.regions[index].cpu().numpy(),
                            points=pick(prompts.points), boxes=pick(prompts.boxes),
                            mask=None if prompts.masks is None else pick(prompts.masks)[0])


def _no_prompts(model: str, neck: str) -> TypeError:
    return TypeError(f'{model} has no ESC-Net neck with SAM blocks (neck: {neck}); pseudo '
                     'prompts exist only in ESC-Net')


def check_escnet_config(model_cfg: dict) -> None:
    """Refuse, before anything is built, a model config whose neck makes no pseudo prompts.

    The neck's registered class is looked up in mmseg's ``MODELS`` registry; the built model is
    checked again by :func:`check_escnet_model`.

    Args:
        model_cfg (dict): the config's ``model``.

    Raises:
        TypeError: as :func:`check_escnet_model`.
    """
    from mmseg.registry import MODELS  # the registry the configs build from
    neck = dict(model_cfg.get('neck') or {})
    kind = neck.get('type')
    cls = kind if isinstance(kind, type) else MODELS.get(kind) if kind is not None else None
    name = getattr(cls, '__name__', str(kind))
    model = str(model_cfg.get('type', 'the model'))
    if cls is None or not issubclass(cls, ESCNeck):
        raise _no_prompts(model, name)
    if not neck.get('use_sam', True):
        raise _no_prompts(model, 'ESCNeck(use_sam=False)')


def check_escnet_model(model: nn.Module) -> ESCNeck:
    """The ESC neck of ``model``, or a ``TypeError`` saying that the model has no pseudo prompts.

    Args:
        model (nn.Module): a built segmentor.

    Returns:
        ESCNeck: ``model.neck``.

    Raises:
        TypeError: if the model has no ESC neck with SAM blocks (CAT-Seg, SED, LMSeg, or ESC-Net
            without SAM, Table 2 (a)).
    """
    neck = getattr(model, 'neck', None)
    if not isinstance(neck, ESCNeck) or not neck.use_sam:
        what = type(neck).__name__ if not isinstance(neck, ESCNeck) else 'ESCNeck(use_sam=False)'
        raise _no_prompts(type(model).__name__, what)
    return neck


@torch.no_grad()
def trace_escnet_prompts(model: nn.Module, inputs: Tensor) -> PromptTrace:
    """Run CLIP and the ESC neck of ``model`` on ``inputs`` and record every block's prompts.

    The model runs as it is (eval mode for the test-time class filter and pooling), on the active
    (test) vocabulary, with the same features, class pruning and filter as
    :meth:`~mmseg_escnet.models.segmentors.OpenVocabEncoderDecoder.extract_feat`.

    Args:
        model (nn.Module): an ``OpenVocabEncoderDecoder`` whose neck is an :class:`ESCNeck` with
            SAM blocks.
        inputs (Tensor): (B, 3, H, W) preprocessed (CLIP-normalised) images, as the model's
            data preprocessor returns them; resized to the CLIP resolution here.

    Returns:
        PromptTrace: the per-block score maps and prompts.

    Raises:
        TypeError: if the model has no ESC neck with SAM blocks.
    """
    neck = check_escnet_model(model)
    dense, _, text, class_filter = model.neck_inputs(inputs)  # as extract_feat gives the neck
    cost, blocks = neck.forward_with_prompts(dense, text, dense, class_filter=class_filter)
    return PromptTrace(blocks=blocks, class_index=cost.class_index, num_classes=text.shape[1])
