"""Write LMSeg attribute descriptions with any OpenAI-compatible chat API.

For every class of a vocabulary and every attribute (color, shape, texture) one chat request asks
one question (:data:`QUESTIONS`, after the :data:`SYSTEM_PROMPT`); the answer must pass
:func:`~mmseg_escnet.text.descriptions.check_description` (one sentence within CLIP's 77 tokens).
The requests go through the official ``openai`` client (``pip install openai``), imported only
when a client is made, so this module imports without it and without a network.

Failures: a timeout, a connection error, HTTP 408/409/429/5xx or an invalid answer (a body that
is not JSON included) is retried with exponential backoff (:class:`RetryPolicy`); any other HTTP
error (401, 404...) stops at once. Answers quoted in messages are cut to 300 characters.
The output file is rewritten atomically after every finished class, so a stopped run loses at
most the class it was on; rerunning the same command resumes. A file written with another model,
prompt, temperature or vocabulary is refused unless ``force_mix``.

Used by ``tools/generate_descriptions.py``; docs/lmseg.md.
"""
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .descriptions import (ATTRIBUTES, DescriptionSet, check_description, parse_descriptions,
                           save_descriptions, short_repr)

__all__ = ['SYSTEM_PROMPT', 'QUESTIONS', 'SYNONYM_NOTE', 'GENERATOR', 'PLACEHOLDER_API_KEY',
           'DescriptionGenerationError', 'RetryPolicy', 'prompt_meta', 'class_question',
           'build_messages', 'clean_answer', 'resolve_api_key', 'make_client', 'ask_description',
           'generate_descriptions']

#: The system message of every request.
SYSTEM_PROMPT = ('You describe the visual appearance of things for an image-recognition system. '
                 'Answer with exactly one short sentence.')
#: One question per attribute; ``{name}`` is the class name (with :data:`SYNONYM_NOTE`).
QUESTIONS: Dict[str, str] = {
    'color': 'What color is a {name} typically? Answer in one short sentence that names the '
             '{name}.',
    'shape': 'What shape and size does a {name} typically have? Answer in one short sentence '
             'that names the {name}.',
    'texture': 'What texture or material does a {name} typically have? Answer in one short '
               'sentence that names the {name}.',
}
#: Appended to the class name of a class with synonyms (``'pot (also called: flowerpot)'``).
SYNONYM_NOTE = ' (also called: {others})'
GENERATOR = 'tools/generate_descriptions.py'
#: The API key sent to a ``--base-url`` server when the key's environment variable is unset.
PLACEHOLDER_API_KEY = 'no-key-needed'
# HTTP statuses worth retrying: request timeout, conflict, rate limit, server errors (>= 500).
_RETRY_STATUSES = (408, 409, 429)
# Meta keys that shape the answers: a file written with other values is not extended.
_MATCHED_META = ('model', 'prompt', 'temperature', 'vocabulary')
# What to check after a non-retryable HTTP error.
_CHECK = {401: 'the API key (--api-key-env)', 403: 'the API key (--api-key-env) and its access',
          404: 'the model name (--model) and --base-url'}
# Finish reasons of an answer that was stopped before its end.
_CUT_OFF = ('length', 'content_filter')
_THINK = re.compile(r'^\s*<think>.*?</think>', re.DOTALL)
# Characters of an answer quoted in a message (answers can be megabytes).
_QUOTE = 300
# Characters stripped from both ends of an answer.
_QUOTES = ' \t\r\n"\'`\u201c\u201d\u2018\u2019'


class DescriptionGenerationError(RuntimeError):
    """Generation stopped: the message says why and for which class and attribute."""


@dataclass
class RetryPolicy:
    """How often and how patiently one question is retried.

    Attributes:
        max_retries (int): retries after the first attempt (``0``: one attempt only).
        delay (float): seconds before the first retry; doubled before every next one.
        max_delay (float): the longest wait between two attempts, in seconds.
    """
    max_retries: int = 5
    delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f'max_retries must be an int >= 0, got {self.max_retries!r}')
        if self.delay < 0 or self.max_delay < 0:
            raise ValueError(f'retry delays must be >= 0, got {self.delay} and {self.max_delay}')

    def wait(self, retry: int, hint: Optional[float] = None) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...).

        Args:
            retry (int): the retry about to be made.
            hint (float, optional): the server's Retry-After, honoured up to ``max_delay``.
        """
        wait = self.delay * 2 ** (retry - 1)
        if hint is not None:
            wait = max(wait, hint)
        return min(wait, self.max_delay)


def prompt_meta() -> Dict[str, Any]:
    """The prompt as recorded in a file's ``meta['prompt']``."""
    return dict(system=SYSTEM_PROMPT, questions=dict(QUESTIONS), synonym_note=SYNONYM_NOTE)


def class_question(attribute: str, synonyms: Sequence[str]) -> str:
    """The question about ``attribute`` of the class with these synonyms (display name first)."""
    name = synonyms[0]
    if len(synonyms) > 1:
        name += SYNONYM_NOTE.format(others=', '.join(synonyms[1:]))
    return QUESTIONS[attribute].format(name=name)


def build_messages(attribute: str, synonyms: Sequence[str]) -> List[Dict[str, str]]:
    """The chat messages of one request: the system prompt and one question."""
    return [dict(role='system', content=SYSTEM_PROMPT),
            dict(role='user', content=class_question(attribute, synonyms))]


def clean_answer(text: Optional[str]) -> str:
    """An answer without a leading ``<think>...</think>`` block (reasoning models on local
    servers) and without surrounding white space and quotes (``None`` -> ``''``)."""
    return _THINK.sub('', text or '').strip(_QUOTES)


def resolve_api_key(env_name: str, base_url: Optional[str],
                    environ: Optional[Mapping[str, str]] = None) -> str:
    """The API key from the environment variable ``env_name``.

    Args:
        env_name (str): the variable (``OPENAI_API_KEY`` by default in the tool).
        base_url (str, optional): the server; a local server needs no key.
        environ (Mapping, optional): the environment (default: ``os.environ``).

    Returns:
        str: the key, or :data:`PLACEHOLDER_API_KEY` when the variable is unset or empty and a
        ``base_url`` is given.

    Raises:
        ValueError: the variable is unset or empty and no ``base_url`` is given.
    """
    key = (os.environ if environ is None else environ).get(env_name, '').strip()
    if key:
        return key
    if base_url:
        return PLACEHOLDER_API_KEY
    raise ValueError(f'no API key: the environment variable {env_name} is not set (set it, name '
                     'another variable with --api-key-env, or give --base-url of a server that '
                     'needs no key)')


def _openai():
    try:
        import openai
    except ImportError as err:
        raise ImportError('generating descriptions needs the openai client library: '
                          'pip install openai') from err
    return openai


def make_client(base_url: Optional[str], api_key: str, timeout: float):
    """An ``openai.OpenAI`` client that never retries by itself (:func:`ask_description` does).

    Args:
        base_url (str, optional): an OpenAI-compatible server (``http://host:port/v1``); None
            for OpenAI's (or ``OPENAI_BASE_URL``).
        api_key (str): the key (see :func:`resolve_api_key`).
        timeout (float): seconds one request may take.
    """
    if not timeout > 0:
        raise ValueError(f'the timeout must be > 0 seconds, got {timeout}')
    return _openai().OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


def _retry_after(error: Exception) -> Optional[float]:
    """The Retry-After seconds of an HTTP error response, if it gives a number."""
    response = getattr(error, 'response', None)
    try:
        return max(0.0, float(response.headers.get('retry-after')))
    except (AttributeError, TypeError, ValueError):
        return None


def _status_message(error: Exception) -> str:
    """``HTTP 404: <the server's message>`` of an ``openai.APIStatusError``."""
    message = re.sub(r'^Error code: \d+( - )?', '', str(getattr(error, 'message', error)))
    body = getattr(error, 'body', None)
    if not message and isinstance(body, str):  # not JSON: the start of the body
        message = body[:_QUOTE]
    message = ' '.join(message[:20 * _QUOTE].split())[:_QUOTE] or '(no message)'
    return f'HTTP {getattr(error, "status_code", "?")}: {message}'


def ask_description(client, *, model: str, synonyms: Sequence[str], attribute: str,
                    temperature: Optional[float] = None, retry: Optional[RetryPolicy] = None,
                    sleep: Callable[[float], None] = time.sleep) -> str:
    """Ask for one description until an answer is valid or the retries run out.

    Args:
        client: an ``openai.OpenAI`` client (see :func:`make_client`).
        model (str): the chat model.
        synonyms (Sequence[str]): the class (display name first).
        attribute (str): one of :data:`QUESTIONS`.
        temperature (float, optional): sampling temperature (None: the server's default).
        retry (RetryPolicy, optional): retries and backoff (default: ``RetryPolicy()``).
        sleep (callable): waits between attempts (replaceable in tests).

    Returns:
        str: the checked description.

    Raises:
        DescriptionGenerationError: a non-retryable HTTP error, or no valid answer after the
            retries; the message names the class, the attribute and the last problem.
    """
    openai = _openai()
    retry = RetryPolicy() if retry is None else retry
    where = f'the {attribute} description of {synonyms[0]!r}'
    options = {} if temperature is None else dict(temperature=temperature)
    problem, hint = '', None
    for attempt in range(retry.max_retries + 1):
        if attempt:
            sleep(retry.wait(attempt, hint))
        hint = None
        try:
            response = client.chat.completions.create(
                model=model, messages=build_messages(attribute, synonyms), **options)
        except openai.APITimeoutError:
            problem = 'the request timed out (see --timeout)'
            continue
        except openai.APIConnectionError as err:
            problem = f'could not reach the server: {err.__cause__ or err}'
            continue
        except openai.APIStatusError as err:
            if err.status_code in _RETRY_STATUSES or err.status_code >= 500:
                problem, hint = _status_message(err), _retry_after(err)
                continue
            check = _CHECK.get(err.status_code, 'the server\'s message, --model and --temperature')
            raise DescriptionGenerationError(
                f'the server refused the request for {where} ({_status_message(err)}); not '
                f'retried: check {check}') from None
        except openai.OpenAIError as err:
            raise DescriptionGenerationError(
                f'the request for {where} failed: {type(err).__name__}: '
                f'{short_repr(str(err), _QUOTE)}') from None
        except json.JSONDecodeError as err:  # a 200 whose body is not JSON (a proxy's page...)
            problem = (f'the server answered with invalid JSON ({err.msg} at character '
                       f'{err.pos}): {short_repr(err.doc, _QUOTE)}')
            continue
        choices = getattr(response, 'choices', None)
        choice = choices[0] if isinstance(choices, list) and choices else None
        if getattr(choice, 'message', None) is None:
            problem = f'the response holds no answer: {short_repr(str(response), _QUOTE)}'
            continue
        if choice.finish_reason in _CUT_OFF:
            problem = (f'the answer was cut off (finish_reason {choice.finish_reason!r}): '
                       f'{short_repr(choice.message.content, _QUOTE)}')
            continue
        try:
            return check_description(clean_answer(choice.message.content),
                                     class_name=synonyms[0], attribute=attribute)
        except ValueError as err:
            problem = f'invalid answer: {err}'
    raise DescriptionGenerationError(
        f'gave up on {where} after {retry.max_retries + 1} attempt(s); last problem: {problem}')


def _read_existing(path: Path) -> Optional[DescriptionSet]:
    """The descriptions file at ``path``, None if there is none; anything else is refused."""
    if not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f'--out {path} exists and is not a file')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'--out {path} exists and is not a descriptions file (not JSON: '
                         f'{err}); not overwritten: choose another --out or remove it') from None
    try:
        return parse_descriptions(data, str(path))
    except ValueError as err:
        raise ValueError(f'{err}; not overwritten: choose another --out or remove it') from None


def _merged_meta(existing: Optional[DescriptionSet], meta: Dict[str, Any], path: Path,
                 force_mix: bool) -> Dict[str, Any]:
    """``meta`` for a file that already holds ``existing``; a mismatch is refused unless
    ``force_mix``, which records the earlier runs' meta under ``'previous_runs'``."""
    if existing is None or not existing.descriptions:
        return meta
    if tuple(existing.attributes) != ATTRIBUTES:
        raise ValueError(f'{path} has the attributes {list(existing.attributes)}, not '
                         f'{list(ATTRIBUTES)}; choose another --out')
    old = existing.meta
    differ = [k for k in _MATCHED_META if old.get(k) != meta.get(k)]
    if differ and not force_mix:
        shown = '; '.join(f'{k}: {old.get(k)!r} in the file, {meta.get(k)!r} now'
                          for k in differ)
        raise ValueError(f'{path} was generated with another {", ".join(differ)} ({shown}); '
                         'refusing to mix descriptions: choose another --out, or pass '
                         '--force-mix to add to it anyway')
    previous = list(old.get('previous_runs', []))
    if differ:
        previous.append({k: v for k, v in old.items() if k != 'previous_runs'})
    return dict(meta, previous_runs=previous) if previous else meta


def generate_descriptions(all_synonyms: Sequence[Sequence[str]],
                          out: Union[str, 'os.PathLike[str]'], *, client, model: str,
                          vocabulary: str, base_url: Optional[str] = None,
                          temperature: Optional[float] = None,
                          retry: Optional[RetryPolicy] = None, force_mix: bool = False,
                          log: Callable[[str], None] = print,
                          sleep: Callable[[float], None] = time.sleep) -> DescriptionSet:
    """Describe every class not yet in ``out``, saving ``out`` after every finished class.

    Args:
        all_synonyms: every class's synonyms (``Vocabulary.all_synonyms``); a class is keyed
            ``', '.join(synonyms)`` in the file.
        out (str | PathLike): the descriptions file, written or resumed.
        client: an ``openai.OpenAI`` client (see :func:`make_client`).
        model (str): the chat model.
        vocabulary (str): what the classes came from (recorded, and checked on resume).
        base_url (str, optional): the server (recorded).
        temperature (float, optional): sampling temperature (None: the server's default).
        retry (RetryPolicy, optional): retries and backoff of each question.
        force_mix (bool): add to a file made with other settings (recorded in its meta).
        log (callable): prints the progress, one line per class.
        sleep (callable): waits between attempts.

    Returns:
        DescriptionSet: what ``out`` holds at the end.

    Raises:
        ValueError: ``out`` is not a descriptions file, or was made with other settings.
        DescriptionGenerationError: a class could not be described; the classes finished before
            it are in ``out`` and a rerun resumes after them.
    """
    if temperature is not None and not 0 <= temperature <= 2:
        raise ValueError(f'the temperature must be in [0, 2], got {temperature}')
    path = Path(out)
    meta = dict(model=model, base_url=base_url, vocabulary=vocabulary, generator=GENERATOR,
                temperature=temperature, prompt=prompt_meta())
    existing = _read_existing(path)
    meta = _merged_meta(existing, meta, path, force_mix)
    table = dict(existing.descriptions) if existing is not None else {}
    result = DescriptionSet(table, ATTRIBUTES, meta, str(path))
    keys = [', '.join(synonyms) for synonyms in all_synonyms]
    todo = [i for i, key in enumerate(keys) if key not in table]
    total = len(keys)
    if len(todo) < total:
        log(f'{total - len(todo)} of {total} classes already in {path}; '
            f'{len(todo)} to generate')
    for i in todo:
        synonyms = all_synonyms[i]
        log(f'[{i + 1}/{total}] {synonyms[0]}')
        try:
            entry = {a: ask_description(client, model=model, synonyms=synonyms, attribute=a,
                                        temperature=temperature, retry=retry, sleep=sleep)
                     for a in ATTRIBUTES}
        except DescriptionGenerationError as err:
            done = sum(key in table for key in keys)
            saved = (f'Saved so far: {done} of {total} classes in {path}; rerun the same command '
                     'to resume.' if done else 'Nothing was saved.')
            raise DescriptionGenerationError(f'{err}. {saved}') from None
        table[keys[i]] = entry
        save_descriptions(path, result)
    log(f'{total} of {total} classes described in {path}')
    return result
