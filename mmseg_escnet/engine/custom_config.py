"""Configs for a user's data: the logic of ``tools/misc/make_custom_config.py``.

A generated config inherits (through ``_base_``, with paths relative to its own folder) the
model's config and the model's own test protocol, and points the dataloaders at the user's
folder (:class:`~mmseg_escnet.datasets.CustomFolderDataset`) or at a dataset type of
MMSegmentation, with the user's class names as the vocabulary. This module finds the model and
its protocol, reads the folder's layout, makes a seeded validation split, reads MMSegmentation's
own dataset configs, flags class names that make poor prompts, sizes a fine-tuning schedule and
writes the config text. It writes nothing itself except through :func:`write_lines`.
"""
import math
import os
import os.path as osp
import random
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..checkpoints.convert import REPO_ROOT
from ..checkpoints.model_zoo import get_model, load_model_index
from ..checkpoints.model_zoo import resolve_model as resolve_model_spec
from ..datasets.folder_check import IMAGE_EXTENSIONS

#: The model-zoo collections and the family names used here.
COLLECTIONS = {'CAT-Seg': 'catseg', 'ESC-Net': 'escnet', 'SED': 'sed', 'LMSeg': 'lmseg',
               'ERR-Seg': 'errseg'}
BENCHMARKS = osp.join(REPO_ROOT, 'configs', '_base_', 'benchmarks')


@dataclass(frozen=True)
class Protocol:
    """A family's zero-shot protocol in ``configs/_base_/benchmarks/``.

    Attributes:
        files (list[str]): the benchmark files to inherit.
        test_cfg (str): its ``test_cfg`` there (config source).
        pipeline (str): its test pipeline there (config source).
        large_model (dict): model keys the L model sets at test (config source), e.g. ERR-Seg L's
            768 px.
    """
    files: Tuple[str, ...]
    test_cfg: str
    pipeline: str = '_base_.benchmark_pipeline'
    large_model: Tuple[Tuple[str, str], ...] = ()


#: Each family's zero-shot protocol. ERR-Seg keeps the K = 32 classes per image of its A-150
#: setting (the official K is 16 to 48 by benchmark; docs/errseg.md).
PROTOCOLS = {
    'catseg': Protocol(('protocol.py', ), '_base_.benchmark_test_cfg'),
    'escnet': Protocol(('protocol.py', ), '_base_.benchmark_test_cfg'),
    'sed': Protocol(('protocol.py', 'sed_protocol.py'), '_base_.sed_test_cfg'),
    'lmseg': Protocol(('protocol.py', 'lmseg_protocol.py'), '_base_.lmseg_test_cfg'),
    'errseg': Protocol(('protocol.py', 'errseg_protocol.py'), "_base_.errseg_test_cfgs['a150']",
                       '_base_.errseg_benchmark_pipeline',
                       (('clip_resolution', '_base_.errseg_large_test_resolution'), )),
}
#: ASSUMED seconds per training iteration at 1 image per GPU (GPUs work in parallel), by family
#: and size (B: ViT-B/ConvNeXt-B, L: ViT-L/ConvNeXt-L). An order of magnitude for a current
#: data-centre GPU (A100 class), from the papers' recipe of 80k iterations at 4 x 1 images in
#: roughly 8 to 20 hours; not measured here. ``--sec-per-iter`` replaces it.
SEC_PER_ITER = {('catseg', 'B'): 0.35, ('catseg', 'L'): 0.6, ('escnet', 'B'): 0.5,
                ('escnet', 'L'): 0.9, ('sed', 'B'): 0.35, ('sed', 'L'): 0.6,
                ('lmseg', 'B'): 0.5, ('lmseg', 'L'): 0.9, ('errseg', 'B'): 0.25,
                ('errseg', 'L'): 0.45}
#: Assumed for a config outside the model zoo (e.g. the tiny CPU models: about 0.5-1 s).
DEFAULT_SEC_PER_ITER = 1.0
#: Mask suffixes tried in a flat folder when none is given.
FLAT_MASK_SUFFIXES = ('_mask.png', '_masks.png', '_label.png', '_labels.png', '_seg.png',
                      '_gt.png', '_anno.png', '_annotation.png', '_mask.tif', '_label.tif')


class Expr(str):
    """Config source text written as is (e.g. ``_base_.benchmark_pipeline``)."""

    def __repr__(self) -> str:
        return str(self)


@dataclass
class ModelChoice:
    """The model a config is made for.

    Attributes:
        config (str): absolute path of the model's config.
        family (str): 'catseg', 'escnet', 'sed', 'lmseg' or 'errseg'.
        zoo_name (str | None): its model-zoo name when the config is a zoo model's.
        has_weights (bool): the zoo publishes weights for it.
        size (str): 'B' or 'L' (for the time estimate).
        cfg (Config): the loaded config.
    """
    config: str
    family: str
    zoo_name: Optional[str]
    has_weights: bool
    size: str
    cfg: Config


def model_family(model: dict, where: str) -> str:
    """The family of a model config: LMSeg by segmentor, the others by neck type.

    Raises:
        ValueError: a model of none of the five families, naming its types.
    """
    if model.get('type') == 'LMSegEncoderDecoder':
        return 'lmseg'
    neck = (model.get('neck') or {}).get('type')
    family = {'CATSegAggregator': 'catseg', 'ESCNeck': 'escnet', 'SEDCostNeck': 'sed',
              'ERRSegNeck': 'errseg'}.get(neck)
    if family is None:
        raise ValueError(f'{where}: model type {model.get("type")!r} with neck {neck!r} is none '
                         f'of CAT-Seg, ESC-Net, SED, LMSeg or ERR-Seg')
    return family


def resolve_model(spec: str) -> ModelChoice:
    """A model-zoo name (``catseg_vitb16``) or a config path -> :class:`ModelChoice`.

    The same rule as every other entry point
    (:func:`mmseg_escnet.checkpoints.model_zoo.resolve_model`): a config file ends with ``.py`` (or
    another config suffix); anything else is a model-zoo name.

    Raises:
        FileNotFoundError: a config path that does not exist.
        ValueError: neither a config file nor a known model-zoo name (close names suggested).
    """
    try:
        cfg, weights = resolve_model_spec(spec, None)
    except FileNotFoundError as error:
        raise FileNotFoundError(f'--model: {error}') from error
    if weights == f'zoo://{spec}':
        info = get_model(spec)
    else:
        config = osp.abspath(cfg.filename)
        info = next((i for i in load_model_index().values() if i.config == config), None)
    config = info.config if info else osp.abspath(cfg.filename)
    family = model_family(cfg.model, config)
    name = info.name if info else osp.splitext(osp.basename(config))[0]
    size = 'L' if re.search(r'vitl|large', name) else 'B'
    return ModelChoice(config, family, info.name if info else None,
                       bool(info and info.weights), size, cfg)


@dataclass
class Folder:
    """A user's folder as the dataset will read it.

    Attributes:
        data_root (str): absolute path.
        layout (str): 'mmseg' or 'flat'.
        img_suffix, seg_map_suffix (str): the suffixes.
        splits (list[str]): the split folders of the mmseg layout ([] for flat).
        notes (list[str]): what was detected, for the user.
    """
    data_root: str
    layout: str
    img_suffix: str
    seg_map_suffix: str
    splits: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def dirs(self, split: Optional[str]) -> Tuple[str, str]:
        """The image and mask folders of a split."""
        if self.layout == 'flat':
            return self.data_root, self.data_root
        return (osp.join(self.data_root, 'img_dir', split or ''),
                osp.join(self.data_root, 'ann_dir', split or ''))


def _extensions(folder: str, recursive: bool = True, exclude: str = '') -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for _, dirnames, files in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')] if recursive else []
        for name in files:
            ext = osp.splitext(name)[1].lower()
            if not name.startswith('.') and ext in IMAGE_EXTENSIONS and not (
                    exclude and name.endswith(exclude)):
                counts[ext] = counts.get(ext, 0) + 1
    return counts


def _one_extension(counts: Dict[str, int], folder: str, option: str) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    found = ', '.join(f'{n} *{ext}' for ext, n in sorted(counts.items())) or 'no image files'
    raise ValueError(f'cannot tell the suffix of {folder}: it holds {found}; give {option}')


def detect_folder(data_root: str, layout: Optional[str] = None, img_suffix: Optional[str] = None,
                  seg_map_suffix: Optional[str] = None) -> Folder:
    """Work out the layout and the suffixes a folder leaves no doubt about.

    mmseg layout: ``img_dir/<split>/`` and ``ann_dir/<split>/``; flat: images and masks side by
    side, masks told apart by a suffix (``a.jpg`` and ``a_mask.png``).

    Raises:
        ValueError: what cannot be told (naming the option to give), a missing folder.
    """
    root = osp.abspath(data_root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'--data-root: folder not found: {data_root}')
    notes = []
    if layout is None:
        if osp.isdir(osp.join(root, 'img_dir')):
            layout = 'mmseg'
        elif _extensions(root, recursive=False):
            layout = 'flat'
        else:
            raise ValueError(f'cannot tell the layout of {data_root}: it has no img_dir/ (mmseg '
                             f'layout) and no images of its own (flat layout); give --layout')
        notes.append(f'layout: {layout} (detected)')
    splits = []
    if layout == 'mmseg':
        img_root = osp.join(root, 'img_dir')
        splits = sorted(d for d in os.listdir(img_root) if osp.isdir(osp.join(img_root, d))) \
            if osp.isdir(img_root) else []
        if not splits:
            raise ValueError(f'{osp.join(data_root, "img_dir")} holds no split folder '
                             f'(img_dir/train, img_dir/val, ...)')
        notes.append(f'splits: {", ".join(splits)}')
        if img_suffix is None:
            img_suffix = _one_extension(_extensions(img_root), img_root, '--img-suffix')
            notes.append(f'image suffix: {img_suffix} (detected)')
        if seg_map_suffix is None:
            ann_root = osp.join(root, 'ann_dir')
            seg_map_suffix = (_one_extension(_extensions(ann_root), ann_root, '--seg-suffix')
                              if osp.isdir(ann_root) else '.png')
            notes.append(f'mask suffix: {seg_map_suffix} (detected)')
    elif layout == 'flat':
        if seg_map_suffix is None:
            names = [n for n in os.listdir(root) if osp.isfile(osp.join(root, n))]
            found = [s for s in FLAT_MASK_SUFFIXES if any(n.endswith(s) for n in names)]
            if len(found) != 1:
                raise ValueError(f'cannot tell which files of {data_root} are masks (suffixes '
                                 f'found: {found or "none of " + ", ".join(FLAT_MASK_SUFFIXES)}); '
                                 f'give --seg-suffix, e.g. --seg-suffix _mask.png')
            seg_map_suffix = found[0]
            notes.append(f'mask suffix: {seg_map_suffix} (detected)')
        if img_suffix is None:
            img_suffix = _one_extension(_extensions(root, False, seg_map_suffix), root,
                                        '--img-suffix')
            notes.append(f'image suffix: {img_suffix} (detected)')
    else:
        raise ValueError(f"--layout must be 'mmseg' or 'flat', got {layout!r}")
    return Folder(root, layout, img_suffix, seg_map_suffix, splits, notes)


def split_stems(stems: Sequence[str], fraction: float, seed: int = 0
                ) -> Tuple[List[str], List[str]]:
    """A fixed, seeded validation split: (train, val), each sorted.

    The same stems, fraction and seed always give the same split (independent of the order of
    ``stems``). At least one sample goes to each side.

    Raises:
        ValueError: fewer than 2 samples, or a fraction outside (0, 1).
    """
    if not 0 < fraction < 1:
        raise ValueError(f'--val-fraction must be between 0 and 1, got {fraction}')
    if len(stems) < 2:
        raise ValueError(f'cannot split {len(stems)} sample(s) into training and validation')
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(fraction * len(order))))
    return sorted(order[count:]), sorted(order[:count])


@dataclass
class Schedule:
    """A fine-tuning length and its estimate (see :func:`plan_schedule`)."""
    train_size: int
    batch_per_gpu: int
    gpus: int
    iters_per_epoch: int
    max_iters: int
    epochs: float
    val_interval: int
    sec_per_iter: float
    sec_assumed: str
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """The printed estimate."""
        seconds = self.max_iters * self.sec_per_iter * self.batch_per_gpu
        took = (f'{seconds / 3600:.1f} h' if seconds >= 3600 else
                f'{seconds / 60:.0f} min' if seconds >= 60 else f'{seconds:.0f} s')
        lines = [
            f'fine-tuning estimate: {self.train_size} training images, total batch '
            f'{self.batch_per_gpu * self.gpus} ({self.gpus} GPU(s) x {self.batch_per_gpu}) -> '
            f'{self.iters_per_epoch} iterations per epoch',
            f'  {self.max_iters} iterations = {self.epochs:.1f} epochs; validation and '
            f'checkpoint every {self.val_interval} iterations',
            f'  about {took} at {self.sec_per_iter:g} s per iteration and image per GPU '
            f'({self.sec_assumed})']
        return '\n'.join(lines + [f'  {n}' for n in self.notes])


def plan_schedule(train_size: int, batch_per_gpu: int, gpus: int, epochs: float,
                  paper_iters: int, min_iters: int, iters: Optional[int],
                  sec_per_iter: float, sec_assumed: str, num_vals: int = 10) -> Schedule:
    """Iterations from epochs over the training images, clamped to [min_iters, paper_iters]
    (``iters`` given: exactly that), validation ``num_vals`` times.

    Raises:
        ValueError: a non-positive count.
    """
    for key, value in (('--batch-size', batch_per_gpu), ('--gpus', gpus), ('--epochs', epochs)):
        if value <= 0:
            raise ValueError(f'{key} must be positive, got {value}')
    per_epoch = max(1, math.ceil(train_size / (batch_per_gpu * gpus)))
    notes = []
    if iters is not None:
        if iters < 1:
            raise ValueError(f'--iters must be positive, got {iters}')
        max_iters = iters
        notes.append(f'--iters {iters} given (epochs and clamping not used)')
    else:
        wanted = math.ceil(epochs * per_epoch)
        max_iters = min(max(wanted, min_iters), paper_iters)
        if max_iters != wanted:
            notes.append(f'{epochs:g} epochs would be {wanted} iterations: clamped to '
                         f'[{min_iters}, {paper_iters} (the paper\'s)]')
    val_interval = max(1, max_iters // num_vals)
    return Schedule(train_size, batch_per_gpu, gpus, per_epoch, max_iters, max_iters / per_epoch,
                    val_interval, sec_per_iter, sec_assumed, notes)


def scaled_schedulers(schedulers: Any, old_iters: int, new_iters: int) -> List[dict]:
    """The paper's parameter schedulers with every ``end``/``T_max`` at ``old_iters`` moved to
    ``new_iters`` (a warm-up that ends earlier stays)."""
    schedulers = [schedulers] if isinstance(schedulers, dict) else list(schedulers or [])
    out = []
    for scheduler in schedulers:
        scheduler = dict(scheduler)
        for key in ('end', 'T_max'):
            if scheduler.get(key) == old_iters:
                scheduler[key] = new_iters
        out.append(scheduler)
    return out


def assign(name: str, value: Any) -> str:
    """The config line ``name = <value>``, wrapped to 100 columns."""
    return f'{name} = {py(value, first=len(name) + 3)}'


def py(value: Any, indent: int = 0, width: int = 100, first: int = 0) -> str:
    """Config source of ``value``: ``dict(k=v)``, lists, :class:`Expr`, literals; wrapped.

    ``indent`` is the column of the value's continuation lines, ``first`` the columns taken
    before it on its first line."""
    if isinstance(value, dict):
        named = all(isinstance(k, str) and k.isidentifier() for k in value)
        parts = [(f'{k}=' if named else f'{k!r}: ') + py(v, indent + 4, width)
                 for k, v in value.items()]
        head, tail = ('dict(', ')') if named else ('{', '}')
    elif isinstance(value, (list, tuple)):
        parts = [py(v, indent + 4, width) for v in value]
        head, tail = ('[', ']') if isinstance(value, list) else ('(', ',)' if len(value) == 1
                                                                 else ')')
    else:
        return repr(value)
    line = head + ', '.join(parts) + tail
    if len(line) + indent + first <= width and '\n' not in line:
        return line
    pad = ' ' * (indent + 4)
    return head + '\n' + ',\n'.join(pad + p for p in parts) + (')' if tail == ',)' else tail)


def relative_bases(out: str, bases: Sequence[str]) -> List[str]:
    """``_base_`` entries relative to the folder of ``out`` (MMEngine resolves them there)."""
    folder = osp.dirname(osp.abspath(out))
    return [osp.relpath(osp.abspath(b), folder) for b in bases]


def write_lines(path: str, lines: Sequence[str]) -> None:
    """Write ``lines`` (one per line) to ``path``, creating its folder."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(f'{line}\n' for line in lines))
