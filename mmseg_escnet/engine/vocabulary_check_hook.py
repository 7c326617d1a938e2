"""A hook that refuses to evaluate with a vocabulary that does not fit the dataset."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class VocabularyCheckHook(Hook):
    """Check, before validation and testing, that the model's test vocabulary fits the dataset.

    The predicted label ``k`` means "class ``k`` of the model's test vocabulary", while
    :class:`IoUMetric` counts it as class ``k`` of the dataset, so both lists must have the same
    length (and, for meaningful numbers, the same order). A mismatch would silently produce wrong
    mIoU; this hook raises instead, naming both sizes.
    """

    priority = 'VERY_HIGH'

    def before_val(self, runner) -> None:
        """Check the validation dataset."""
        self._check(runner, runner.val_loop.dataloader.dataset, 'val')

    def before_test(self, runner) -> None:
        """Check the test dataset."""
        self._check(runner, runner.test_loop.dataloader.dataset, 'test')

    @staticmethod
    def _check(runner, dataset, split: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        embedder = getattr(model, 'test_text', None)
        if embedder is None:
            return
        vocabulary = embedder.vocabulary
        classes = dataset.metainfo.get('classes')
        if classes is None:
            raise ValueError(f'the {split} dataset has no metainfo["classes"] to compare the '
                             f'vocabulary with')
        if len(classes) != len(vocabulary):
            raise ValueError(
                f'the model\'s test vocabulary has {len(vocabulary)} classes '
                f'({", ".join(vocabulary.names[:5])}, ...) but the {split} dataset '
                f'{type(dataset).__name__} has {len(classes)} ({", ".join(map(str, classes[:5]))}, ...). '
                f'Set model.test_vocabulary to the dataset\'s vocabulary, e.g. '
                f'--cfg-options model.test_vocabulary=<name or file>.')
