"""Write LMSeg attribute descriptions of a vocabulary's classes with an OpenAI-compatible chat API.

    python tools/generate_descriptions.py --vocab ade150 --out data/descriptions/ade150.json \
        --model MODEL [--base-url http://localhost:8000/v1] [--api-key-env OPENAI_API_KEY] \
        [--max-retries 5] [--retry-delay 1] [--timeout 60] [--temperature T] [--force-mix]

One chat request per class and attribute (color, shape, texture), each answer checked: one
sentence within CLIP's 77 tokens. Timeouts, connection errors, HTTP 429/5xx and invalid answers
are retried with exponential backoff; other HTTP errors (a wrong key or model) stop at once.
``--out`` is saved after every finished class: rerun the same command to resume after a stop.
A file written with another model, prompt, temperature or vocabulary is refused (``--force-mix``
adds to it anyway and records the earlier settings). The API key is read from the environment
variable ``--api-key-env`` names; a ``--base-url`` server gets a placeholder when it is unset.
Errors are one line on stderr with exit status 1 (``--debug`` shows the traceback). Use the file
as ``templates=dict(type='descriptions', file=OUT)`` (docs/lmseg.md).
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from mmseg_escnet.text import Vocabulary, parse_vocabulary_text
from mmseg_escnet.text.description_generator import (RetryPolicy, generate_descriptions,
                                                     make_client, resolve_api_key)
from mmseg_escnet.utils import ensure_writable_dir, run_cli

PROG = 'tools/generate_descriptions.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Write attribute descriptions (LMSeg) with an OpenAI-compatible '
        'chat API')
    parser.add_argument('--vocab', required=True, help='a built-in vocabulary name (ade150...), '
                        'a .txt/.json file, or "cat,dog|puppy,sky"')
    parser.add_argument('--out', required=True, help='the descriptions file (.json); an existing '
                        'one is resumed')
    parser.add_argument('--model', required=True, help='the chat model, e.g. gpt-4o-mini')
    parser.add_argument('--base-url', default=None, help='an OpenAI-compatible server, e.g. '
                        'http://localhost:8000/v1 (default: OpenAI\'s)')
    parser.add_argument('--api-key-env', default='OPENAI_API_KEY', help='the environment '
                        'variable holding the API key (default: OPENAI_API_KEY)')
    parser.add_argument('--max-retries', type=int, default=5, help='retries of one question '
                        'after the first attempt (default: 5)')
    parser.add_argument('--retry-delay', type=float, default=1.0, help='seconds before the first '
                        'retry, doubled before every next one (default: 1)')
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds one request may '
                        'take (default: 60)')
    parser.add_argument('--temperature', type=float, default=None, help='sampling temperature in '
                        '[0, 2] (default: the server\'s)')
    parser.add_argument('--force-mix', action='store_true', help='add to an --out made with '
                        'another model, prompt, temperature or vocabulary')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Generate the descriptions; returns the exit status (errors are raised, see ``run_cli``).

    Args:
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    # Everything that depends on the user's input is checked before the first request.
    if osp.splitext(args.out)[1].lower() != '.json':
        raise ValueError(f'--out {args.out}: a descriptions file must end in .json')
    if not args.model.strip():
        raise ValueError('--model is empty')
    if args.max_retries < 0:
        raise ValueError(f'--max-retries must be >= 0, got {args.max_retries}')
    if args.retry_delay < 0:
        raise ValueError(f'--retry-delay must be >= 0, got {args.retry_delay}')
    if not args.timeout > 0:
        raise ValueError(f'--timeout must be > 0, got {args.timeout}')
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise ValueError(f'--temperature must be in [0, 2], got {args.temperature}')
    vocab = Vocabulary(parse_vocabulary_text(args.vocab))
    ensure_writable_dir(osp.dirname(args.out), '--out')
    api_key = resolve_api_key(args.api_key_env, args.base_url)
    client = make_client(args.base_url, api_key, args.timeout)
    retry = RetryPolicy(max_retries=args.max_retries, delay=args.retry_delay,
                        max_delay=max(60.0, args.retry_delay))
    print(f'{len(vocab)} classes of {args.vocab!r}, model {args.model!r} at {client.base_url}',
          flush=True)
    generate_descriptions(vocab.all_synonyms, args.out, client=client, model=args.model,
                          vocabulary=args.vocab, base_url=args.base_url or str(client.base_url),
                          temperature=args.temperature, retry=retry, force_mix=args.force_mix,
                          log=lambda line: print(line, flush=True))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
