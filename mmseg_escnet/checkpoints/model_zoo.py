"""Model-zoo names: the OpenMMLab model index, weights by name, ``zoo://NAME`` checkpoints.

The index is OpenMMLab's format: a root ``model-index.yml`` (``$MMSEG_ESCNET_MODEL_INDEX``, or the
one at the repository root) whose ``Import`` list names metafiles relative to it; each metafile has
``Collections`` and ``Models``. A model entry::

    - Name: catseg_vitb16                 # the model-zoo name
      In Collection: CAT-Seg
      Config: configs/catseg_vitb16.py    # relative to the directory of model-index.yml
      Metadata: {...}
      Results: [{Task: ..., Dataset: ..., Metrics: {mIoU: ...}}]
      Weights: https://.../file.pth       # optional: nothing published when absent or null
      Weights SHA-256: <hex>              # optional
      Converter: catseg_official          # optional: official weights converted on first use

:func:`fetch_weights` downloads the weights with :func:`~.download.download_checkpoint` and, with a
``Converter`` (a format of :data:`.convert.FORMATS`), converts them once with
:func:`.convert.convert_and_check` into ``<download>.converted.pth`` beside the download (with
its SHA-256 sidecar, under the inter-process lock ``<download>.converted.pth.lock``).
``zoo://NAME`` works wherever MMEngine loads a checkpoint (``load_from``,
``init_cfg=dict(type='Pretrained', checkpoint='zoo://NAME')``, ``tools/test.py``) once our
loaders are registered (:func:`mmseg_escnet.register_checkpoint_loaders`).
"""
import copy
import difflib
import fnmatch
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import yaml
from mmengine.config import Config
from mmengine.logging import print_log

from ..utils.rank_zero import rank_zero_first
from .convert import FORMATS, REPO_ROOT, convert_and_check
from .download import cache_lock, cache_path, download_checkpoint, file_sha256
from .safe_loading import load_local_checkpoint

__all__ = [
    'ZOO_SCHEME', 'ModelInfo', 'model_index_path', 'load_model_index', 'list_models',
    'get_model', 'fetch_weights', 'load_from_model_zoo', 'resolve_checkpoint_arg',
    'CONFIG_SUFFIXES', 'resolve_model'
]

ZOO_SCHEME = 'zoo://'
#: Suffixes of config files (what ``Config.fromfile`` reads); any other string is a model-zoo name.
CONFIG_SUFFIXES = ('.py', '.yml', '.yaml', '.json')
#: The config file of a published model folder (``tools/publish_model.py --hub-folder``).
MODEL_FOLDER_CONFIG = 'config.py'


@dataclass
class ModelInfo:
    """One model of the index.

    Attributes:
        name (str): The model-zoo name.
        collection (str): ``In Collection`` (e.g. ``'CAT-Seg'``).
        config (str): Absolute path of the config file.
        weights (str | None): URL of the published weights; None when nothing is published.
        sha256 (str | None): Their SHA-256 (lower-case hex), if the index gives it.
        converter (str | None): Name of the official format (:data:`.convert.FORMATS`) the
            weights are in, if they need converting.
        results (list[dict]): The ``Results`` entries.
        metadata (dict): The ``Metadata`` entry.
        metafile (str): The metafile that defines the model (for error messages).
    """
    name: str
    collection: str
    config: str
    weights: Optional[str] = None
    sha256: Optional[str] = None
    converter: Optional[str] = None
    results: List[Dict[str, Any]] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    metafile: str = ''


def model_index_path() -> str:
    """``$MMSEG_ESCNET_MODEL_INDEX`` if set, else ``model-index.yml`` at the repository root."""
    return osp.abspath(osp.expanduser(
        os.environ.get('MMSEG_ESCNET_MODEL_INDEX') or osp.join(REPO_ROOT, 'model-index.yml')))


def _read_yaml(path: str, referrer: str) -> Mapping:
    if not osp.isfile(path):
        raise FileNotFoundError(f'model index file not found: {path} (named by {referrer}); set '
                                f'MMSEG_ESCNET_MODEL_INDEX to the model-index.yml to use')
    with open(path, encoding='utf-8') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise ValueError(f'{path}: not valid YAML: {error}') from error
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f'{path}: expected a mapping with Import / Collections / Models, got '
                         f'{type(data).__name__}')
    return data


def _parse_model(entry: Any, metafile: str, root: str) -> ModelInfo:
    if not isinstance(entry, Mapping) or not isinstance(entry.get('Name'), str):
        raise ValueError(f'{metafile}: every entry of Models needs a Name, got {entry!r}')
    name = entry['Name']
    config = entry.get('Config')
    if not isinstance(config, str) or not config:
        raise ValueError(f'{metafile}: model {name!r} has no Config')
    weights = entry.get('Weights') or None
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f'{metafile}: model {name!r}: Weights must be a URL, got {weights!r}')
    sha256 = entry.get('Weights SHA-256') or None
    if sha256 is not None:
        sha256 = str(sha256).lower()
        if len(sha256) < 8 or len(sha256) > 64 or any(c not in '0123456789abcdef' for c in sha256):
            raise ValueError(f'{metafile}: model {name!r}: Weights SHA-256 must be 8 to 64 hex '
                             f'digits, got {entry["Weights SHA-256"]!r}')
    converter = entry.get('Converter') or None
    if converter is not None and converter not in FORMATS:
        raise ValueError(f'{metafile}: model {name!r} names the unknown Converter {converter!r}; '
                         f'known: {sorted(FORMATS)}')
    return ModelInfo(
        name=name,
        collection=str(entry.get('In Collection') or ''),
        config=osp.normpath(osp.join(root, config)),
        weights=weights,
        sha256=sha256,
        converter=converter,
        results=list(entry.get('Results') or []),
        metadata=dict(entry.get('Metadata') or {}),
        metafile=metafile)


def load_model_index(index: Optional[str] = None) -> Dict[str, ModelInfo]:
    """Read the model index and every metafile it imports.

    Args:
        index (str, optional): Path of ``model-index.yml``; :func:`model_index_path` if not given.

    Returns:
        dict[str, ModelInfo]: Models by name, in the order of the files.

    Raises:
        FileNotFoundError: The index or an imported metafile does not exist.
        ValueError: Malformed files, entries without Name/Config, duplicate names.
    """
    index = osp.abspath(index or model_index_path())
    root = osp.dirname(index)
    models: Dict[str, ModelInfo] = {}
    pending, seen = [(index, 'MMSEG_ESCNET_MODEL_INDEX or the repository root')], set()
    while pending:
        path, referrer = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        data = _read_yaml(path, referrer)
        imports = data.get('Import') or []
        if not isinstance(imports, list):
            raise ValueError(f'{path}: Import must be a list of metafile paths, got {imports!r}')
        pending += [(osp.normpath(osp.join(osp.dirname(path), p)), path) for p in imports]
        entries = data.get('Models') or []
        if not isinstance(entries, list):
            raise ValueError(f'{path}: Models must be a list, got {type(entries).__name__}')
        for entry in entries:
            info = _parse_model(entry, path, root)
            if info.name in models:
                raise ValueError(f'model name {info.name!r} is defined twice: in '
                                 f'{models[info.name].metafile} and in {path}')
            models[info.name] = info
    return models


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Names of the models in the index, optionally filtered with a shell pattern.

    Args:
        pattern (str, optional): :mod:`fnmatch` pattern, e.g. ``'catseg_*'``.

    Returns:
        list[str]: Sorted model names.
    """
    names = sorted(load_model_index())
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def get_model(name: str) -> ModelInfo:
    """The index entry of a model.

    Args:
        name (str): Model-zoo name.

    Returns:
        ModelInfo: The entry.

    Raises:
        KeyError: Unknown name; the message suggests close matches.
    """
    models = load_model_index()
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.6)
        hint = f'did you mean {", ".join(close)}? ' if close else ''
        raise KeyError(f'unknown model-zoo name {name!r} in {model_index_path()}; {hint}'
                       f'mmseg_escnet.checkpoints.list_models() lists the {len(models)} known '
                       f'names')
    return models[name]


def _conversion_is_current(converted: str, stamp: Mapping[str, Any], *, log: bool) -> bool:
    """Whether ``converted`` exists and was made from the download and converter of ``stamp``."""
    if not osp.isfile(converted):
        return False
    try:  # memory-mapped: only the small meta is read
        meta = load_local_checkpoint(converted, map_location='cpu', mmap=True)['meta']
    except Exception:  # unreadable (e.g. damaged): convert again
        meta = {}
    if all(meta.get(k) == v for k, v in stamp.items()):
        return True
    if log:
        print_log(f'{converted} is unreadable or was made from another download or converter; '
                  f'converting again', logger='current')
    return False


def _convert_once(info: ModelInfo, download: str, converted: str) -> str:
    """Write ``converted`` from ``download`` unless an up-to-date one exists; return its path.

    The conversion runs under the inter-process lock ``<converted>.lock``; a process that waited
    for it uses the file the other process wrote.
    """
    os.makedirs(osp.dirname(converted), exist_ok=True)
    stamp = dict(converter=info.converter, source=info.weights, source_sha256=file_sha256(download))
    if _conversion_is_current(converted, stamp, log=False):
        return converted
    with cache_lock(converted, f'converting {download}'):
        if _conversion_is_current(converted, stamp, log=True):  # maybe written while we waited
            return converted
        print_log(f'converting {download} for {info.name} from the {info.converter!r} format',
                  logger='current')
        convert_and_check(info.converter, download, converted, check=False, meta=stamp)
    return converted


def fetch_weights(name: str, cache_dir: Optional[str] = None) -> str:
    """Local path of loadable weights of a model-zoo model (downloaded and verified once).

    Args:
        name (str): Model-zoo name.
        cache_dir (str, optional): Download cache; the default of
            :func:`~.download.download_checkpoint` if not given.

    Returns:
        str: Path of a checkpoint with our parameter names: the download itself, or
        ``<cache path of the URL>.converted.pth`` in our cache for a model with a ``Converter``
        (a Hub download itself stays in the Hugging Face cache).

    Raises:
        KeyError: Unknown name.
        FileNotFoundError: The model has no published weights.
        DownloadError: The download failed (see :func:`~.download.download_checkpoint`).
    """
    info = get_model(name)
    if info.weights is None:
        raise FileNotFoundError(
            f'model-zoo model {name!r} has no published weights (no Weights in {info.metafile}); '
            f'train it with `python tools/train.py {info.config}` (or '
            f'tools/dist_train.sh), or convert an official checkpoint with '
            f'tools/model_converters/, and pass the resulting file instead')
    path = download_checkpoint(info.weights, sha256=info.sha256, cache_dir=cache_dir)
    if not info.converter:
        return path
    converted = cache_path(info.weights, cache_dir) + '.converted.pth'
    return rank_zero_first(_convert_once, info, path, converted)


def load_from_model_zoo(filename: str, map_location: Optional[Union[str, Callable]] = None) -> Any:
    """Load a ``zoo://NAME`` checkpoint (the loader registered in MMEngine's ``CheckpointLoader``).

    Args:
        filename (str): ``'zoo://<model-zoo name>'``.
        map_location (str | Callable, optional): Same as :func:`torch.load`.

    Returns:
        The loaded checkpoint (a dict with ``state_dict``).
    """
    if not filename.startswith(ZOO_SCHEME):
        raise ValueError(f'{filename!r}: expected {ZOO_SCHEME}<model-zoo name>')
    return load_local_checkpoint(fetch_weights(filename[len(ZOO_SCHEME):]),
                                 map_location=map_location)


def resolve_checkpoint_arg(checkpoint: str) -> str:
    """Interpret a command-line CHECKPOINT: local file, URL or model-zoo name.

    Args:
        checkpoint (str): An existing file, anything with ``://`` (URL, ``zoo://NAME``, other
            MMEngine schemes), or a model-zoo name.

    Returns:
        str: ``checkpoint`` itself, or ``'zoo://<name>'`` for a model-zoo name.

    Raises:
        FileNotFoundError: Neither a file, nor a URL, nor a known name (close names are
            suggested).
    """
    if osp.isfile(checkpoint) or '://' in checkpoint:
        return checkpoint
    try:
        models = load_model_index()
    except (FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(f'checkpoint {checkpoint!r} is not an existing file, not a URL, '
                                f'and cannot be looked up as a model-zoo name ({error})') from error
    if checkpoint in models:
        return ZOO_SCHEME + checkpoint
    close = difflib.get_close_matches(checkpoint, list(models), n=3, cutoff=0.6)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise FileNotFoundError(f'checkpoint {checkpoint!r} is not an existing file, not a URL and '
                            f'not a model-zoo name of {model_index_path()}.{hint} Known names: '
                            f'{", ".join(sorted(models))}')


def _model_folder(folder: str, weights: Optional[str]) -> Tuple[Config, str]:
    """(config, weights) of a published model folder: its ``config.py`` and, unless ``weights``
    is given, its one weights file (``*.safetensors``, else ``*.pth``)."""
    config = osp.join(folder, MODEL_FOLDER_CONFIG)
    if not osp.isfile(config):
        raise FileNotFoundError(f'{folder}: a model folder holds {MODEL_FOLDER_CONFIG} (as '
                                f'tools/publish_model.py --hub-folder writes it); this one has '
                                f'none')
    if weights is None:
        names = sorted(os.listdir(folder))
        found = [n for n in names if n.endswith('.safetensors')] or \
            [n for n in names if n.endswith('.pth')]
        if len(found) != 1:
            raise ValueError(f'{folder}: expected one weights file (*.safetensors, else *.pth), '
                             f'found {", ".join(found) or "none"}; give the weights explicitly')
        weights = osp.join(folder, found[0])
    return Config.fromfile(config), weights


def resolve_model(model: Union[str, 'os.PathLike[str]', Config, dict],
                  weights: Optional[str]) -> Tuple[Config, Optional[str]]:
    """Turn a config file, model folder, ``Config``, dict or model-zoo name into (config, weights).

    A string is a config file only if it ends with one of :data:`CONFIG_SUFFIXES` (any case); a
    path to an existing folder (it holds a path separator: ``hub/my_model``, ``./my_model/``) is a
    published model folder (``config.py`` and one weights file, as ``tools/publish_model.py
    --hub-folder`` writes it and ``hf download USER/NAME --local-dir DIR`` fetches it); anything
    else is looked up as a model-zoo name, even if a file or folder of that name exists in the
    working directory.

    Args:
        model (str | os.PathLike | Config | dict): The inferencer's ``model`` argument.
        weights (str, optional): The inferencer's ``weights`` argument.

    Returns:
        Tuple[Config, str | None]: A copy of the config, and ``weights`` (for a model-zoo name
        without weights: ``'zoo://<name>'``; for a model folder: its weights file).

    Raises:
        TypeError: ``model`` has another type.
        FileNotFoundError: A config file that does not exist, a model folder without config.py.
        ValueError: Neither a config file, a model folder nor a known model-zoo name (the
            message says what is accepted and why the name is unknown, with close names); a
            model folder without exactly one weights file.
    """
    if isinstance(model, Config):
        return copy.deepcopy(model), weights
    if isinstance(model, dict):
        return Config(copy.deepcopy(dict(model))), weights
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f'model must be a config path, a Config or a model-zoo name, got '
                        f'{type(model).__name__}')
    text = os.fspath(model)
    if text.lower().endswith(CONFIG_SUFFIXES):
        if not osp.isfile(text):
            raise FileNotFoundError(f'config file not found: {text}')
        return Config.fromfile(text), weights
    separators = {os.sep, '/', os.altsep} - {None}
    if any(sep in text for sep in separators) and osp.isdir(text):
        return _model_folder(text, weights)
    try:
        info = get_model(text)
    except (KeyError, FileNotFoundError, ValueError) as err:  # unknown name, or no usable index
        reason = err.args[0] if err.args else repr(err)
        hint = (f' (a folder {text!r} exists: write ./{text} to use it as a model folder)'
                if osp.isdir(text) else '')
        raise ValueError(f'{text!r} is not a config file (a path ending in '
                         f'{"/".join(CONFIG_SUFFIXES)}), not a model folder and not a known '
                         f'model-zoo name{hint}: {reason}') from err
    return Config.fromfile(info.config), weights if weights is not None else f'zoo://{text}'
