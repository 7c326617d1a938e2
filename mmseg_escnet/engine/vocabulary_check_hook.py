"""A hook that refuses to evaluate when the model, the dataset and the metric disagree."""
from typing import List

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class VocabularyCheckHook(Hook):
    """Check, before validation and testing, that vocabulary, dataset and metric fit together.

    The predicted label ``k`` means "class ``k`` of the model's test vocabulary", while
    :class:`IoUMetric` counts it as class ``k`` of the dataset. Checked, with an error naming both
    sides instead of a silently wrong mIoU:

    * the vocabulary has as many classes as the dataset; with a metric that has a
      ``background_index`` ``b`` (PAS-20b), the dataset has ``b + 1`` classes and the vocabulary
      more than ``b``;
    * every metric's ``ignore_index`` equals the dataset's ``metainfo['ignore_index']`` when the
      dataset declares one (65535 for A-847, 459 for PC-459, 255 otherwise).
    """

    priority = 'VERY_HIGH'

    def before_val(self, runner) -> None:
        """Check the validation dataset and evaluator."""
        self._check(runner, runner.val_loop.dataloader.dataset, runner.val_loop.evaluator, 'val')

    def before_test(self, runner) -> None:
        """Check the test dataset and evaluator."""
        self._check(runner, runner.test_loop.dataloader.dataset, runner.test_loop.evaluator,
                    'test')

    @classmethod
    def _check(cls, runner, dataset, evaluator, split: str) -> None:
        metrics = list(getattr(evaluator, 'metrics', []))
        cls._check_ignore_index(dataset, metrics, split)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        embedder = getattr(model, 'test_text', None)
        if embedder is None:
            return
        vocabulary = embedder.vocabulary
        classes = dataset.metainfo.get('classes')
        if classes is None:
            raise ValueError(f'the {split} dataset has no metainfo["classes"] to compare the '
                             f'vocabulary with')
        backgrounds = {m.background_index for m in metrics
                       if getattr(m, 'background_index', None) is not None}
        describe = (f'the model\'s test vocabulary has {len(vocabulary)} classes '
                    f'({", ".join(vocabulary.names[:5])}, ...) and the {split} dataset '
                    f'{type(dataset).__name__} has {len(classes)} '
                    f'({", ".join(map(str, classes[:5]))}, ...)')
        if backgrounds:
            background = backgrounds.pop()
            if len(classes) != background + 1 or len(vocabulary) <= background:
                raise ValueError(f'{describe}; a metric with background_index={background} needs '
                                 f'{background + 1} dataset classes and more than {background} '
                                 f'vocabulary classes')
        elif len(classes) != len(vocabulary):
            hint = ''
            if 'background_index' in dataset.metainfo:
                hint = (f' {type(dataset).__name__} is scored with dict(type='
                        f"'IoUMetricWithBackground', background_index="
                        f'{dataset.metainfo["background_index"]}).')
            raise ValueError(f'{describe}. Set model.test_vocabulary to the dataset\'s vocabulary, '
                             f'e.g. --cfg-options model.test_vocabulary='
                             f'{dataset.metainfo.get("vocabulary", "<name or file>")}.{hint}')

    @staticmethod
    def _check_ignore_index(dataset, metrics: List, split: str) -> None:
        expected = dataset.metainfo.get('ignore_index')
        if expected is None:
            return
        for metric in metrics:
            actual = getattr(metric, 'ignore_index', None)
            if actual is not None and actual != expected:
                raise ValueError(f'the {split} metric {type(metric).__name__} has ignore_index='
                                 f'{actual} but {type(dataset).__name__} labels ignore '
                                 f'{expected}; set {split}_evaluator.ignore_index={expected}')
