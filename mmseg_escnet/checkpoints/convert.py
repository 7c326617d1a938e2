"""One convert-and-check driver for official checkpoints, and the table of official formats.

Every official format lives in one module that reads and renames it (:mod:`.catseg_official`,
:mod:`.sed_official`, :mod:`.errseg_official`, :mod:`.clip_official`); :data:`FORMATS` names them.
The model zoo (``Converter: catseg_official`` in a metafile, :func:`.model_zoo.fetch_weights`) and
the scripts ``tools/model_converters/{catseg,sed,errseg,clip}2mmseg.py`` both call
:func:`convert_and_check`::

    from mmseg_escnet.checkpoints import convert_and_check

    result = convert_and_check('catseg_official', 'model_final_base.pth', 'catseg_vitb16.pth')
    print(result.report())  # converted <N> tensors (ViT-B/16, ...), loads strictly into ...

It reads the file with the safe loader (tensors and plain types only), converts it, builds the
model of a config on the CPU and requires the weights to load into it strictly (missing,
unexpected and mis-shaped keys are named), then writes ``{'state_dict', 'meta'}`` through a
temporary file and a rename, with the SHA-256 sidecar ``<dst>.sha256`` that every later load
checks (:mod:`.safe_loading`). Official SAM checkpoints are not a format here: they initialise
part of a model when it is built (:mod:`.sam_official`), there is no whole model to convert.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from mmengine.config import Config
from torch import nn

from ..utils import ensure_writable_dir
from .catseg_official import (CATSEG_CONFIGS, catseg_model_problems, check_catseg_config,
                              convert_catseg)
from .clip_official import convert_clip, read_clip_file
from .errseg_official import ERRSEG_CONFIGS, convert_errseg
from .official_checkpoint import Converted, load_official_checkpoint, state_dict_problems
from .safe_loading import sha256_sidecar, write_sha256_sidecar
from .sed_official import SED_CONFIGS, convert_sed

__all__ = ['REPO_ROOT', 'OfficialFormat', 'ConversionResult', 'FORMATS', 'register_format',
           'get_format', 'check_against_config', 'convert_and_check']

#: The repository root: default configs are relative to it.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclass(frozen=True)
class OfficialFormat:
    """An official checkpoint format: how to read it, convert it and check it against a model.

    Attributes:
        name (str): The name in :data:`FORMATS` and in metafiles (``Converter: <name>``).
        model (str): The model family, for messages (``'CAT-Seg'``).
        convert (Callable): ``convert(checkpoint, **options) -> Converted``: the loaded file
            under our names (:class:`~.official_checkpoint.Converted`).
        read (Callable, optional): ``read(src) -> checkpoint`` for a local path or URL; by
            default :func:`~.official_checkpoint.load_official_checkpoint` (the safe loader,
            tensors and plain types only).
        default_configs (Mapping[str, str]): Config checked against when none is given, by
            :attr:`Converted.architecture`, relative to :data:`REPO_ROOT`. Empty: no default
            check.
        check_config (Callable, optional): ``check_config(converted, cfg, config)`` raises a
            ``ValueError`` before the model is built (e.g. another CLIP architecture).
        model_problems (Callable, optional): ``model_problems(converted, model) -> [str]``:
            what the key and shape comparison does not see (e.g. rebuilt constant buffers).
    """
    name: str
    model: str
    convert: Callable[..., Converted]
    read: Optional[Callable[[str], Any]] = None
    default_configs: Mapping[str, str] = field(default_factory=dict)
    check_config: Optional[Callable[[Converted, Config, str], None]] = None
    model_problems: Optional[Callable[[Converted, nn.Module], List[str]]] = None

    def load(self, src: str) -> Any:
        """Read ``src`` (local path or URL) with :attr:`read`."""
        if self.read is not None:
            return self.read(src)
        return load_official_checkpoint(src, f'official {self.model} checkpoint')


#: The official formats by name.
FORMATS: Dict[str, OfficialFormat] = {
    fmt.name: fmt
    for fmt in (
        OfficialFormat('catseg_official', 'CAT-Seg', convert_catseg,
                       default_configs=CATSEG_CONFIGS, check_config=check_catseg_config,
                       model_problems=catseg_model_problems),
        OfficialFormat('sed_official', 'SED', convert_sed, default_configs=SED_CONFIGS),
        OfficialFormat('errseg_official', 'ERR-Seg', convert_errseg,
                       default_configs=ERRSEG_CONFIGS),
        OfficialFormat('clip_official', 'CLIP', convert_clip, read=read_clip_file),
    )
}


def register_format(fmt: OfficialFormat, *, force: bool = False) -> OfficialFormat:
    """Add a format to :data:`FORMATS` (a metafile may then name it as its ``Converter``).

    Args:
        fmt (OfficialFormat): The format.
        force (bool): Replace a format of the same name. Defaults to False.

    Returns:
        OfficialFormat: ``fmt``.

    Raises:
        KeyError: The name is taken and ``force`` is False.
        TypeError: ``fmt`` is not an :class:`OfficialFormat`.
    """
    if not isinstance(fmt, OfficialFormat):
        raise TypeError(f'expected an OfficialFormat, got {type(fmt).__name__}')
    if fmt.name in FORMATS and not force:
        raise KeyError(f'official format {fmt.name!r} is already registered; pass force=True to '
                       'replace it')
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> OfficialFormat:
    """The format called ``name``.

    Raises:
        KeyError: Naming the known formats.
    """
    if name not in FORMATS:
        raise KeyError(f'unknown official checkpoint format {name!r}; known: {sorted(FORMATS)}')
    return FORMATS[name]


@dataclass
class ConversionResult:
    """What :func:`convert_and_check` wrote.

    Attributes:
        dst (str): The written checkpoint.
        meta (dict): Its ``meta`` entry.
        summary (str): What the conversion found (:attr:`Converted.summary`).
        config (str, optional): The config the weights were checked against.
    """
    dst: str
    meta: Dict[str, Any]
    summary: str
    config: Optional[str] = None

    def report(self) -> str:
        """One line: ``converted N tensors (<summary>), loads strictly into <config> -> <dst>``."""
        fit = f', loads strictly into {self.config}' if self.config else ''
        return f'converted {self.meta["num_tensors"]} tensors ({self.summary}){fit} -> {self.dst}'


def check_against_config(fmt: OfficialFormat, converted: Converted, config: str) -> None:
    """Build ``config``'s model on the CPU and require the weights to load into it strictly.

    The backbone's ``pretrained`` weights are not fetched: the checkpoint holds them.

    Raises:
        ValueError: From the format's :attr:`~OfficialFormat.check_config`, or naming the
            missing and unexpected keys and the shape mismatches (``the converted weights do not
            fit <config>: ...``).
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(config)  # its custom_imports register our modules
    if fmt.check_config is not None:
        fmt.check_config(converted, cfg, config)
    if 'pretrained' in cfg.model.get('backbone', {}):
        cfg.model.backbone.pretrained = None
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    problems = state_dict_problems(converted.state_dict, model.state_dict())
    if fmt.model_problems is not None:
        problems += fmt.model_problems(converted, model)
    if problems:
        raise ValueError(f'the converted weights do not fit {config}: ' + '; '.join(problems))
    model.load_state_dict(converted.state_dict, strict=True)


def _default_config(fmt: OfficialFormat, converted: Converted) -> Optional[str]:
    if not fmt.default_configs:
        return None
    if converted.architecture not in fmt.default_configs:
        raise ValueError(f'no default config for a {converted.architecture} {fmt.model} '
                         f'checkpoint; pass --config (there are defaults for '
                         f'{", ".join(fmt.default_configs)})')
    return osp.join(REPO_ROOT, fmt.default_configs[converted.architecture])


def _save(checkpoint: Dict[str, Any], dst: str) -> None:
    """``torch.save`` through ``<dst>.part`` and a rename, then the SHA-256 sidecar."""
    partial = dst + '.part'
    try:
        torch.save(checkpoint, partial)
        if osp.exists(sha256_sidecar(dst)):  # never describes the new file
            os.remove(sha256_sidecar(dst))
        os.replace(partial, dst)
    finally:
        if osp.exists(partial):
            os.remove(partial)
    write_sha256_sidecar(dst)


def _checked_state_dict(converted: Any, fmt: OfficialFormat, src: str) -> Dict[str, torch.Tensor]:
    state = converted.state_dict if isinstance(converted, Converted) else None
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise TypeError(f'the {fmt.name!r} converter must return a Converted with a non-empty '
                        f'dict of tensors for {src}, got {type(converted).__name__}')
    return dict(state)


def convert_and_check(format_name: str,
                      src: str,
                      dst: str,
                      config: Optional[str] = None,
                      *,
                      check: bool = True,
                      converter: Optional[str] = None,
                      meta: Optional[Mapping[str, Any]] = None,
                      **options: Any) -> ConversionResult:
    """Read an official checkpoint, convert it, check it against a config and save it.

    Args:
        format_name (str): A name of :data:`FORMATS` (``'catseg_official'``, ``'sed_official'``,
            ``'errseg_official'``, ``'clip_official'``).
        src (str): Local path or http(s) URL of the official file.
        dst (str): Output file; its folder is created and checked before anything is read.
        config (str, optional): Config whose model must load the weights strictly; by default
            the format's config for the detected architecture (none for CLIP).
        check (bool): Check against a config at all. Defaults to True.
        converter (str, optional): Who converted, for ``meta['converter']``; the format name
            by default.
        meta (Mapping, optional): Entries added to the written ``meta`` (they win).
        **options: Passed to the format's converter (``model_name`` for CLIP).

    Returns:
        ConversionResult: The written file, its ``meta`` (``source``, ``format``,
        ``converter``, ``num_tensors``, ``architecture`` and ``config`` when known, the format's
        own entries) and the one-line report.

    Raises:
        KeyError: Unknown format.
        OSError: The folder of ``dst`` cannot be written.
        FileNotFoundError: A local ``src`` does not exist.
        ValueError: Naming ``src`` and the problem: an unreadable or unsafe file, keys that are
            not part of the model, a config without a default, weights that do not fit it.
        TypeError: A registered converter returned something else than a
            :class:`~.official_checkpoint.Converted` with tensors.
    """
    fmt = get_format(format_name)
    ensure_writable_dir(osp.dirname(osp.abspath(dst)), 'the converted checkpoint')
    checkpoint = fmt.load(src)
    try:
        converted = fmt.convert(checkpoint, **options)
        state = _checked_state_dict(converted, fmt, src)
        if check:
            config = config or _default_config(fmt, converted)
            if config is not None:
                check_against_config(fmt, converted, config)
    except ValueError as err:
        raise ValueError(f'{src}: {err}') from err
    written = dict(source=str(src), format=fmt.name, converter=converter or fmt.name)
    if converted.architecture is not None:
        written['architecture'] = converted.architecture
    if check and config is not None:
        config = osp.abspath(config)
        if config.startswith(REPO_ROOT + os.sep):
            config = osp.relpath(config, REPO_ROOT)  # e.g. configs/catseg_vitb16.py
        written['config'] = config
    written.update(converted.meta, num_tensors=len(state))
    written.update(meta or {})
    _save(dict(state_dict=state, meta=written), dst)
    return ConversionResult(dst, written, converted.summary, written.get('config'))
