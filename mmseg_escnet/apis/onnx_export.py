"""ONNX export of the image path of an open-vocabulary segmentor, for a fixed vocabulary.

The text tower is not exported. The vocabulary's class embeddings are computed once and stored
in the graph as a constant, so the exported model maps images to logits::

    images (B, 3, H, W), CLIP-normalised RGB   (the data preprocessor's normalisation)
      -> the segmentor's ``whole`` inference: CLIP, neck, head   (logits at 4 x the CLIP grid)
      -> bilinear resize to (H, W)
    logits (B, T, H, W); labels = argmax over T

Supported: every model of the zoo (CAT-Seg, ESC-Net, SED, LMSeg; tested on the tiny ones) in
``whole`` mode, with or without a ``'topk'`` class filter (docs/deployment.md). One thing in
ESC-Net does not export with PyTorch's TorchScript-based exporter: segment_anything's
``PromptEncoder._embed_points``, whose boolean-mask assignments become ONNX ``Where`` nodes of
incompatible shapes. :func:`exportable_embed_points` computes the
same values with ``torch.where`` and masks, and :func:`exportable_sam_prompts` swaps it in
while exporting. ESC-Net's k-means runs a fixed number of steps on tensors and exports as is.
"""
import contextlib
import os
import os.path as osp
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.prompt_encoder import PromptEncoder

__all__ = ['FixedVocabularySegmentor', 'exportable_embed_points', 'exportable_sam_prompts',
           'export_onnx', 'compare_onnx', 'ONNX_OPSET', 'EXPORTABLE_FILTERS']

#: The opset of the exported graphs.
ONNX_OPSET = 17
#: Test-time class filters with a fixed number of kept classes (exportable).
EXPORTABLE_FILTERS = (None, 'topk')


def exportable_embed_points(self: PromptEncoder, points: torch.Tensor, labels: torch.Tensor,
                            pad: bool) -> torch.Tensor:
    """SAM's ``PromptEncoder._embed_points`` without boolean-mask assignment (same values).

    Args:
        self (PromptEncoder): the encoder.
        points (torch.Tensor): (N, K, 2) point coordinates in the input frame.
        labels (torch.Tensor): (N, K) labels: 1 foreground, 0 background, -1 not a point.
        pad (bool): append SAM's "not a point" token.

    Returns:
        torch.Tensor: (N, K (+1), S) point embeddings.
    """
    points = points + 0.5  # the centre of the cell, as SAM
    if pad:
        points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
        labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
    embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)  # (N, K, S)
    label = labels.unsqueeze(-1)                                                    # (N, K, 1)
    # SAM: zero, then add its own embedding, for "not a point"; add per label otherwise
    embedding = torch.where(label == -1, self.not_a_point_embed.weight.expand_as(embedding),
                            embedding)
    for value in (0, 1):
        embedding = embedding + (label == value).to(embedding.dtype) * \
            self.point_embeddings[value].weight
    return embedding


@contextlib.contextmanager
def exportable_sam_prompts() -> Iterator[None]:
    """Within the block, SAM's prompt encoders embed points with :func:`exportable_embed_points`."""
    original = PromptEncoder._embed_points
    PromptEncoder._embed_points = exportable_embed_points
    try:
        yield
    finally:
        PromptEncoder._embed_points = original


class FixedVocabularySegmentor(nn.Module):
    """A segmentor's ``whole`` inference with the class embeddings as a constant.

    Args:
        model (nn.Module): an ``OpenVocabEncoderDecoder`` in eval mode, with its test
            vocabulary set (the embeddings are computed here, once).

    Raises:
        ValueError: a model in another test mode, or with a class filter whose number of kept
            classes depends on the data (``'pixel_topk'``, ``'sed_cer'``) or that counts classes
            (``'rrhc'``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.eval()
        settings = model.inference_settings
        if settings.mode != 'whole':
            raise ValueError(f"only test_cfg.mode='whole' exports (one view), got "
                             f'{settings.mode!r}: use --mode whole')
        rule = None if settings.class_filter is None else settings.class_filter.type
        if rule not in EXPORTABLE_FILTERS:
            why = ('counts classes per image' if rule == 'rrhc'
                   else 'keeps a data-dependent number of classes')
            raise ValueError(f'class_filter {rule!r} {why} and does not export; use '
                             "'topk' or none (--cfg-options model.test_cfg.class_filter=None)")
        self.model = model
        with torch.no_grad():
            self.register_buffer('text', model.text_embeddings().detach().clone())  # (T, P, C)
        # the exporter restores the wrapper's mode afterwards, recursively: keep it in eval
        self.eval()

    @property
    def num_classes(self) -> int:
        """T, the logits' channels."""
        return self.text.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the input size.

        Args:
            images (torch.Tensor): (B, 3, H, W) CLIP-normalised images.

        Returns:
            torch.Tensor: (B, T, H, W) logits.
        """
        logits = self.model.decode_head.forward(self.model.extract_feat(images, text=self.text))
        # (B, T, h', w') -> (B, T, H, W)
        return F.interpolate(logits, size=images.shape[-2:], mode='bilinear',
                             align_corners=self.model.align_corners)


def export_onnx(wrapper: FixedVocabularySegmentor, out: str, *,
                shape: Tuple[int, int]) -> str:
    """Export ``wrapper`` for (1, 3, H, W) inputs (input ``images``, output ``logits``).

    Returns:
        str: ``out``.
    """
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    sample = torch.zeros(1, 3, *shape)
    wrapper.eval()
    with exportable_sam_prompts(), torch.no_grad():
        torch.onnx.export(wrapper, (sample, ), out, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=['images'], output_names=['logits'])
    return out


def compare_onnx(wrapper: FixedVocabularySegmentor, onnx_path: str, images: torch.Tensor,
                 threads: Optional[int] = None) -> Dict[str, float]:
    """Run onnxruntime and PyTorch on the same images.

    Args:
        wrapper (FixedVocabularySegmentor): the PyTorch model that was exported.
        onnx_path (str): the exported file.
        images (torch.Tensor): (1, 3, H, W) CLIP-normalised images of the exported size.
        threads (int, optional): onnxruntime's intra-op threads.

    Returns:
        dict: ``max_abs_diff`` of the logits and ``argmax_agreement``, the share of pixels with
        the same label.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    (ours, ) = session.run(['logits'], {'images': images.numpy().astype(np.float32)})
    with torch.no_grad():
        reference = wrapper(images).numpy()
    return dict(max_abs_diff=float(np.abs(ours - reference).max()),
                argmax_agreement=float((ours.argmax(1) == reference.argmax(1)).mean()))
