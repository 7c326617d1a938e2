"""A hook that refuses to evaluate when the model, the dataset and the metric disagree."""
from typing import List

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class VocabularyCheckHook(Hook):
    """Check, before training, validation and testing, that vocabulary, dataset and metric fit
    together.

    The predicted label ``k`` means "class ``k`` of the model's test vocabulary", while
    :class:`IoUMetric` counts it as class ``k`` of the dataset; in training, label ``k`` is the
    target of class ``k`` of the training vocabulary. Checked, with an error naming both sides
    instead of a silently wrong mIoU or loss:

    * the vocabulary has as many classes as the dataset; with a metric that has a
      ``background_index`` ``b`` (PAS-20b), the dataset has ``b + 1`` classes and the vocabulary
      more than ``b``;
    * class ``k`` of the vocabulary names class ``k`` of the dataset (the first ``b`` with a
      background index): the dataset's name is one of the vocabulary entry's synonyms, compared
      without regard to case and white space. A reordered or different vocabulary of the right
      size is refused unless the config sets ``allow_vocabulary_mismatch = True`` (an intended
      cross-vocabulary experiment);
    * every metric's ``ignore_index`` equals the dataset's ``metainfo['ignore_index']`` when the
      dataset declares one (65535 for A-847, 459 for PC-459, 255 otherwise).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        """Check the training dataset against the training vocabulary (its labels index it)."""
        self._check(runner, runner.train_loop.dataloader.dataset, None, 'train',
                    embedder_name='train_text')

    def before_val(self, runner) -> None:
        """Check the validation dataset and evaluator."""
        self._check(runner, runner.val_loop.dataloader.dataset, runner.val_loop.evaluator, 'val')

    def before_test(self, runner) -> None:
        """Check the test dataset and evaluator."""
        self._check(runner, runner.test_loop.dataloader.dataset, runner.test_loop.evaluator,
                    'test')

    @classmethod
    def _check(cls, runner, dataset, evaluator, split: str,
               embedder_name: str = 'test_text') -> None:
        metrics = list(getattr(evaluator, 'metrics', []))
        cls._check_ignore_index(dataset, metrics, split)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        embedder = getattr(model, embedder_name, None)
        if embedder is None:
            return
        vocabulary = embedder.vocabulary
        key = 'model.vocabulary' if split == 'train' else 'model.test_vocabulary'
        classes = dataset.metainfo.get('classes')
        if classes is None:
            raise ValueError(f'the {split} dataset has no metainfo["classes"] to compare the '
                             f'vocabulary with')
        backgrounds = {m.background_index for m in metrics
                       if getattr(m, 'background_index', None) is not None}
        named = len(classes) - 1 if backgrounds else len(classes)
        describe = (f'{key} has {len(vocabulary)} classes '
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
            raise ValueError(f'{describe}. Set {key} to the dataset\'s vocabulary, '
                             f'e.g. --cfg-options {key}='
                             f'{dataset.metainfo.get("vocabulary", "<name or file>")}.{hint}')
        cfg = getattr(runner, 'cfg', None)
        if cfg is None or not cfg.get('allow_vocabulary_mismatch', False):
            cls._check_names(vocabulary, classes[:named], dataset, split, key)

    @staticmethod
    def _check_names(vocabulary, classes, dataset, split: str, key: str) -> None:
        """Class ``k`` of the dataset must be a synonym of vocabulary entry ``k``."""
        def norm(name) -> set:
            return {' '.join(part.split()).casefold() for part in str(name).split(',')}

        entries = [norm(', '.join(syns)) for syns in vocabulary.all_synonyms[:len(classes)]]
        wrong = [k for k, name in enumerate(classes) if not norm(name) & entries[k]]
        if not wrong:
            return
        k = wrong[0]
        reordered = (sorted(map(frozenset, (norm(c) for c in classes)), key=sorted)
                     == sorted(map(frozenset, entries), key=sorted))
        how = ('the same classes in another order' if reordered
               else f'{len(wrong)} of {len(classes)} classes differ')
        raise ValueError(
            f'{key} does not name the classes of the {split} dataset '
            f'{type(dataset).__name__}: class {k} is {classes[k]!r} in the dataset and '
            f'{vocabulary.names[k]!r} in the vocabulary ({how}). Set {key} to '
            f'the dataset\'s vocabulary (e.g. --cfg-options {key}='
            f'{dataset.metainfo.get("vocabulary", "<name or file>")}), or set '
            f'allow_vocabulary_mismatch=True for an intended cross-vocabulary experiment')

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
