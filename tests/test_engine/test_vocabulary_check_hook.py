"""VocabularyCheckHook: vocabulary, dataset classes and metric ignore index must agree."""
from types import SimpleNamespace

import pytest
from mmseg.evaluation import IoUMetric

from mmseg_escnet.engine import VocabularyCheckHook
from mmseg_escnet.evaluation import IoUMetricWithBackground
from mmseg_escnet.text import Vocabulary


def _runner(vocabulary, metainfo, metrics):
    embedder = SimpleNamespace(vocabulary=Vocabulary(vocabulary))
    model = SimpleNamespace(test_text=embedder, train_text=embedder)
    dataset = SimpleNamespace(metainfo=metainfo)
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset),
                           evaluator=SimpleNamespace(metrics=metrics))
    return SimpleNamespace(model=model, test_loop=loop, val_loop=loop, train_loop=loop)


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


def test_names_must_agree_in_order():
    meta = dict(classes=('sky', 'grass', 'sand'), vocabulary='tiny')
    runner = _runner(['sky', 'grass', 'sand'], meta, [IoUMetric()])
    VocabularyCheckHook().before_test(runner)
    runner = _runner(['sand', 'grass', 'sky'], meta, [IoUMetric()])
    with pytest.raises(ValueError, match=r"class 0 is 'sky' in the dataset and 'sand' in the "
                       r"vocabulary \(the same classes in another order\).*"
                       r"model.test_vocabulary=tiny.*allow_vocabulary_mismatch=True"):
        VocabularyCheckHook().before_test(runner)
    runner = _runner(['cat', 'grass', 'dog'], meta, [IoUMetric()])
    with pytest.raises(ValueError, match=r'\(2 of 3 classes differ\)'):
        VocabularyCheckHook().before_val(runner)


def test_names_compare_case_white_space_and_synonyms():
    meta = dict(classes=('sky', 'potted plant', 'person'))
    runner = _runner(['Sky', 'potted  plant', 'man, person'], meta, [IoUMetric()])
    VocabularyCheckHook().before_test(runner)


def test_mismatch_can_be_allowed_for_cross_vocabulary_experiments():
    from mmengine.config import Config
    runner = _runner(['cat', 'dog', 'cow'], dict(classes=('sky', 'grass', 'sand')), [IoUMetric()])
    runner.cfg = Config(dict(allow_vocabulary_mismatch=True))
    VocabularyCheckHook().before_test(runner)  # names differ, sizes agree: allowed
    runner = _runner(['cat', 'dog'], dict(classes=('sky', 'grass', 'sand')), [IoUMetric()])
    runner.cfg = Config(dict(allow_vocabulary_mismatch=True))
    with pytest.raises(ValueError, match='2 classes'):  # a size mismatch cannot be scored
        VocabularyCheckHook().before_test(runner)


def test_background_protocol_compares_the_named_classes_only():
    voc20b = dict(classes=tuple('abc') + ('background', ), ignore_index=255, background_index=3)
    metric = IoUMetricWithBackground(background_index=3)
    with pytest.raises(ValueError, match="class 1 is 'b' in the dataset and 'x'"):
        VocabularyCheckHook().before_test(_runner(list('axcyz'), voc20b, [metric]))


def test_training_labels_must_index_the_training_vocabulary():
    meta = dict(classes=('sky', 'grass', 'sand'))
    VocabularyCheckHook().before_train(_runner(['sky', 'grass', 'sand'], meta, []))
    with pytest.raises(ValueError, match=r'model.vocabulary has 2 classes .* train dataset'):
        VocabularyCheckHook().before_train(_runner(['sky', 'grass'], meta, []))
    with pytest.raises(ValueError, match=r"model.vocabulary does not name the classes of the "
                       r"train dataset .*class 1 is 'grass' in the dataset and 'sand'"):
        VocabularyCheckHook().before_train(_runner(['sky', 'sand', 'grass'], meta, []))
