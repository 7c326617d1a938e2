"""Where the expected SHA-256 of a checkpoint URL comes from, strongest source first.

1. a ``sha256=`` argument of :func:`~.download.download_checkpoint` (or a model index's
   ``Weights SHA-256``);
2. a ``#sha256=<hex>`` fragment of the URL;
3. a 64-hex-digit segment of the URL path (OpenAI's CLIP URLs) or :data:`KNOWN_SHA256` (official
   files such as SAM's);
4. a ``-<8 to 64 hex>`` suffix of the file name (``tools/publish_model.py``, OpenMMLab): weak, since
   a name may end in a date; any source above overrides it.

Two strong sources that disagree are an error.
"""
import logging
import re
from typing import List, NamedTuple, Optional, Tuple
from urllib.parse import urldefrag, urlsplit

from mmengine.logging import print_log

__all__ = ['KNOWN_SHA256', 'SCHEMES', 'FULL_HEX', 'ExpectedHash', 'split_url', 'resolve_hash',
           'expected_sha256']

#: SHA-256 of official files whose URLs carry no (full) hash, keyed by URL.
KNOWN_SHA256 = {
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth':
    'a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e',
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth':
    '3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622',
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth':
    'ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912',
}
#: URL schemes that can be downloaded.
SCHEMES = ('http', 'https', 'file')
_HEX_PREFIX = re.compile(r'^[0-9a-fA-F]{8,64}$')
FULL_HEX = re.compile(r'^[0-9a-fA-F]{64}$')
_NAME_SUFFIX = re.compile(r'-([0-9a-fA-F]{8,64})\.[A-Za-z0-9]+$')


# Where an expected hash comes from (used in error messages).
_FROM_ARGUMENT = 'as given by the caller or the model index'
_FROM_FRAGMENT = 'from the #sha256= fragment of the URL'
_FROM_PATH = 'from the 64-hex-digit segment of the URL path'
_FROM_TABLE = 'the published hash of this official file'
_FROM_NAME = ('from the "-<hex>" suffix of the file name; if this name does not carry a hash, pin '
              'the real one with #sha256=<hex>')


class ExpectedHash(NamedTuple):
    """An expected SHA-256 (hex prefix), where it comes from, and whether that source is strong."""
    value: str
    source: str
    strong: bool


def split_url(url: str) -> Tuple[str, str]:
    """Check the scheme and split ``url`` into (URL to request, fragment)."""
    if not isinstance(url, str):
        raise TypeError(f'checkpoint URL must be a string, got {type(url).__name__}')
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f'{url!r}: not a downloadable URL (expected one of the schemes '
                         f'{", ".join(s + "://" for s in SCHEMES)})')
    clean, fragment = urldefrag(url)
    return clean, fragment


def _check_hex(value: str, what: str) -> str:
    if not isinstance(value, str) or not _HEX_PREFIX.match(value):
        raise ValueError(f'{what}: expected a SHA-256 in hex (8 to 64 hex digits, a prefix of the '
                         f'full hash is allowed), got {value!r}')
    return value.lower()


def _url_hashes(url: str) -> List[ExpectedHash]:
    """The hashes ``url`` itself carries, strongest source first."""
    clean, fragment = split_url(url)
    found = []
    if fragment:
        key, _, value = fragment.partition('=')
        if key != 'sha256':
            raise ValueError(f'{url!r}: unsupported URL fragment {fragment!r}; only '
                             f'#sha256=<hex> is understood')
        found.append(ExpectedHash(_check_hex(value, f'{url!r} #sha256 fragment'), _FROM_FRAGMENT, True))
    path = urlsplit(clean).path
    found += [ExpectedHash(s.lower(), _FROM_PATH, True) for s in path.split('/')[:-1]
              if FULL_HEX.match(s)][:1]
    if clean in KNOWN_SHA256:
        found.append(ExpectedHash(KNOWN_SHA256[clean], _FROM_TABLE, True))
    match = _NAME_SUFFIX.search(path.rsplit('/', 1)[-1])
    if match:
        found.append(ExpectedHash(match.group(1).lower(), _FROM_NAME, False))
    return found


def _agree(a: str, b: str) -> bool:
    """Whether two hex prefixes can be the same hash."""
    return a.startswith(b) or b.startswith(a)


def resolve_hash(url: str, sha256: Optional[str] = None, *, log: bool = False) -> Optional[ExpectedHash]:
    """The hash a download of ``url`` must have: argument > fragment > 64-hex path / table > name.

    Two strong sources that disagree are an error; the ``-<hex>`` name suffix is overridden by any
    strong source (logged when ``log`` and they disagree).
    """
    hashes = _url_hashes(url)
    if sha256 is not None:
        hashes.insert(0, ExpectedHash(_check_hex(sha256, f'sha256 for {url!r}'), _FROM_ARGUMENT, True))
    strong = [h for h in hashes if h.strong]
    if not strong:
        return hashes[0] if hashes else None
    chosen = strong[0]
    for other in strong[1:]:
        if not _agree(chosen.value, other.value):
            if chosen.source == _FROM_ARGUMENT:
                raise ValueError(f'sha256={chosen.value} contradicts the hash {other.value} that '
                                 f'{url!r} carries ({other.source})')
            raise ValueError(f'{url!r}: the hash {chosen.value} ({chosen.source}) contradicts the '
                             f'hash {other.value} ({other.source})')
        if len(other.value) > len(chosen.value):  # the longer prefix checks more
            chosen = other
    weak = hashes[-1]  # the name suffix, if any, comes last
    if log and not weak.strong and not _agree(weak.value, chosen.value):
        print_log(f'{url}: the "-{weak.value}" suffix of the file name is not its hash; '
              f'{chosen.value} ({chosen.source}) is used instead', logger='current',
                  level=logging.INFO)
    return chosen


def expected_sha256(url: str) -> Optional[str]:
    """The SHA-256 (full or a hex prefix of at least 8 digits) that ``url``'s file must have.

    Looked up in this order (a ``sha256=`` argument of :func:`download_checkpoint` comes first):

    1. a fragment ``#sha256=<hex>`` (the way to pin any URL);
    2. a path segment of exactly 64 hex digits (OpenAI's CLIP URLs,
       ``.../clip/models/<sha256>/ViT-B-16.pt``), or :data:`KNOWN_SHA256` (official files such as
       SAM's ``sam_vit_h_4b8939.pth``);
    3. a file name ending in ``-<8 to 64 hex>.<ext>`` (as ``tools/publish_model.py`` and
       OpenMMLab name their files): a prefix of the hash. This is a weak source: a name such as
       ``iter_80000-20240115.pth`` may end in a date, so any of the sources above overrides it.

    Args:
        url (str): The checkpoint URL.

    Returns:
        str | None: Lower-case hex digits, or None when nothing is known.

    Raises:
        ValueError: For a malformed ``#sha256=`` fragment, an unsupported scheme, or a fragment
            contradicting the hash in the URL path or in :data:`KNOWN_SHA256`.
    """
    found = resolve_hash(url)
    return found.value if found is not None else None
