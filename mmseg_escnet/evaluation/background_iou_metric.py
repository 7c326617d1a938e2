"""IoU with every prediction past the benchmark's classes counted as background (PAS-20b).

CAT-Seg's ``VOCbEvaluator`` evaluates PASCAL-VOC with background by giving the model a larger
text vocabulary (``voc20b``: the 20 VOC classes, then 39 PASCAL-Context classes that stand for
"background" things) and mapping every predicted class ``>= 20`` to class 20, background, before
scoring 21 classes (docs/benchmarks.md).
"""
from typing import Sequence

from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class IoUMetricWithBackground(IoUMetric):
    """:class:`mmseg.evaluation.IoUMetric` that maps predictions ``>= background_index`` to it.

    The dataset has ``background_index + 1`` classes (the last one is background); the model's
    vocabulary may have more, all of which are read as background.

    Args:
        background_index (int): Index of the background class in the dataset (20 for PAS-20b).
        **kwargs: As :class:`IoUMetric` (``ignore_index``, ``iou_metrics``, ...).
    """

    def __init__(self, background_index: int, **kwargs) -> None:
        if background_index < 1:
            raise ValueError(f'background_index must be >= 1, got {background_index}')
        super().__init__(**kwargs)
        self.background_index = background_index

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Map the predictions (``(1, H, W)`` class ids) and score them as :class:`IoUMetric`."""
        num_classes = len(self.dataset_meta['classes'])
        if num_classes != self.background_index + 1:
            raise ValueError(f'background_index={self.background_index} needs a dataset with '
                             f'{self.background_index + 1} classes (the last one background), '
                             f'got {num_classes}')
        mapped = []
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].clamp(max=self.background_index)
            mapped.append({**sample, 'pred_sem_seg': {**sample['pred_sem_seg'], 'data': pred}})
        super().process(data_batch, mapped)
