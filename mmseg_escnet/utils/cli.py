"""One-line errors for the command-line tools.

Every tool's entry point is ``sys.exit(run_cli(main, 'tools/x.py'))``: an error becomes one line
on stderr, ``<prog>: error: <what went wrong>``, and exit status 1; ``--debug`` (accepted by every
tool) shows the traceback instead.
"""
import argparse
import json
import os
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

__all__ = ['one_line', 'run_cli', 'ensure_writable_dir', 'write_json', 'positive_int',
           'add_prompting_arguments', 'prompting_overrides']

# Exception types whose message says everything; others are prefixed with their type's name.
_PLAIN = (ValueError, OSError, KeyError, LookupError, RuntimeError, TypeError)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (KeyError's quotes removed)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = ' '.join(str(message).split()) or type(error).__name__
    return text if isinstance(error, _PLAIN) else f'{type(error).__name__}: {text}'


def run_cli(main: Callable[[Optional[Sequence[str]]], object], prog: str,
            argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)`` and turn an error into one line and exit status 1.

    Args:
        main (callable): The tool's main function; it parses ``argv`` itself (and must accept
            ``--debug``). An int it returns is the exit status; anything else means 0.
        prog (str): The tool's name in messages, e.g. ``'tools/test.py'``.
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).

    Returns:
        int: The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = main(args)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (every failure becomes one line)
        if '--debug' in args:
            raise
        print(f'{prog}: error: {one_line(error)} (--debug shows the traceback)', file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


def ensure_writable_dir(folder: str, what: str) -> str:
    """Create ``folder`` if needed and check a file can be written in it, before any work.

    Args:
        folder (str): The output folder ('' means the current one).
        what (str): What goes there, for the message (e.g. ``'--out'``).

    Returns:
        str: ``folder``.

    Raises:
        OSError: naming the folder and what it is for, when it cannot be created or written.
    """
    target = folder or '.'
    try:
        os.makedirs(target, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as error:
        raise OSError(f'cannot write {what} into {target}: {error.strerror or error}') from None
    return folder


def write_json(path: Optional[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` (a tool's ``--json``); nothing if None."""
    if path:
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=2)


def positive_int(text: str) -> int:
    """An argparse ``type``: a positive int (an image side, a count).

    Raises:
        argparse.ArgumentTypeError: for anything else, quoting it.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive int, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive int, got {value}')
    return value


def add_prompting_arguments(parser: argparse.ArgumentParser) -> None:
    """``--synonyms`` and ``--templates``: how the tool prompts its vocabulary.

    Not given, the model's own policy applies (its training vocabulary's, as in ``tools/test.py``);
    given, they override it with the names :class:`~mmseg_escnet.text.Vocabulary`, the configs and
    :class:`~mmseg_escnet.apis.OpenVocabInferencer` use. Read them back with :func:`prompting_overrides`.
    """
    parser.add_argument('--synonyms', default=None,
                        help="synonym policy: 'first', 'all' or the first k (default: the model's, "
                        'as in tools/test.py)')
    parser.add_argument('--templates', default=None,
                        help="a built-in template set, e.g. 'catseg' or 'imagenet' (default: the "
                        "model's)")


def prompting_overrides(args: argparse.Namespace) -> dict:
    """The ``synonyms`` / ``templates`` keyword arguments of the inferencer from
    :func:`add_prompting_arguments` (None: the model's own).

    Raises:
        ValueError: a synonym policy other than 'first', 'all' or a positive int.
    """
    synonyms = args.synonyms
    if synonyms is not None and synonyms not in ('first', 'all'):
        try:
            synonyms = int(synonyms)
        except ValueError:
            raise ValueError(f"--synonyms must be 'first', 'all' or a positive int, got "
                             f'{synonyms!r}') from None
        if synonyms < 1:
            raise ValueError(f"--synonyms must be 'first', 'all' or a positive int, got {synonyms}")
    return dict(synonyms=synonyms, templates=args.templates)
