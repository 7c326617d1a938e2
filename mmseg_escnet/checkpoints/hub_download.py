"""Files hosted on the Hugging Face Hub, fetched with ``huggingface_hub`` and verified.

A Hub file URL ``https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path>`` (the form of
the model index's ``Weights`` and of open_clip's pretrained tags) is not downloaded by our own HTTP
code but by :func:`huggingface_hub.hf_hub_download`, so it follows the conventions users set up for
every other model they run:

- ``HF_ENDPOINT``: a mirror of the Hub (the URL's host only names the Hub; the files come from
  the endpoint);
- ``HF_HOME`` / ``HF_HUB_CACHE``: the Hugging Face cache, shared with every other library: a
  file already there is used without a download;
- ``HF_HUB_OFFLINE=1``: no network at all; a file that is not cached stops with an error naming
  it;
- ``HF_TOKEN`` (or ``huggingface-cli login``): private and gated repositories.

The revision is the URL's (a branch such as ``main``, or a pinned commit). After the download the
file's SHA-256 is checked against the expected hash (the model index's ``Weights SHA-256``, a
``#sha256=`` fragment, ...; :mod:`.hash_sources`): a branch that moved to other bytes is an error
that says to pin the commit. Without an expected hash the file is used and its hash printed, to be
pinned (trust on first use, as for other URLs). The hash of a verified file is remembered in
``<our cache>/huggingface.co/.../<file>.hub.json`` (path, size, mtime), so a later run does not
hash a large file again. A file of the same URL downloaded by an earlier version of this package
into our own cache is still used.
"""
import os
import os.path as osp
import re
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlsplit

from mmengine.logging import print_log

from .hash_record import recorded_sha256, write_hash_record
from .hash_sources import ExpectedHash
from .http_transfer import ChecksumError, DownloadError
from .safe_loading import file_sha256

__all__ = ['HUB_HOST', 'HubFile', 'parse_hub_url', 'is_commit', 'pinned_url', 'hub_pin',
           'fetch_hub_file']

#: The host of Hub file URLs.
HUB_HOST = 'huggingface.co'
_COMMIT = re.compile(r'^[0-9a-f]{40}$')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


class HubFile(NamedTuple):
    """A file of a model repository on the Hub."""
    repo_id: str
    revision: str
    filename: str

    def at(self, revision: str) -> 'HubFile':
        """The same file at another revision (a commit)."""
        return self._replace(revision=revision)

    @property
    def url(self) -> str:
        """``https://huggingface.co/<repo>/resolve/<revision>/<file>``."""
        return f'https://{HUB_HOST}/{self.repo_id}/resolve/{self.revision}/{self.filename}'


def parse_hub_url(url: str) -> Optional[HubFile]:
    """The Hub file of ``https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path>``.

    Args:
        url (str): a URL without fragment.

    Returns:
        HubFile | None: None for any other URL (another host, a dataset or space, no ``resolve``).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != 'https' or (parts.hostname or '').lower() != HUB_HOST \
            or parts.query:
        return None
    segments = [unquote(s) for s in parts.path.strip('/').split('/')]
    if len(segments) < 5 or segments[2] != 'resolve' or segments[0] in ('datasets', 'spaces') \
            or not all(segments):
        return None
    return HubFile(f'{segments[0]}/{segments[1]}', segments[3], '/'.join(segments[4:]))


def is_commit(revision: str) -> bool:
    """Whether a revision is a full commit SHA-1 (40 lower-case hex digits), not a branch or tag."""
    return bool(_COMMIT.match(revision))


def pinned_url(hub: HubFile, path: str) -> Optional[str]:
    """The URL of the same file at the commit its branch resolved to, or None.

    ``hf_hub_download`` returns ``.../snapshots/<commit>/<filename>``; for a revision that is not
    already a commit, this is the URL that pins it (to put in the model index).

    Args:
        hub (HubFile): the file as requested.
        path (str): the path ``hf_hub_download`` returned.
    """
    parts = osp.normpath(path).split(os.sep)
    depth = len(hub.filename.split('/'))
    if len(parts) <= depth + 1 or parts[-depth - 2] != 'snapshots':
        return None
    commit = parts[-depth - 1]
    if commit == hub.revision or not is_commit(commit):
        return None
    return hub.at(commit).url


def _record_path(record_dir: str, hub: HubFile) -> str:
    return osp.join(record_dir, HUB_HOST, *hub.repo_id.split('/'), 'resolve', hub.revision,
                    *hub.filename.split('/')) + '.hub.json'


@contextmanager
def _hub_errors(hub: HubFile, url: str) -> Iterator[None]:
    """Turn huggingface_hub's errors into our one-line :class:`DownloadError` naming the file."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    where = (f'{hub.filename} of {hub.repo_id} at revision {hub.revision} ({url}, through '
             f'{constants.ENDPOINT})')
    try:
        yield
    except OfflineModeIsEnabled as error:  # a request other than a download (hub_pin's HEAD)
        raise DownloadError(f'{where}: HF_HUB_OFFLINE is set, so the Hub cannot be asked') \
            from error
    except LocalEntryNotFoundError as error:
        why = ('HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else
               'the Hub could not be reached')
        raise DownloadError(f'{where}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) '
                            f'and {why}') from error
    except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError,
            GatedRepoError) as error:
        kind = type(error).__name__.replace('Error', '').replace('NotFound', ' not found')
        raise DownloadError(f'{where}: {kind} (a gated or private repository needs HF_TOKEN)') \
            from error
    except Exception as error:  # noqa: BLE001  (the HTTP client's own errors: see below)
        # huggingface_hub's HTTP errors and OSErrors, and the errors of its HTTP client (httpx
        # or a successor; e.g. ConnectError for an unknown host), which a HEAD request raises
        if not isinstance(error, (HfHubHTTPError, OSError)) and \
                not type(error).__module__.startswith(('httpx', 'requests', 'urllib3')):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise DownloadError(f'{where}: {type(error).__name__}: {first}') from error


def _download(hub: HubFile, url: str) -> str:
    """``hf_hub_download`` of ``hub`` (a path in the Hugging Face cache)."""
    from huggingface_hub import hf_hub_download
    with _hub_errors(hub, url):
        return hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision)


def hub_pin(hub: HubFile, *, download: bool = False) -> Tuple[str, str]:
    """The commit ``hub.revision`` is at now, and the SHA-256 of the file at that commit.

    One ``HEAD`` request (``huggingface_hub.get_hf_file_metadata``): the Hub answers with the
    commit (``X-Repo-Commit``) and, for a file stored with LFS (every checkpoint), with the SHA-256
    of its content as the ETag, so nothing is downloaded. A file stored in git (its ETag is a git
    SHA-1), or ``download=True``, is downloaded at that commit and hashed.

    Args:
        hub (HubFile): the file, at a branch or a commit.
        download (bool): hash the downloaded file even when the Hub gives its SHA-256.

    Returns:
        tuple[str, str]: (40-hex commit, 64-hex SHA-256).

    Raises:
        DownloadError: the file, revision or repository does not exist, or the Hub is unreachable.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    url = hub.url
    with _hub_errors(hub, url):
        meta = get_hf_file_metadata(hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision))
    commit, etag = meta.commit_hash or '', (meta.etag or '').lower()
    if not _COMMIT.match(commit):
        raise DownloadError(f'{url}: the endpoint gave no commit for the revision '
                            f'{hub.revision!r} (got {commit!r}); is it a Hugging Face Hub?')
    if _SHA256.match(etag) and not download:
        return commit, etag
    return commit, file_sha256(_download(hub.at(commit), url))


def fetch_hub_file(hub: HubFile, url: str, expected: Optional[ExpectedHash], *,
                   record_dir: str, legacy: Optional[str] = None) -> str:
    """The verified local file of ``hub`` (see the module docstring).

    Args:
        hub (HubFile): the file.
        url (str): its URL, for messages.
        expected (ExpectedHash, optional): its expected SHA-256.
        record_dir (str): our cache folder (hash records).
        legacy (str, optional): where an earlier version cached this URL; used if it verifies.

    Returns:
        str: a path in the Hugging Face cache (or ``legacy``).

    Raises:
        DownloadError: the Hub's errors, offline without the file, an unreachable endpoint.
        ChecksumError: the file does not have the expected SHA-256.
    """
    if legacy and osp.isfile(legacy) and expected is not None and \
            file_sha256(legacy).startswith(expected.value):
        return legacy
    path = _download(hub, url)
    record = _record_path(record_dir, hub)
    recorded = recorded_sha256(record, path, path=osp.realpath(path))
    actual = recorded or file_sha256(path)
    if expected is not None and not actual.startswith(expected.value):
        raise ChecksumError(
            f'{url}: the file the Hub gave (cached at {path}) has SHA-256 {actual}, but '
            f'{expected.value} was expected ({expected.source}); if the revision '
            f'{hub.revision!r} is a branch, it moved to another file: pin the commit the hash '
            f'belongs to (.../resolve/<commit>/{hub.filename})')
    pinned = pinned_url(hub, path)
    if expected is None and not osp.isfile(record):
        print_log(f'{url} has no known SHA-256, so it could not be verified; it has SHA-256 '
                  f'{actual}. Pin it in the model index (Weights SHA-256) or with '
                  f'{url}#sha256={actual}', logger='current', level=30)
    if pinned and not osp.isfile(record):
        print_log(f'{url}: the branch {hub.revision!r} is at commit {pinned.split("/")[-2]} '
                  f'({pinned}); a URL with the commit keeps giving this file', logger='current')
    if recorded != actual:  # (ranks of a node get here together: write only what is new)
        write_hash_record(record, path, actual, path=osp.realpath(path))
    return path
