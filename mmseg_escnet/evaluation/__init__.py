"""Evaluation metrics."""
from .background_iou_metric import IoUMetricWithBackground

__all__ = ['IoUMetricWithBackground']
