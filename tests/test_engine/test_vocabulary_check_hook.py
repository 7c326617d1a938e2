"""VocabularyCheckHook: vocabulary, dataset classes and metric ignore index must agree."""
from types import SimpleNamespace

import pytest
from mmseg.evaluation import IoUMetric

from mmseg_escnet.engine import VocabularyCheckHook
from mmseg_escnet.evaluation import IoUMetricWithBackground
from mmseg_escnet.models.text import Vocabulary


def _runner(vocabulary, metainfo, metrics):
    model = SimpleNamespace(test_text=SimpleNamespace(vocabulary=Vocabulary(vocabulary)))
    dataset = SimpleNamespace(metainfo=metainfo)
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset),
                           evaluator=SimpleNamespace(metrics=metrics))
    return SimpleNamespace(model=model, test_loop=loop, val_loop=loop)


def test_sizes_must_agree():
    runner = _runner(list('abcde'), dict(classes=('a', 'b')), [IoUMetric()])
    with pytest.raises(ValueError, match='5 classes.*has 2'):
        VocabularyCheckHook().before_test(runner)
    with pytest.raises(ValueError, match='5 classes.*has 2'):
        VocabularyCheckHook().before_val(runner)
    VocabularyCheckHook().before_test(_runner(list('abcde'), dict(classes=tuple('abcde')),
                                              [IoUMetric()]))


def test_hint_names_the_dataset_vocabulary():
    runner = _runner(list('abc'), dict(classes=tuple('ab'), vocabulary='pc59'), [IoUMetric()])
    with pytest.raises(ValueError, match='model.test_vocabulary=pc59'):
        VocabularyCheckHook().before_test(runner)


def test_ignore_index_must_match_the_dataset():
    meta = dict(classes=tuple('abc'), ignore_index=65535)
    with pytest.raises(ValueError, match='ignore_index=255.*ignore 65535'):
        VocabularyCheckHook().before_test(_runner(list('abc'), meta, [IoUMetric()]))
    VocabularyCheckHook().before_test(_runner(list('abc'), meta, [IoUMetric(ignore_index=65535)]))


def test_background_protocol():
    voc20b = dict(classes=tuple('abc') + ('background', ), ignore_index=255, background_index=3)
    metric = IoUMetricWithBackground(background_index=3)
    # a larger vocabulary is fine: everything past class 2 is background
    VocabularyCheckHook().before_test(_runner(list('abcxyz'), voc20b, [metric]))
    with pytest.raises(ValueError, match='background_index=3 needs 4 dataset classes'):
        VocabularyCheckHook().before_test(_runner(list('abc'), voc20b, [metric]))
    with pytest.raises(ValueError, match="IoUMetricWithBackground', background_index=3"):
        VocabularyCheckHook().before_test(_runner(list('abcxyz'), voc20b, [IoUMetric()]))
