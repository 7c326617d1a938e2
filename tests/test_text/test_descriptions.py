"""Attribute descriptions (LMSeg's prompts): the file format, the checks, and the prompts and
class embeddings they give as a vocabulary's ``'descriptions'`` templates."""
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mmseg_escnet.models.text import ClassEmbedder
from mmseg_escnet.text import Vocabulary
from mmseg_escnet.text.descriptions import (ATTRIBUTES, DescriptionSet, available_description_files,
                                            check_description, count_clip_tokens,
                                            load_descriptions, save_descriptions)

SKY = {'color': 'The sky is blue.', 'shape': 'The sky is a wide open dome.',
       'texture': 'The sky looks smooth.'}
POT = {'color': 'A pot is brown.', 'shape': 'A pot is round.', 'texture': 'A pot is clay.'}


def _write(path, table, **extra):
    data = dict(format='mmseg_escnet.descriptions', version=1, attributes=list(ATTRIBUTES),
                meta={}, descriptions=table)
    data.update(extra)
    path.write_text(json.dumps(data), encoding='utf-8')
    return str(path)


def test_builtin_synthetic_file_describes_the_quick_start_classes():
    assert 'synthetic_shapes' in available_description_files()
    loaded = load_descriptions('synthetic_shapes')
    assert sorted(loaded.descriptions) == sorted(['sky', 'grass', 'sand', 'snow', 'brick'])
    assert loaded.attributes == ATTRIBUTES
    assert all(len(d) == 3 for d in loaded.descriptions.values())


def test_save_load_round_trip(tmp_path):
    written = DescriptionSet({'sky': SKY, 'pot, flowerpot': POT}, meta=dict(model='m'))
    save_descriptions(tmp_path / 'd.json', written)
    loaded = load_descriptions(str(tmp_path / 'd.json'))
    assert loaded.descriptions == written.descriptions and loaded.meta == {'model': 'm'}
    assert loaded.digest() == written.digest()
    assert not list(tmp_path.glob('*.tmp'))  # the atomic write leaves no temporary file


@pytest.mark.parametrize('text, problem', [
    ('', 'is empty'),
    ('   ', 'is empty'),
    (None, 'must be a string'),
    ('It is blue. It is also grey.', 'one sentence'),
    ('blue ' * 80, 'more than'),
])
def test_check_description_refuses(text, problem):
    with pytest.raises(ValueError, match=problem) as err:
        check_description(text, class_name='sky', attribute='color')
    assert "'sky'" in str(err.value) and 'color' in str(err.value)


def test_check_description_normalises_white_space_and_counts_clip_tokens():
    assert check_description('  The sky\n is blue. ', class_name='sky',
                             attribute='color') == 'The sky is blue.'
    assert count_clip_tokens('a photo') == 4  # start, 'a', 'photo', end
    text = ' '.join(['sky'] * 75)  # 77 tokens: the most CLIP takes
    assert check_description(text, class_name='sky', attribute='color') == text


def test_huge_answers_are_quoted_short():
    for text in ('A sky is ' + 'very ' * 400_000 + 'blue.', 'Blue. ' + 'x' * 2_000_000 + '.',
                 'A sky is ' + 'x' * 2_000_000 + '.'):
        with pytest.raises(ValueError, match="more than CLIP's context|one sentence") as err:
            check_description(text, class_name='sky', attribute='color')
        assert len(str(err.value)) < 500 and 'characters)' in str(err.value)


def test_a_class_name_beyond_77_tokens_warns_once_naming_it():
    name = 'ZAŻÓŁĆ gęślą jaźń ' * 1200  # about 20,000 characters
    with pytest.warns(UserWarning) as record:
        Vocabulary(['cat', name])
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("the prompt of class 'ZAŻÓŁĆ gęślą jaźń ZAŻÓŁĆ")
    assert "more than CLIP's context of 77 tokens" in message and len(message) < 800
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        Vocabulary(['cat', name, 'a ' + 'long ' * 10 + 'name'])  # once per name; short: silent


@pytest.mark.parametrize('edit, problem', [
    (dict(format='other'), 'not a descriptions file'),
    (dict(version=2), 'version 2'),
    (dict(descriptions={'sky': {'color': 'Blue.', 'shape': 'Wide.'}}), "lacks the attribute"),
    (dict(descriptions={'sky': dict(SKY, color='')}), 'color description of .sky. is empty'),
    (dict(descriptions=['sky']), 'must map class names'),
    (dict(attributes=[]), 'attributes'),
])
def test_malformed_files_are_refused_with_the_problem_named(tmp_path, edit, problem):
    path = _write(tmp_path / 'd.json', {'sky': SKY}, **edit)
    with pytest.raises(ValueError, match=problem):
        load_descriptions(path)


def test_missing_file_names_the_generation_command(tmp_path):
    with pytest.raises(FileNotFoundError, match='tools/generate_descriptions.py'):
        load_descriptions(str(tmp_path / 'ade150.json'))
    (tmp_path / 'bad.json').write_text('{not json')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_descriptions(str(tmp_path / 'bad.json'))


def test_prompts_mean_none_class_name_and_lookup_by_display_name(tmp_path):
    path = _write(tmp_path / 'd.json', {'sky': SKY, 'pot': POT})
    spec = dict(type='descriptions', file=path)
    vocab = Vocabulary(['sky', 'pot, flowerpot'], synonyms='all', templates=spec)
    assert vocab.num_prompts == 1
    assert vocab.prompts() == [[list(SKY.values())], [list(POT.values())]]
    named = Vocabulary(['sky', 'pot, flowerpot'], synonyms='all',
                       templates=dict(spec, reduce='none', class_name_template='a {}.'))
    assert named.num_prompts == 4
    assert named.prompts()[1] == [[POT['color']], [POT['shape']], [POT['texture']],
                                  ['a pot.', 'a flowerpot.']]
    # the templates dict is handed on as is (a test vocabulary inherits it)
    assert Vocabulary(['sky'], templates=named.templates).templates == named.templates


def test_a_class_without_descriptions_falls_back_with_a_warning_naming_it(tmp_path):
    path = _write(tmp_path / 'd.json', {'sky': SKY})
    vocab = Vocabulary(['sky', 'tree'], templates=dict(type='descriptions', file=path,
                                                       reduce='none'))
    with pytest.warns(UserWarning, match=r"1 class\(es\).*'tree'"):
        prompts = vocab.prompts()
    assert prompts[1] == [['A photo of a tree in the scene']] * 3
    assert prompts[0] == [[SKY['color']], [SKY['shape']], [SKY['texture']]]


def test_bad_templates_dicts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="type='descriptions'"):
        Vocabulary(['sky'], templates=dict(type='llm', file='x.json'))
    with pytest.raises(ValueError, match='reduce'):
        Vocabulary(['sky'], templates=dict(type='descriptions', file='x.json', reduce='max'))
    with pytest.raises(ValueError, match='fil'):
        Vocabulary(['sky'], templates=dict(type='descriptions', files='x.json'))


def test_fingerprint_follows_the_descriptions_not_the_file_name(tmp_path):
    a = _write(tmp_path / 'a.json', {'sky': SKY})
    b = _write(tmp_path / 'b.json', {'sky': SKY})
    c = _write(tmp_path / 'c.json', {'sky': dict(SKY, color='The sky is grey.')})
    fp = [Vocabulary(['sky'], templates=dict(type='descriptions', file=p)).fingerprint
          for p in (a, b, c)]
    assert fp[0] == fp[1] != fp[2]
    # a file yet to be written does not break building or printing the vocabulary
    assert 'fingerprint=None' in repr(
        Vocabulary(['sky'], templates=dict(type='descriptions', file=str(tmp_path / 'n.json'))))


def test_class_embedding_is_the_renormalised_mean_of_normalised_description_embeddings(tmp_path):
    path = _write(tmp_path / 'd.json', {'sky': SKY, 'pot': POT})
    vocab = Vocabulary(['sky', 'pot'], templates=dict(type='descriptions', file=path,
                                                      class_name_template='a {}.'))
    table = {}

    def tokenize(texts):  # one token per prompt: its index in a table
        return torch.tensor([[table.setdefault(t, len(table))] for t in texts])

    torch.manual_seed(0)
    weights = torch.randn(16, 8)

    def encode_text(tokens):  # (n, 1) -> (n, 8), deliberately not normalised
        return weights[tokens[:, 0]] * 3.0

    encoder = SimpleNamespace(encode_text=encode_text, tokenize=tokenize)  # any such object
    embedder = ClassEmbedder(vocab, text_encoder=encoder).eval()
    emb = embedder()  # (T, 1, C)
    assert emb.shape == (2, 1, 8)
    for t, (name, desc) in enumerate([('sky', SKY), ('pot', POT)]):
        texts = list(desc.values()) + [f'a {name}.']
        parts = F.normalize(torch.stack([weights[table[x]] for x in texts]), dim=-1)
        torch.testing.assert_close(emb[t, 0], F.normalize(parts.mean(0), dim=0))
