"""Class vocabularies: class names, their synonyms and the prompt templates.

A vocabulary is an ordered list of classes; class ``i`` is channel ``i`` of the
segmentation logits. Each class is one entry ``'a, b, c'``: comma-separated
synonyms, the first of which is the display name.

Built-in vocabularies live in ``mmseg_escnet/text/vocabularies/<name>.txt`` (one entry
per line). They are the official CAT-Seg class lists
(cvlab-kaist/CAT-Seg ``datasets/*.json``), one JSON entry per line, stripped:

=================  =====  =========================================
name               size   CAT-Seg file
=================  =====  =========================================
``coco_stuff171``  171    ``coco.json`` (training vocabulary)
``ade150``         150    ``ade150.json``
``ade847``         847    ``ade847.json`` (217 entries with synonyms)
``pc59``           59     ``pc59.json``
``pc459``          459    ``pc459.json``
``voc20``          20     ``voc20.json``
``voc20b``         59     ``voc20b.json`` (VOC-20 + 39 PC-59 classes)
=================  =====  =========================================

Duplicates are judged on the whole normalised entry (all synonyms), not on the
first synonym alone: the official ADE-847 list has distinct classes that share
their first synonym (e.g. ``'pot, flowerpot'`` and ``'pot'``; ``'bag'`` three
times), and the benchmark needs all 847 channels in the official order.
"""
import difflib
import hashlib
import json
import os
import os.path as osp
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .descriptions import DescriptionPrompts, warn_long_class_names
from .templates import get_templates

VOCABULARY_DIR = Path(__file__).resolve().parent / 'vocabularies'

SynonymPolicy = Union[str, int]
ClassesSpec = Union[str, 'os.PathLike[str]', Sequence[str]]

_FILE_SUFFIXES = ('.txt', '.json')


def available_vocabularies() -> List[str]:
    """Names of the built-in vocabularies.

    Returns:
        List[str]: sorted stems of ``mmseg_escnet/text/vocabularies/*.txt``.
    """
    return sorted(p.stem for p in VOCABULARY_DIR.glob('*.txt'))


def builtin_vocabulary(name: str) -> Optional[str]:
    """The built-in vocabulary ``name`` stands for, ignoring case and surrounding white space
    (``'ADE150'`` is ``'ade150'``), or None."""
    key = name.strip().casefold()
    return next((v for v in available_vocabularies() if v.casefold() == key), None)


def similar_vocabularies(name: str) -> List[str]:
    """Built-in vocabulary names close to ``name`` (for "did you mean" messages)."""
    key = name.strip().casefold()
    names = available_vocabularies()
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    if not close and len(key) >= 3:  # 'coco' for 'coco_stuff171'
        close = [v for v in names if v.startswith(key[:3])]
    return close[:3]


def parse_vocabulary_text(text: str) -> Union[str, List[str]]:
    """A vocabulary typed by a user (command line, web form) -> what :class:`Vocabulary` takes.

    ``'cat, dog|puppy, sky'`` is three classes (``|`` between synonyms). Without a comma the text
    is one of: a ``.txt``/``.json`` file, a built-in vocabulary name (any case: ``'ADE150'``), or
    one class name. What looks like a mistyped file or built-in name is refused rather than
    turned into a one-class vocabulary: a path (a ``/``, or a ``.txt``/``.json`` suffix) that
    names no file, and a single word close to a built-in name or shaped like one (letters with
    an ``_`` or digits, such as ``nope_vocab``). A trailing comma (``'person_2,'``) makes any
    text a class list.

    Args:
        text (str): what the user typed.

    Returns:
        str | list[str]: a file path or built-in name, or class entries (``['cat', 'dog, puppy',
        'sky']``).

    Raises:
        ValueError: empty text, a missing file, or a likely mistyped built-in name (the message
        suggests close names).
    """
    text = text.strip()
    if not text or not text.strip(','):
        raise ValueError('the vocabulary is empty: give comma-separated class names, a '
                         '.txt/.json file or a built-in vocabulary name')
    if ',' in text:
        entries = text.split(',')
        if text.endswith(','):
            entries = entries[:-1]
        return [', '.join(s.strip() for s in entry.split('|')) for entry in entries]
    if osp.isfile(text):
        return text
    if '/' in text or os.sep in text or Path(text).suffix.lower() in _FILE_SUFFIXES:
        raise ValueError(f'vocabulary file not found: {text}')
    builtin = builtin_vocabulary(text)
    if builtin is not None:
        return builtin
    close = difflib.get_close_matches(text.casefold(), available_vocabularies(), n=3,
                                      cutoff=0.75)
    if close or re.fullmatch(r'[A-Za-z]+(_\w*|\d\w*)', text):
        suggestions = close or similar_vocabularies(text)
        hint = f'did you mean {" or ".join(map(repr, suggestions))}? ' if suggestions else ''
        raise ValueError(f'{text!r} is not a built-in vocabulary ({hint}available: '
                         f'{", ".join(available_vocabularies())}) nor a file; to use it as the '
                         f'name of a single class, add a comma: {text + ","!r}')
    return [', '.join(s.strip() for s in text.split('|'))]


def _read_txt(path: Path) -> List[Tuple[str, str]]:
    """Entries of a .txt file: one per line, skipping blank and '#' lines."""
    entries = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            entries.append((text, f'line {lineno} of {path}'))
    return entries


def _read_json(path: Path) -> List[Tuple[str, str]]:
    """Entries of a .json file holding a list of strings."""
    with open(path, encoding='utf-8') as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'vocabulary file {path} is not valid JSON: {err}') from err
    if not isinstance(data, list):
        raise ValueError(f'vocabulary file {path} must hold a JSON list of strings, '
                         f'got {type(data).__name__}')
    return [(item, f'item {i} of {path}') for i, item in enumerate(data)]


def load_class_entries(classes: ClassesSpec) -> Tuple[List[Tuple[str, str]], str]:
    """Resolve ``classes`` to raw entries.

    Args:
        classes: a built-in vocabulary name, a path to a ``.txt``/``.json``
            file, or a sequence of class strings.

    Returns:
        Tuple[List[Tuple[str, str]], str]: ``(entry, where)`` pairs, where
        ``where`` locates the entry for error messages, and a short description
        of the source (the built-in name, the path, or ``'<list>'``).

    Raises:
        ValueError: unknown built-in name, missing file or unsupported suffix.
        TypeError: ``classes`` has an unsupported type.
    """
    if isinstance(classes, (str, os.PathLike)):
        text = os.fspath(classes)
        path = Path(text)
        if path.suffix.lower() in _FILE_SUFFIXES:
            if not path.is_file():
                raise ValueError(f'vocabulary file not found: {text}')
            reader = _read_json if path.suffix.lower() == '.json' else _read_txt
            return reader(path), text
        builtin = builtin_vocabulary(text) if isinstance(classes, str) else None
        if builtin is not None:
            return _read_txt(VOCABULARY_DIR / f'{builtin}.txt'), builtin
        if path.is_file():
            raise ValueError(f'vocabulary file {text} must end in one of {_FILE_SUFFIXES}')
        if '/' in text or os.sep in text:
            raise ValueError(f'vocabulary file not found: {text}')
        close = similar_vocabularies(text)
        hint = f' (did you mean {" or ".join(map(repr, close))}?)' if close else ''
        raise ValueError(f'unknown built-in vocabulary {text!r}{hint}; available: '
                         f'{available_vocabularies()} (or pass a .txt/.json path or a list '
                         'of class names)')
    if isinstance(classes, Sequence):
        return [(item, f'entry {i}') for i, item in enumerate(classes)], '<list>'
    raise TypeError('classes must be a vocabulary name, a .txt/.json path or a sequence of '
                    f'str, got {type(classes).__name__}')


def parse_entry(entry: str, index: int, where: str) -> Tuple[str, ...]:
    """Split one class entry into stripped synonyms.

    Args:
        entry (str): e.g. ``'sofa, couch, lounge'``.
        index (int): class index, for error messages.
        where (str): location of the entry, for error messages.

    Returns:
        Tuple[str, ...]: the synonyms, first one being the display name.

    Raises:
        TypeError: ``entry`` is not a str.
        ValueError: the name or one of its synonyms is empty.
    """
    if not isinstance(entry, str):
        raise TypeError(f'class {index} ({where}) must be a str, got '
                        f'{type(entry).__name__}: {entry!r}')
    if not entry.strip():
        raise ValueError(f'class {index} ({where}) is an empty name: {entry!r}')
    synonyms = tuple(s.strip() for s in entry.split(','))
    for k, syn in enumerate(synonyms):
        if not syn:
            raise ValueError(f'class {index} ({where}) has an empty synonym at position {k}: '
                             f'{entry!r}')
    return synonyms


def _normalise(name: str) -> str:
    """Case- and whitespace-insensitive form of a name, for duplicate checks."""
    return ' '.join(name.split()).casefold()


def _check_policy(synonyms: SynonymPolicy) -> SynonymPolicy:
    """Validate the synonym policy."""
    if isinstance(synonyms, bool):
        raise ValueError(f"synonyms must be 'first', 'all' or an int >= 1, got {synonyms!r}")
    if isinstance(synonyms, int):
        if synonyms < 1:
            raise ValueError(f"synonyms must be 'first', 'all' or an int >= 1, got {synonyms}")
        return synonyms
    if synonyms in ('first', 'all'):
        return synonyms
    raise ValueError(f"synonyms must be 'first', 'all' or an int >= 1, got {synonyms!r}")


class Vocabulary:
    """An ordered class vocabulary with a synonym policy and prompt templates.

    Args:
        classes: a built-in vocabulary name (see :func:`available_vocabularies`),
            a path to a ``.txt`` file (one class per line; blank lines and lines
            starting with ``'#'`` are ignored) or a ``.json`` file (a list of
            strings), or a sequence of class strings. An entry ``'a, b, c'``
            means synonyms a, b and c.
        synonyms: ``'first'`` (CAT-Seg: only the first synonym), ``'all'``
            (every synonym; their embeddings are averaged) or an int ``k``
            (the first ``k``).
        templates: a template-set name (``'catseg'``, ``'imagenet'``,
            ``'vild'``), a list of format strings with one ``'{}'`` each, or
            ``dict(type='descriptions', file=..., reduce='mean')``: attribute
            descriptions instead of templates (LMSeg; see
            :class:`~mmseg_escnet.text.descriptions.DescriptionPrompts`).

    Raises:
        ValueError: empty vocabulary, empty name or synonym, duplicate class,
            unknown built-in name, missing file, bad template or bad policy.
    """

    def __init__(self,
                 classes: ClassesSpec,
                 *,
                 synonyms: SynonymPolicy = 'first',
                 templates: Union[str, Sequence[str], Mapping] = 'catseg') -> None:
        self._policy = _check_policy(synonyms)
        self._descriptions: Optional[DescriptionPrompts] = None
        if isinstance(templates, Mapping):
            self._descriptions = DescriptionPrompts.from_spec(templates)
            self._templates: Tuple[str, ...] = ()
        else:
            self._templates = tuple(get_templates(templates))
        raw, self._source = load_class_entries(classes)
        if not raw:
            raise ValueError(f'vocabulary {self._source} is empty: it holds no class names')
        parsed = [parse_entry(entry, i, where) for i, (entry, where) in enumerate(raw)]

        seen = {}
        for i, syns in enumerate(parsed):
            key = tuple(_normalise(s) for s in syns)
            if key in seen:
                raise ValueError(f'duplicate class {i} {", ".join(syns)!r} in vocabulary '
                                 f'{self._source}: same as class {seen[key]} ({raw[i][1]})')
            seen[key] = i

        self._all_synonyms: Tuple[Tuple[str, ...], ...] = tuple(parsed)
        warn_long_class_names(self._all_synonyms, self._templates)  # CLIP reads 77 tokens
        if self._policy == 'all':
            self._synonyms = self._all_synonyms
        else:
            k = 1 if self._policy == 'first' else self._policy
            self._synonyms = tuple(s[:k] for s in self._all_synonyms)

    @property
    def source(self) -> str:
        """The built-in name, file path or ``'<list>'`` this vocabulary came from."""
        return self._source

    @property
    def synonym_policy(self) -> SynonymPolicy:
        """The synonym policy: ``'first'``, ``'all'`` or an int."""
        return self._policy

    @property
    def names(self) -> List[str]:
        """First synonym of every class, for display and dataset metainfo (T entries)."""
        return [s[0] for s in self._all_synonyms]

    @property
    def synonyms(self) -> List[List[str]]:
        """Synonyms used per class after the synonym policy (T lists)."""
        return [list(s) for s in self._synonyms]

    @property
    def all_synonyms(self) -> List[List[str]]:
        """Every synonym of every class, ignoring the policy (T lists)."""
        return [list(s) for s in self._all_synonyms]

    @property
    def templates(self) -> Union[List[str], Dict]:
        """The prompt templates (P entries), or the ``'descriptions'`` dict; either can be
        given back as ``templates`` to another vocabulary."""
        if self._descriptions is not None:
            return self._descriptions.spec
        return list(self._templates)

    @property
    def descriptions(self) -> Optional[DescriptionPrompts]:
        """The description prompts when the templates are ``'descriptions'``, else None."""
        return self._descriptions

    @property
    def num_prompts(self) -> int:
        """Prompt channels P per class: templates, or description channels."""
        if self._descriptions is not None:
            return self._descriptions.num_prompts
        return len(self._templates)

    def __len__(self) -> int:
        """Number of classes T."""
        return len(self._synonyms)

    def prompts(self) -> List[List[List[str]]]:
        """All prompt strings.

        Returns:
            List[List[List[str]]]: indexed ``[class][template][synonym]``, i.e.
            T x P x S_t strings, ``S_t`` being the number of synonyms used for
            class ``t``. With descriptions: ``[class][channel][string]``, the
            strings of a channel being averaged into one embedding.
        """
        if self._descriptions is not None:
            return self._descriptions.prompts(self._all_synonyms, self._synonyms)
        return [[[tpl.format(syn) for syn in syns] for tpl in self._templates]
                for syns in self._synonyms]

    @property
    def fingerprint(self) -> str:
        """A stable hash over everything that changes the embeddings.

        It covers the used synonyms of every class (in order) and the
        templates, so two vocabularies with equal fingerprints produce the same
        prompts. It does not depend on the source or on unused synonyms.
        """
        templates = (self._descriptions.fingerprint_payload()
                     if self._descriptions is not None else self.templates)
        payload = json.dumps({'synonyms': self.synonyms, 'templates': templates},
                             ensure_ascii=False, separators=(',', ':'), sort_keys=True)
        return hashlib.sha256(payload.encode('utf-8')).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._synonyms == other._synonyms and self._prompt_key() == other._prompt_key()

    def __hash__(self) -> int:
        return hash((self._synonyms, self._prompt_key()))

    def _templates_repr(self) -> str:
        if self._descriptions is not None:
            return f'templates={self._descriptions!r}'
        return f'num_templates={len(self._templates)}'

    def _prompt_key(self) -> Tuple:
        if self._descriptions is None:
            return self._templates
        return tuple(sorted(self._descriptions.spec.items()))

    def __repr__(self) -> str:
        head = ', '.join(repr(n) for n in self.names[:3])
        more = ', ...' if len(self) > 3 else ''
        return (f'{type(self).__name__}(source={self._source!r}, num_classes={len(self)}, '
                f'synonyms={self._policy!r}, {self._templates_repr()}, '
                f'names=[{head}{more}], fingerprint={self._fingerprint_repr()})')

    def _fingerprint_repr(self) -> str:
        try:
            return repr(self.fingerprint)
        except (OSError, ValueError):  # a descriptions file yet to be written, or a bad one
            return 'None'
