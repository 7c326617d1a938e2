"""MMSegmentation's own datasets as zero-shot benchmarks: their layout and their class names.

``tools/misc/make_custom_config.py --mmseg-dataset NAME`` evaluates a model on any dataset type
registered in MMSegmentation: the layout comes from the dataset config MMSegmentation ships
(``mmseg/.mim/configs/_base_/datasets/<name>.py``), the vocabulary from the type's
``METAINFO['classes']``. Class names written for a label file (``traffic_light``, ``bg``) make
poor CLIP prompts: :func:`prompt_problems` says why and suggests a better one.
"""
import inspect
import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from mmengine.config import Config

__all__ = ['MMSEG_DATASET_CONFIGS', 'MMSegDataset', 'mmseg_dataset', 'prompt_problems']

#: Where MMSegmentation's package keeps its dataset configs (below its ``.mim`` folder).
MMSEG_DATASET_CONFIGS = 'configs/_base_/datasets'


@dataclass
class MMSegDataset:
    """A dataset of MMSegmentation, read from its registry and its shipped config.

    Attributes:
        type (str): the registered type, e.g. 'CityscapesDataset'.
        config (str): mmseg's dataset config it was read from.
        dataset (dict): the test dataset's arguments there (data_prefix, ...) without type,
            data_root and pipeline.
        classes (list[str]): ``METAINFO['classes']``.
        defaults (dict): the type's img_suffix, seg_map_suffix, reduce_zero_label, ignore_index.
    """
    type: str
    config: str
    dataset: Dict[str, Any]
    classes: List[str]
    defaults: Dict[str, Any]


def _norm(name: str) -> str:
    return re.sub(r'[^a-z0-9]', '', name.lower()).replace('dataset', '')


def mmseg_dataset(name: str) -> MMSegDataset:
    """Find ``name`` (a type such as ``CityscapesDataset`` or a config name such as
    ``cityscapes``, ``mapillary_v1``, ``isaid``) in MMSegmentation.

    Raises:
        KeyError: unknown name (the known ones listed) or a type without a shipped config.
    """
    import mmseg
    import mmseg.datasets  # noqa: F401  (registers the types)
    from mmseg.registry import DATASETS
    folder = osp.join(osp.dirname(mmseg.__file__), '.mim', MMSEG_DATASET_CONFIGS)
    files = sorted(f[:-3] for f in os.listdir(folder) if f.endswith('.py')) \
        if osp.isdir(folder) else []
    types = {}
    for stem in files:
        with open(osp.join(folder, stem + '.py'), encoding='utf-8') as f:
            found = re.search(r"^dataset_type\s*=\s*['\"](\w+)['\"]", f.read(), re.MULTILINE)
        if found:
            types.setdefault(found.group(1), []).append(stem)
    registered = [t for t in DATASETS.module_dict if t in types]
    by_norm = {_norm(t): t for t in registered}
    if name in files:
        stem = name
    else:
        type_name = name if name in types else by_norm.get(_norm(name))
        if type_name is None:
            known = sorted({*files, *registered})
            raise KeyError(f'--mmseg-dataset {name!r} is neither a dataset type of mmseg with a '
                           f'dataset config nor such a config; known: {", ".join(known)}')
        # the config named after the type (cityscapes.py), else the shortest (no crop size)
        stem = min(types[type_name], key=lambda s: (_norm(s) != _norm(type_name), len(s)))
    cfg = Config.fromfile(osp.join(folder, stem + '.py'))
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    dataset = dict(loader.dataset)
    type_name = dataset.pop('type')
    for key in ('data_root', 'pipeline', 'test_mode', 'lazy_init', 'serialize_data'):
        dataset.pop(key, None)
    cls = DATASETS.get(type_name)
    if cls is None:
        raise KeyError(f'{osp.join(folder, stem)}.py names the dataset type {type_name!r}, '
                       f'which mmseg does not register')
    defaults: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if '__init__' in vars(klass):
            for key, param in inspect.signature(klass.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    defaults[key] = param.default
    defaults = {k: defaults.get(k) for k in ('img_suffix', 'seg_map_suffix',
                                            'reduce_zero_label', 'ignore_index')}
    defaults.update({k: dataset[k] for k in defaults if k in dataset})
    classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    if not classes:
        raise KeyError(f'{type_name} declares no METAINFO["classes"] to take the vocabulary from')
    return MMSegDataset(type_name, osp.join(folder, stem + '.py'), dataset,
                        [str(c) for c in classes], defaults)


#: Short forms a CLIP text encoder has rarely seen as class names.
ABBREVIATIONS = {'bg': 'background', 'misc': 'miscellaneous', 'veg': 'vegetation',
                 'ped': 'pedestrian', 'veh': 'vehicle', 'obj': 'object', 'sw': 'sidewalk',
                 'bldg': 'building', 'tv': 'television', 'imp': 'impervious surface'}


def prompt_problems(name: str) -> Tuple[List[str], str]:
    """Why a class name makes a poor prompt, and a suggested rewrite.

    Flags underscores, camelCase, digits, all-caps words (abbreviations), known abbreviations,
    trailing dots and very short names.

    Returns:
        tuple: (problems, suggestion); no problems -> ([], name).
    """
    problems = []
    words = re.split(r'[\s_\-/]+', name.strip())
    if '_' in name:
        problems.append('underscores')
    if re.search(r'[a-z][A-Z]', name):
        problems.append('camelCase')
    if re.search(r'\d', name):
        problems.append('digits')
    caps = [w for w in words if len(w) > 1 and w.isupper()]
    if caps:
        problems.append(f'all-caps {", ".join(caps)} (an abbreviation?)')
    short = [w for w in words if w.lower().rstrip('.') in ABBREVIATIONS or w.endswith('.')]
    if short:
        problems.append(f'abbreviation {", ".join(short)}')
    if len(name.strip()) <= 2:
        problems.append('very short')
    if not problems:
        return [], name
    text = re.sub(r'([a-z])([A-Z])', r'\1 \2', name).replace('_', ' ')
    text = re.sub(r'\s*-\s*', ' ', re.sub(r'\d+', ' ', text))
    out = []
    for word in text.split():
        key = word.lower().rstrip('.')
        out.append(ABBREVIATIONS.get(key, word if word.isupper() and len(word) > 1
                                     else word.lower()))
    return problems, ' '.join(out) or name
