"""Tests for Vocabulary, the built-in class lists and the prompt templates."""
import hashlib
import json
import re
from pathlib import Path

import pytest

from mmseg_escnet.text.templates import CATSEG_TEMPLATES, get_templates
from mmseg_escnet.text.vocabulary import Vocabulary, available_vocabularies

BUILTIN = {
    # name: (size, first name, last name) as in CAT-Seg's datasets/*.json
    'coco_stuff171': (171, 'person', 'wood'),
    'ade150': (150, 'wall', 'flag'),
    'ade847': (847, 'wall', 'adding machine'),
    'pc59': (59, 'aeroplane', 'wood'),
    'pc459': (459, 'accordion', 'wool'),
    'voc20': (20, 'aeroplane', 'tvmonitor'),
    'voc20b': (59, 'aeroplane', 'wood'),
}


def test_available_vocabularies():
    assert available_vocabularies() == sorted(BUILTIN)


@pytest.mark.parametrize('name', sorted(BUILTIN))
def test_builtin_sizes_and_names(name):
    size, first, last = BUILTIN[name]
    vocab = Vocabulary(name)
    assert len(vocab) == size
    assert len(vocab.names) == size
    assert vocab.names[0] == first
    assert vocab.names[-1] == last
    assert vocab.source == name
    assert vocab.templates == ['A photo of a {} in the scene']


def test_builtin_details():
    ade150 = Vocabulary('ade150')
    assert ade150.names[7] == 'bed'  # CAT-Seg's 'bed ' has a trailing space
    ade847 = Vocabulary('ade847')
    multi = [s for s in ade847.all_synonyms if len(s) > 1]
    assert len(multi) == 217
    assert ade847.all_synonyms[1] == ['building', 'edifice']
    assert ade847.synonyms[1] == ['building']
    assert ade847.all_synonyms[11] == ['person', 'individual', 'someone', 'somebody', 'mortal',
                                       'soul']
    # The official list has distinct classes sharing a first synonym; they must all load.
    assert ade847.names.count('bag') == 3
    assert ade847.all_synonyms[ade847.names.index('pot')] == ['pot', 'flowerpot']
    voc20, voc20b, pc59 = Vocabulary('voc20'), Vocabulary('voc20b'), Vocabulary('pc59')
    assert voc20b.names[:20] == voc20.names
    assert set(voc20b.names) == set(pc59.names)  # VOC-20 + the 39 other PC-59 classes
    assert Vocabulary('coco_stuff171').names[84] == 'building-other'


def test_synonym_policies():
    classes = ['sofa, couch, lounge', 'cat', 'dog ,puppy']
    assert Vocabulary(classes).synonyms == [['sofa'], ['cat'], ['dog']]
    assert Vocabulary(classes, synonyms='all').synonyms == [['sofa', 'couch', 'lounge'],
                                                             ['cat'], ['dog', 'puppy']]
    assert Vocabulary(classes, synonyms=2).synonyms == [['sofa', 'couch'], ['cat'],
                                                        ['dog', 'puppy']]
    assert Vocabulary(classes, synonyms=1).synonyms == Vocabulary(classes).synonyms
    for policy in ('first', 'all', 2):
        assert Vocabulary(classes, synonyms=policy).names == ['sofa', 'cat', 'dog']


def test_templates():
    assert get_templates('catseg') == CATSEG_TEMPLATES == ['A photo of a {} in the scene']
    imagenet = get_templates('imagenet')
    assert len(imagenet) == 80
    assert imagenet[0] == 'a bad photo of a {}.'
    # the 80 strings in CAT-Seg's and SED's order (IMAGENET_TEMPLATES, checked against the
    # official list): their order is the channel order of SED's conv1, so it is pinned here
    assert hashlib.sha256('\n'.join(imagenet).encode()).hexdigest() == (
        '4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af')
    open_clip_meta = pytest.importorskip('open_clip.zero_shot_metadata')
    assert [t.format('cat') for t in imagenet] == [
        f('cat') for f in open_clip_meta.OPENAI_IMAGENET_TEMPLATES]
    vild = get_templates('vild')
    assert len(vild) == 14 and all('{}' in t for t in vild)
    vocab = Vocabulary(['cat'], templates=('a {}.', 'the {} here'))
    assert vocab.templates == ['a {}.', 'the {} here']
    assert len(Vocabulary(['cat'], templates='imagenet').templates) == 80


def test_prompts_layout():
    vocab = Vocabulary(['sofa, couch', 'cat'], synonyms='all', templates=['a {}.', 'my {}'])
    assert vocab.prompts() == [
        [['a sofa.', 'a couch.'], ['my sofa', 'my couch']],
        [['a cat.'], ['my cat']],
    ]


def test_txt_and_json_files(tmp_path):
    txt = tmp_path / 'classes.txt'
    txt.write_text('# my classes\n\nsofa, couch\n  cat  \n   # indented comment\n\ndog\n')
    vocab_txt = Vocabulary(str(txt), synonyms='all')
    assert vocab_txt.synonyms == [['sofa', 'couch'], ['cat'], ['dog']]
    assert Vocabulary(txt).names == ['sofa', 'cat', 'dog']  # os.PathLike is accepted
    js = tmp_path / 'classes.json'
    js.write_text(json.dumps(['sofa, couch', 'cat', 'dog']))
    vocab_json = Vocabulary(str(js), synonyms='all')
    assert vocab_json.synonyms == vocab_txt.synonyms
    assert vocab_json.fingerprint == vocab_txt.fingerprint
    assert vocab_json == vocab_txt


def test_fingerprint():
    base = Vocabulary(['sofa, couch', 'cat'])
    fp = base.fingerprint
    assert re.fullmatch(r'[0-9a-f]{16}', fp)
    assert Vocabulary(['sofa, couch', 'cat']).fingerprint == fp
    # unused synonyms do not change the embeddings, so not the fingerprint either
    assert Vocabulary(['sofa, settee', 'cat']).fingerprint == fp
    assert Vocabulary(['sofa, couch', 'cat'], synonyms='all').fingerprint != fp
    assert Vocabulary(['cat', 'sofa, couch']).fingerprint != fp  # order matters
    assert Vocabulary(['sofa, couch', 'cat'], templates=['a {}']).fingerprint != fp
    assert Vocabulary(['sofa', 'cat']).fingerprint == fp
    assert Vocabulary('voc20').fingerprint == Vocabulary(Vocabulary('voc20').names).fingerprint


def test_repr():
    text = repr(Vocabulary('ade150'))
    assert "source='ade150'" in text and 'num_classes=150' in text
    assert "'wall', 'building', 'sky', ..." in text


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(classes=[]), ValueError, 'empty'),
    (dict(classes=['cat', '  ']), ValueError, r'class 1 \(entry 1\) is an empty name'),
    (dict(classes=['cat', 'dog, , puppy']), ValueError, r'class 1 .*empty synonym at position 1'),
    (dict(classes=['cat', 'dog,']), ValueError, r'class 1 .*empty synonym at position 1'),
    (dict(classes=['cat', 'dog', ' Cat']), ValueError, r'duplicate class 2 .*same as class 0'),
    (dict(classes=['sofa, couch', 'SOFA,  Couch']), ValueError, r'duplicate class 1'),
    (dict(classes='ade9999'), ValueError,
     r"unknown built-in vocabulary 'ade9999'.*'ade150'.*'voc20b'"),
    (dict(classes='missing_dir/none.txt'), ValueError, r'not found: missing_dir/none\.txt'),
    (dict(classes='missing.json'), ValueError, r'not found: missing\.json'),
    (dict(classes=['cat'], templates=['a photo']), ValueError,
     r"template 0 'a photo' must contain exactly one '\{\}'.*found 0"),
    (dict(classes=['cat'], templates=['a {}', '{} and {}']), ValueError,
     r'template 1 .*found 2'),
    (dict(classes=['cat'], templates=['a {x} {}']), ValueError, 'not a valid format string'),
    (dict(classes=['cat'], templates=[]), ValueError, 'templates must not be empty'),
    (dict(classes=['cat'], templates='foo'), ValueError,
     r"unknown template set 'foo'.*'catseg'"),
    (dict(classes=['cat'], synonyms=0), ValueError, 'synonyms must be'),
    (dict(classes=['cat'], synonyms='some'), ValueError, 'synonyms must be'),
    (dict(classes=['cat'], synonyms=True), ValueError, 'synonyms must be'),
    (dict(classes=['cat'], synonyms=1.5), ValueError, 'synonyms must be'),
    (dict(classes=['cat', 3]), TypeError, r'class 1 \(entry 1\) must be a str'),
    (dict(classes=123), TypeError, 'classes must be'),
    (dict(classes=['cat'], templates=[3]), TypeError, 'template 0 must be a str'),
])
def test_errors(kwargs, error, match):
    classes = kwargs.pop('classes')
    with pytest.raises(error, match=match):
        Vocabulary(classes, **kwargs)


@pytest.mark.parametrize('name, text, error, match', [
    ('empty.txt', '# nothing here\n\n', ValueError, 'empty'),
    ('dup.txt', 'cat\ndog\n\ncat\n', ValueError, r'duplicate class 2 .*line 4 of'),
    ('bad.txt', 'cat\n, dog\n', ValueError,
     r'class 1 \(line 2 of .*empty synonym at position 0'),
    ('obj.json', '{"a": 1}', ValueError, 'JSON list of strings'),
    ('broken.json', '["cat", ', ValueError, 'not valid JSON'),
    ('nonstr.json', '["cat", 5]', TypeError, r'class 1 \(item 1 of .*must be a str'),
    ('classes.csv', 'cat\n', ValueError, r'must end in one of'),
])
def test_file_errors(tmp_path, name, text, error, match):
    with pytest.raises(error, match=match):
        Vocabulary(_write(tmp_path, name, text))


def test_builtin_names_ignore_case():
    assert Vocabulary('ADE150').names == Vocabulary('ade150').names
    assert Vocabulary(' Voc20b ').source == 'voc20b'
    with pytest.raises(ValueError, match=r"unknown built-in vocabulary 'ade15' \(did you mean "
                       r"'ade150'\?\)"):
        Vocabulary('ade15')
    with pytest.raises(ValueError, match='vocabulary file not found: /no/such/classes'):
        Vocabulary('/no/such/classes')


def test_parse_vocabulary_text(tmp_path):
    from mmseg_escnet.text import parse_vocabulary_text as parse
    assert parse('cat, dog|puppy ,sky') == ['cat', 'dog, puppy', 'sky']
    assert parse('sky') == ['sky']
    assert parse('potted plant') == ['potted plant']
    assert parse('dog|puppy') == ['dog, puppy']
    assert parse('ade150') == 'ade150' and parse('ADE150') == 'ade150'
    assert parse('person_2,') == ['person_2']  # a trailing comma: a class list, as typed
    classes = tmp_path / 'my.txt'
    classes.write_text('cat\ndog\n')
    assert parse(str(classes)) == str(classes)
    for text, match in [('', 'empty'), (' , ', 'empty'),
                        (str(tmp_path / 'none.txt'), 'vocabulary file not found'),
                        ('/path/that/does/not/exist', 'vocabulary file not found'),
                        ('ADE15', r"did you mean 'ade150'\?"),
                        ('voc2O', r"did you mean 'voc20'"),
                        ('nope_vocab', r"'nope_vocab' is not a built-in vocabulary .*"
                                       r"add a comma: 'nope_vocab,'"),
                        ('coco_stuff', "did you mean 'coco_stuff171'")]:
        with pytest.raises(ValueError, match=match):
            parse(text)
