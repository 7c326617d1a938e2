"""Attribute descriptions of classes, the prompts of LMSeg (Tang et al., arXiv 2412.00364).

LMSeg replaces fixed prompt templates by descriptions an LLM writes for every class, one per
visual attribute: color, shape/size and texture/material. ``tools/generate_descriptions.py``
writes them with any OpenAI-compatible chat API; this module reads, checks and turns them into
prompts (docs/lmseg.md).

File format (JSON, UTF-8)::

    {
      "format": "mmseg_escnet.descriptions",
      "version": 1,
      "attributes": ["color", "shape", "texture"],
      "meta": {"model": "...", "prompt": {...}, "vocabulary": "...", ...},
      "descriptions": {
        "<class entry>": {"color": "<one sentence>", "shape": "...", "texture": "..."},
        ...
      }
    }

A class is keyed by its vocabulary entry (all synonyms, ``'pot, flowerpot'``); a key equal to the
display name (``'pot'``) is found too when no full-entry key exists. ``meta`` is free-form (the
generator records the model, the prompt text and the vocabulary).

As a vocabulary's templates, ``dict(type='descriptions', file=..., reduce='mean')`` prompts class
t with its descriptions: ``'mean'`` averages their L2-normalised embeddings into one (P = 1),
``'none'`` keeps one prompt channel per attribute (P = 3). ``class_name_template`` adds the class
name in that template (to the mean, or as one more channel). A class the file does not describe
is prompted with the class-name template in every channel, with a warning that names it.
"""
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .templates import CATSEG_TEMPLATES, check_template

__all__ = ['ATTRIBUTES', 'DescriptionSet', 'DescriptionPrompts', 'check_description',
           'clip_length_problem', 'count_clip_tokens', 'short_repr', 'warn_long_class_names',
           'load_descriptions', 'save_descriptions', 'resolve_descriptions_file',
           'available_description_files']

FORMAT_NAME = 'mmseg_escnet.descriptions'
FORMAT_VERSION = 1
#: LMSeg's attributes: color, shape/size, texture/material.
ATTRIBUTES: Tuple[str, ...] = ('color', 'shape', 'texture')
#: Built-in description files (``file='synthetic_shapes'``).
DESCRIPTION_DIR = Path(__file__).resolve().parent / 'descriptions'
#: CLIP's text context, start and end tokens included.
CLIP_CONTEXT_LENGTH = 77
REDUCTIONS = ('mean', 'none')
# No CLIP BPE token spans more characters (the longest is 28 plus '</w>'): a text with more
# non-space characters than this times the context is too long without counting its tokens.
_MAX_TOKEN_CHARS = 32
# a sentence ends at . ! or ? followed by white space and more text
_SENTENCE_BREAK = re.compile(r'[.!?]["\')\]]*\s+(?=\S)')


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def count_clip_tokens(text: str) -> int:
    """CLIP BPE tokens of ``text`` with the start and end tokens (open_clip's tokenizer)."""
    return len(_tokenizer().encode(text)) + 2


def short_repr(text: object, limit: int = 200) -> str:
    """``repr`` of a value cut to about ``limit`` characters, for messages quoting untrusted text.

    Args:
        text: What to quote (a long string from a server or a file).
        limit (int): Characters of ``str(text)`` kept.

    Returns:
        str: ``repr(text)``, or ``repr(text[:limit])`` followed by ``'... (N characters)'``.
    """
    if not isinstance(text, str):
        text = str(text) if len(repr(text)) > limit else repr(text)
        if len(text) <= limit:
            return text
    elif len(text) <= limit:
        return repr(text)
    return f'{text[:limit]!r}... ({len(text):,} characters)'


def clip_length_problem(text: str, what: str,
                        context_length: int = CLIP_CONTEXT_LENGTH) -> Optional[str]:
    """What is wrong with a text longer than CLIP's context, or None if it fits.

    Args:
        text (str): A prompt or description.
        what (str): What it is, for the message (``"the color description of 'sky'"``).
        context_length (int): CLIP's context length (tokens with start and end).

    Returns:
        str | None: ``'<what> has N CLIP tokens, more than CLIP's context of 77 (it would be
        truncated): <text, cut to 200 characters>'``.
    """
    if len(text.encode('utf-8')) + 2 <= context_length:  # every token holds at least one byte
        return None
    if len(''.join(text.split())) > _MAX_TOKEN_CHARS * context_length:  # no need to count
        count = f'{len(text):,} characters, far'
    else:
        tokens = count_clip_tokens(text)
        if tokens <= context_length:
            return None
        count = f'{tokens} CLIP tokens,'
    return (f"{what} has {count} more than CLIP's context of {context_length} tokens (it would "
            f'be truncated): {short_repr(text)}')


def check_description(text: object, *, class_name: str, attribute: str,
                      context_length: int = CLIP_CONTEXT_LENGTH) -> str:
    """Check one description and return it with its white space collapsed.

    Args:
        text: the description.
        class_name (str): its class, for the messages.
        attribute (str): its attribute, for the messages.
        context_length (int): CLIP's context length (tokens with start and end).

    Returns:
        str: the description, stripped, inner white space collapsed to single spaces.

    Raises:
        ValueError: not a string, empty, more than one sentence, or longer than the context.
    """
    where = f'the {attribute} description of {class_name!r}'
    if not isinstance(text, str):
        raise ValueError(f'{where} must be a string, got {type(text).__name__}: '
                         f'{short_repr(text)}')
    text = ' '.join(text.split())
    if not text:
        raise ValueError(f'{where} is empty')
    if _SENTENCE_BREAK.search(text):
        raise ValueError(f'{where} must be one sentence, got {short_repr(text)}')
    problem = clip_length_problem(text, where, context_length)
    if problem is not None:
        raise ValueError(problem)
    return text


_WARNED_LONG_NAMES: set = set()


def warn_long_class_names(synonyms: Sequence[Sequence[str]], templates: Sequence[str]) -> None:
    """Warn once per class name whose prompt is longer than CLIP's context (CLIP truncates it).

    The longest template is checked (``'{}'`` alone when there are none, as with descriptions).

    Args:
        synonyms (Sequence[Sequence[str]]): Every synonym of every class.
        templates (Sequence[str]): The prompt templates with ``{}``.
    """
    template = max(templates, key=len) if templates else '{}'
    for name in (name for names in synonyms for name in names):
        if name in _WARNED_LONG_NAMES:
            continue
        problem = clip_length_problem(template.format(name),
                                      f'the prompt of class {short_repr(name, 60)}')
        if problem is not None:
            _WARNED_LONG_NAMES.add(name)
            warnings.warn(f'{problem}; CLIP only reads its first {CLIP_CONTEXT_LENGTH} tokens, so '
                          'the rest of the name is ignored: shorten it', UserWarning, stacklevel=3)


def available_description_files() -> List[str]:
    """Names of the built-in description files."""
    return sorted(p.stem for p in DESCRIPTION_DIR.glob('*.json'))


def resolve_descriptions_file(file: Union[str, 'os.PathLike[str]']) -> Path:
    """A built-in description-file name (``'synthetic_shapes'``) or a path -> an existing file.

    Raises:
        FileNotFoundError: neither; the message says how to generate the file.
    """
    text = os.fspath(file)
    builtin = DESCRIPTION_DIR / f'{text}.json'
    if os.sep not in text and '/' not in text and builtin.is_file():
        return builtin
    path = Path(text)
    if path.is_file():
        return path
    raise FileNotFoundError(
        f'descriptions file not found: {text} (built-in: {available_description_files()}). '
        'Write one with your LLM: python tools/generate_descriptions.py --vocab VOCABULARY '
        f'--out {text} --model MODEL [--base-url URL] (docs/lmseg.md)')


@dataclass
class DescriptionSet:
    """The content of a descriptions file.

    Attributes:
        descriptions (dict): ``{class entry: {attribute: sentence}}``.
        attributes (tuple[str, ...]): the attributes every class has, in order.
        meta (dict): free-form metadata (model, prompt, vocabulary, ...).
        source (str): the file it was read from ('' if built in memory).
    """
    descriptions: Dict[str, Dict[str, str]]
    attributes: Tuple[str, ...] = ATTRIBUTES
    meta: Dict = field(default_factory=dict)
    source: str = ''

    def lookup(self, synonyms: Sequence[str]) -> Optional[Dict[str, str]]:
        """The descriptions of a class given its synonyms: by full entry, else display name."""
        found = self.descriptions.get(', '.join(synonyms))
        return found if found is not None else self.descriptions.get(synonyms[0])

    def digest(self) -> str:
        """A hash of the descriptions and attributes (not of the metadata)."""
        payload = json.dumps([self.attributes, self.descriptions], ensure_ascii=False,
                             sort_keys=True)
        return hashlib.sha256(payload.encode('utf-8')).hexdigest()[:16]


def _check_attributes(attributes: object, where: str) -> Tuple[str, ...]:
    if (not isinstance(attributes, (list, tuple)) or not attributes
            or not all(isinstance(a, str) and a for a in attributes)
            or len(set(attributes)) != len(attributes)):
        raise ValueError(f'{where}: "attributes" must be a non-empty list of distinct names, '
                         f'got {attributes!r}')
    return tuple(attributes)


def parse_descriptions(data: object, where: str = '<descriptions>') -> DescriptionSet:
    """Check the JSON content of a descriptions file (see the module docstring).

    Raises:
        ValueError: a wrong format tag or version, a class without one of the attributes, an
            empty or too long description; the message names the class and attribute.
    """
    if not isinstance(data, Mapping) or data.get('format') != FORMAT_NAME:
        raise ValueError(f'{where}: not a descriptions file (expected a JSON object with '
                         f'"format": "{FORMAT_NAME}")')
    if data.get('version') != FORMAT_VERSION:
        raise ValueError(f'{where}: descriptions format version {data.get("version")!r} is not '
                         f'supported (expected {FORMAT_VERSION})')
    attributes = _check_attributes(data.get('attributes', list(ATTRIBUTES)), where)
    table = data.get('descriptions')
    if not isinstance(table, Mapping):
        raise ValueError(f'{where}: "descriptions" must map class names to '
                         f'{{attribute: sentence}} objects')
    meta = data.get('meta', {})
    if not isinstance(meta, Mapping):
        raise ValueError(f'{where}: "meta" must be an object, got {type(meta).__name__}')
    checked = {}
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f'{where}: class {name!r} must map attributes to sentences, got '
                             f'{type(entry).__name__}')
        missing = [a for a in attributes if a not in entry]
        if missing:
            raise ValueError(f'{where}: class {name!r} lacks the attribute(s) {missing}')
        try:
            checked[name] = {a: check_description(entry[a], class_name=name, attribute=a)
                             for a in attributes}
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from err
    return DescriptionSet(checked, attributes, dict(meta), where)


def load_descriptions(file: Union[str, 'os.PathLike[str]']) -> DescriptionSet:
    """Read and check a descriptions file (a path or a built-in name).

    Raises:
        FileNotFoundError: no such file (the message gives the generation command).
        ValueError: not JSON, or not in the format (see :func:`parse_descriptions`).
    """
    path = resolve_descriptions_file(file)
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'descriptions file {path} is not valid JSON: {err}') from err
    return parse_descriptions(data, str(path))


def save_descriptions(path: Union[str, 'os.PathLike[str]'], descriptions: DescriptionSet) -> None:
    """Write ``descriptions`` atomically (a temporary file renamed over ``path``), so an
    interrupted write never leaves a truncated file."""
    data = dict(format=FORMAT_NAME, version=FORMAT_VERSION,
                attributes=list(descriptions.attributes), meta=descriptions.meta,
                descriptions=descriptions.descriptions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class DescriptionPrompts:
    """Turns a vocabulary's classes into description prompts (the ``'descriptions'`` templates).

    The file is read on first use, so a config naming a file that is yet to be generated builds.

    Args:
        file (str): a descriptions file or a built-in name (``'synthetic_shapes'``).
        reduce (str): ``'mean'`` (one prompt channel: the descriptions, and the class name if
            ``class_name_template`` is set, averaged) or ``'none'`` (one channel per attribute,
            plus one for the class name).
        class_name_template (str, optional): a template with one ``'{}'`` to add the class name.
        fallback_template (str): the class-name template of classes without descriptions.
    """
    TYPE = 'descriptions'

    def __init__(self, *, file: str, reduce: str = 'mean',
                 class_name_template: Optional[str] = None,
                 fallback_template: str = CATSEG_TEMPLATES[0]) -> None:
        if not isinstance(file, (str, os.PathLike)) or not os.fspath(file):
            raise ValueError(f'descriptions templates need a file, got {file!r}')
        if reduce not in REDUCTIONS:
            raise ValueError(f'descriptions reduce must be one of {REDUCTIONS}, got {reduce!r}')
        self.file = os.fspath(file)
        self.reduce = reduce
        self.class_name_template = (None if class_name_template is None else
                                    check_template(class_name_template))
        self.fallback_template = check_template(fallback_template)
        self._set: Optional[DescriptionSet] = None
        self._digest: Optional[str] = None

    @classmethod
    def from_spec(cls, spec: Mapping) -> 'DescriptionPrompts':
        """Build from ``dict(type='descriptions', file=..., ...)``; unknown keys are refused."""
        spec = dict(spec)
        kind = spec.pop('type', None)
        if kind != cls.TYPE:
            raise ValueError(f"templates given as a dict need type='{cls.TYPE}', got {kind!r}")
        try:
            return cls(**spec)
        except TypeError as err:
            raise ValueError(f'descriptions templates: {err} (keys: file, reduce, '
                             'class_name_template, fallback_template)') from err

    @property
    def spec(self) -> dict:
        """The config dict this was built from (with defaults filled in)."""
        return dict(type=self.TYPE, file=self.file, reduce=self.reduce,
                    class_name_template=self.class_name_template,
                    fallback_template=self.fallback_template)

    @property
    def description_set(self) -> DescriptionSet:
        """The file's content, read once."""
        if self._set is None:
            self._set = load_descriptions(self.file)
        return self._set

    @property
    def num_prompts(self) -> int:
        """Prompt channels P (needs the file for ``reduce='none'``)."""
        if self.reduce == 'mean':
            return 1
        return len(self.description_set.attributes) + (self.class_name_template is not None)

    def prompts(self, all_synonyms: Sequence[Sequence[str]],
                used_synonyms: Sequence[Sequence[str]]) -> List[List[List[str]]]:
        """Prompts ``[class][channel][string]`` (T x P x S_t), see the class docstring.

        Args:
            all_synonyms: every synonym of every class (finds the class in the file).
            used_synonyms: the synonyms the vocabulary's policy uses (for class-name prompts).

        Warns:
            UserWarning: naming the classes the file does not describe.
        """
        descriptions = self.description_set
        prompts, missing = [], []
        for synonyms, used in zip(all_synonyms, used_synonyms):
            found = descriptions.lookup(synonyms)
            if found is None:
                missing.append(synonyms[0])
                names = [self.fallback_template.format(s) for s in used]
                prompts.append([list(names) for _ in range(self.num_prompts)])
                continue
            channels = [[found[a]] for a in descriptions.attributes]
            if self.class_name_template is not None:
                channels.append([self.class_name_template.format(s) for s in used])
            if self.reduce == 'mean':
                channels = [[text for channel in channels for text in channel]]
            prompts.append(channels)
        if missing:
            shown = ', '.join(map(repr, missing[:20])) + (' ...' if len(missing) > 20 else '')
            warnings.warn(f'{descriptions.source}: no descriptions for {len(missing)} class(es), '
                          f'prompted with {self.fallback_template!r} instead: {shown}',
                          stacklevel=2)
        return prompts

    def fingerprint_payload(self) -> dict:
        """What changes the embeddings: the settings and the descriptions' digest (computed once:
        the class embedder asks on every forward)."""
        if self._digest is None:
            self._digest = self.description_set.digest()
        return dict(self.spec, file=None, digest=self._digest)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(file={self.file!r}, reduce={self.reduce!r})'
