"""Pin the model index's Hugging Face Hub weights to a commit and their SHA-256 (run online).

A ``Weights`` URL on a branch (``.../resolve/main/<file>``) gives whatever the branch holds today.
This tool asks the Hub (through ``HF_ENDPOINT``, with ``HF_TOKEN``) which commit the branch is at
and what the file's SHA-256 is, and rewrites the model's entry in its metafile::

    Weights: https://huggingface.co/<repo>/resolve/<40-hex commit>/<file>
    Weights SHA-256: <64 hex>

Both are then checked on every download (:func:`mmseg_escnet.checkpoints.download_checkpoint`).
For LFS files (every checkpoint) the Hub's answer to one ``HEAD`` request carries both, so nothing
is downloaded; ``--download`` hashes the downloaded file instead. A wrong file name or repository
is one error naming it. An entry whose ``Weights SHA-256`` disagrees with the branch's file is
not changed (the branch moved since the hash was written): find the commit of that hash in the
repository's history and pin it by hand. Only the two lines of each pinned model change; comments
and layout stay.

Usage::

    python tools/misc/pin_hub_weights.py                      # every model of model-index.yml
    python tools/misc/pin_hub_weights.py --models 'errseg_*' --dry-run
    python tools/misc/pin_hub_weights.py --verify     # pinned entries too: still on the Hub?
"""
import argparse
import fnmatch
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from mmseg_escnet.checkpoints.hash_sources import resolve_hash, split_url
from mmseg_escnet.checkpoints.http_transfer import DownloadError
from mmseg_escnet.checkpoints.hub_download import (HUB_HOST, hub_pin, is_commit,
                                                   parse_hub_url)
from mmseg_escnet.checkpoints.model_zoo import ModelInfo, load_model_index, model_index_path
from mmseg_escnet.utils import run_cli

PROG = 'tools/misc/pin_hub_weights.py'
_NAME = re.compile(r'^(\s*)-\s+Name:\s*(\S+?)\s*(#.*)?$')
# key, value (may be empty; a '#' inside it, as in a #sha256= fragment, is part of it), and a
# comment (a '#' after white space, as YAML reads it), if any
_WEIGHTS = re.compile(r'^(\s*Weights:)[ \t]*(\S*?)(?:[ \t]+(#.*))?[ \t]*$')
_SHA = re.compile(r'^(\s*Weights SHA-256:)[ \t]*(\S*?)(?:[ \t]+(#.*))?[ \t]*$')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Pin Hub-hosted weights of the model index to a '
                                     'commit and their SHA-256')
    parser.add_argument('--index', default=None, help='model-index.yml (default: '
                        '$MMSEG_ESCNET_MODEL_INDEX or the repository\'s)')
    parser.add_argument('--models', nargs='+', default=['*'], metavar='PATTERN',
                        help='model names or shell patterns (default: all)')
    parser.add_argument('--download', action='store_true', help='hash the downloaded file even '
                        'when the Hub gives its SHA-256')
    parser.add_argument('--verify', action='store_true', help='also ask the Hub about entries '
                        'that are already pinned: their commit must hold a file of their SHA-256')
    parser.add_argument('--dry-run', action='store_true', help='print the changes, write nothing')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    return parser.parse_args(argv)


def _block(lines: List[str], name: str, metafile: str) -> Tuple[int, int]:
    """[start, end) of the lines of model ``name`` (its ``- Name:`` line to the next entry)."""
    starts = [i for i, line in enumerate(lines)
              if (m := _NAME.match(line)) and m.group(2).strip('\'"') == name]
    if len(starts) != 1:
        raise ValueError(f'{metafile}: found {len(starts)} "- Name: {name}" lines, expected one')
    start = starts[0]
    indent = len(_NAME.match(lines[start]).group(1))
    end = start + 1
    while end < len(lines):
        line = lines[end]
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped and not stripped.startswith('#') and depth <= indent:  # next entry or key
            break
        end += 1
    return start, end


def _set_line(match: 're.Match', value: str) -> str:
    """The line of ``match`` (``_WEIGHTS``/``_SHA``) with ``value``, keeping a comment."""
    key, _, comment = match.groups()
    return f'{key} {value}' + (f'  {comment}' if comment else '') + '\n'


def rewrite_entry(text: str, info: ModelInfo, url: str, sha256: str) -> str:
    """``text`` (a metafile) with model ``info.name``'s Weights and Weights SHA-256 set.

    Args:
        text (str): the metafile's content.
        info (ModelInfo): the model (its ``weights`` as currently written).
        url (str): the pinned URL.
        sha256 (str): its SHA-256 (64 hex).

    Returns:
        str: the new content; only those two lines differ (the SHA-256 line is added after the
        Weights line if it is missing).

    Raises:
        ValueError: the model's lines are not found, or it has more than one SHA-256 line.
    """
    lines = text.splitlines(keepends=True)
    start, end = _block(lines, info.name, info.metafile)
    weights = [i for i in range(start, end) if (m := _WEIGHTS.match(lines[i].rstrip('\n')))
               and m.group(2).strip('\'"') == info.weights]
    if len(weights) != 1:
        raise ValueError(f'{info.metafile}: model {info.name!r}: cannot find its line '
                         f'"Weights: {info.weights}"')
    w = weights[0]
    lines[w] = _set_line(_WEIGHTS.match(lines[w].rstrip('\n')), url)
    shas = [i for i in range(start, end) if _SHA.match(lines[i].rstrip('\n'))]
    if len(shas) > 1:
        raise ValueError(f'{info.metafile}: model {info.name!r} has {len(shas)} "Weights '
                         f'SHA-256" lines')
    if shas:
        lines[shas[0]] = _set_line(_SHA.match(lines[shas[0]].rstrip('\n')), sha256)
    else:
        indent = lines[w][:len(lines[w]) - len(lines[w].lstrip())]
        lines.insert(w + 1, f'{indent}Weights SHA-256: {sha256}\n')
    return ''.join(lines)


def check_rewrite(old: str, new: str, metafile: str,
                  entries: Sequence[Tuple[ModelInfo, str, str]]) -> None:
    """The rewritten metafile must read as the old one with exactly these two keys changed.

    Raises:
        ValueError: anything else changed (an unusual layout fooled the line editing); nothing
            is written then.
    """
    expected, got = yaml.safe_load(old), yaml.safe_load(new)
    models = {m.get('Name'): m for m in expected.get('Models') or [] if isinstance(m, dict)}
    for info, url, sha256 in entries:
        models[info.name].update({'Weights': url, 'Weights SHA-256': sha256})
    if got != expected:
        raise ValueError(f'{metafile}: pinning {", ".join(i.name for i, _, _ in entries)} by '
                         f'editing lines would change more than their Weights and Weights SHA-256 '
                         f'(an unusual layout); nothing was written, edit the file by hand')


def _pin(info: ModelInfo, download: bool,
         verify: bool = False) -> Tuple[Optional[Tuple[str, str]], str]:
    """((pinned URL, SHA-256) or None if nothing changes, a line for the report)."""
    hub = parse_hub_url(split_url(info.weights)[0])
    if hub is None:
        return None, (f'{info.name}: not a Hub file URL (https://{HUB_HOST}/<owner>/<repo>/resolve/'
                      f'<revision>/<file>): {info.weights}, skipped')
    pinned = is_commit(hub.revision) and info.sha256 is not None and len(info.sha256) == 64
    if pinned and not verify:
        return None, f'{info.name}: already pinned'
    # Weights SHA-256 or a #sha256= fragment; a '-<hex>' name suffix may be a date: not checked
    expected = resolve_hash(info.weights, info.sha256)
    commit, sha256 = hub_pin(hub, download=download)
    if expected is not None and expected.strong and not sha256.startswith(expected.value):
        why = ('the index\'s hash is wrong, or belongs to another file' if is_commit(hub.revision)
               else 'the revision moved since the hash was written; pin the commit of that hash '
               'by hand (the repository\'s history)')
        raise ValueError(f'the index gives the SHA-256 {expected.value} ({expected.source}), but '
                         f'{hub.filename} at {hub.revision!r} (commit {commit}) has {sha256}: '
                         f'{why}; nothing was changed')
    if pinned:  # --verify: the commit still holds the file of the index's SHA-256
        return None, f'{info.name}: pinned, verified (commit {commit}, SHA-256 {sha256})'
    report = f'{info.name}: {hub.revision} -> {commit}, SHA-256 {sha256}'
    return (hub.at(commit).url, sha256), report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    index = osp.abspath(args.index or model_index_path())
    models = [info for name, info in load_model_index(index).items()
              if info.weights and any(fnmatch.fnmatchcase(name, p) for p in args.models)]
    if not models:
        raise ValueError(f'no model of {index} with Weights matches {" ".join(args.models)}')
    changes: Dict[str, List[Tuple[ModelInfo, str, str]]] = {}
    failures = 0
    for info in models:
        try:
            pinned, report = _pin(info, args.download, args.verify)
        except (ValueError, DownloadError) as error:  # one model's failure does not stop the rest
            print(f'{PROG}: error: {info.name}: {error}', file=sys.stderr)
            failures += 1
            continue
        print(report)
        if pinned:
            changes.setdefault(info.metafile, []).append((info, *pinned))
    for metafile, entries in changes.items():
        with open(metafile, encoding='utf-8') as f:
            text = f.read()
        new = text
        for info, url, sha256 in entries:
            new = rewrite_entry(new, info, url, sha256)
        check_rewrite(text, new, metafile, entries)
        text = new
        if args.dry_run:
            print(f'(dry run) would rewrite {len(entries)} model(s) in {metafile}')
            continue
        with open(metafile, 'w', encoding='utf-8') as f:
            f.write(text)
        print(f'rewrote {len(entries)} model(s) in {metafile}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
