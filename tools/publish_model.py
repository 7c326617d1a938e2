"""Make a training checkpoint publishable: ``python tools/publish_model.py IN_FILE OUT_FILE``.

Keeps only the model weights (``state_dict``, tensors made contiguous, on the CPU) and a ``meta`` of
plain Python types (versions, the source iteration/epoch, the dataset classes, the config text);
optimizer, parameter schedulers, message hub and anything else are dropped, so the file loads with
``torch.load(..., weights_only=True)``. An ``OUT_FILE`` ending in ``.safetensors`` is written in
that format instead (the tensors, and ``meta`` as JSON metadata; nothing to unpickle; every loader
of this package reads it, :mod:`mmseg_escnet.checkpoints.safetensors_io`). The file is written as
``<OUT_STEM>-<sha8>.pth`` (or ``.safetensors``), ``sha8`` being the first 8 hex digits of the
SHA-256 *of the written file*, which is what
:func:`mmseg_escnet.checkpoints.download.expected_sha256` checks when the file is downloaded. The
full hash and the lines for a metafile (``Weights:`` / ``Weights SHA-256:``) are printed.

An input that is missing, empty, cut short or not a checkpoint, and an output folder that cannot be
written, are reported on one line (``--debug`` shows the traceback); the output folder is checked
before the input is read. The input is verified first (its SHA-256 sidecar ``IN_FILE.sha256``,
written by training, or else the CRC-32 of its zip records): a corrupt checkpoint is refused
instead of being published under a fresh hash. ``OUT_FILE`` may be a folder (an existing one, or
a path ending in ``/``): the file is then written into it, named after ``IN_FILE``.

``python tools/publish_model.py IN_FILE NAME --hub-folder OUT [--license ID] [--eval-all JSON]
[--config CONFIG]`` writes a folder the Hugging Face Hub accepts as a model repository: the same
weights in safetensors, the Hub's format (``OUT/NAME-<sha8>.safetensors``), the config they were
trained with (``OUT/config.py``, from the checkpoint's meta, else ``--config`` or the model-zoo
config of NAME) and a model card
``OUT/README.md`` whose metadata block (licence, library, tags, datasets, results with their
sources) is :mod:`mmseg_escnet.checkpoints.hub_card`'s. Upload it with the Hub's own CLI
(``hf upload USER/NAME OUT``). A NAME of the model zoo adds its training data and its published
numbers (with their sources) to the card's text; ``--eval-all`` gives the checkpoint's own numbers
from ``tools/eval_all.py`` (the metadata's ``model-index``).
"""
import argparse
import json
import numbers
import re
import os
import os.path as osp
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import mmengine
import numpy as np
import torch

import mmseg_escnet
from mmseg_escnet.checkpoints.download import file_sha256
from mmseg_escnet.checkpoints.hub_card import (config_text, eval_all_results, model_card,
                                               training_classes)
from mmseg_escnet.checkpoints.model_zoo import load_model_index
from mmseg_escnet.checkpoints.safe_loading import load_local_checkpoint
from mmseg_escnet.checkpoints.safetensors_io import (load_safetensors_checkpoint,
                                                     read_safetensors_meta,
                                                     save_safetensors_checkpoint)
from mmseg_escnet.utils import ensure_writable_dir, run_cli

#: The extension that makes the published file a safetensors file (the Hub's format).
SAFETENSORS = '.safetensors'

#: Keys of a Runner checkpoint's ``meta`` that are kept (under the names on the right).
KEPT_META = {'epoch': 'source_epoch', 'iter': 'source_iter', 'cfg': 'config', 'seed': 'seed',
             'experiment_name': 'experiment_name', 'time': 'time',
             'mmengine_version': 'trained_with_mmengine', 'dataset_meta': 'dataset_meta'}


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain Python types (numbers, str, bool, None, lists, str-keyed dicts).

    Raises:
        TypeError: For anything else, naming ``where``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch's TorchVersion
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f'{where}: a mapping with non-string keys')
        return {k: _plain(v, f'{where}.{k}') for k, v in value.items()}
    raise TypeError(f'{where}: {type(value).__name__} is not a plain Python type')


def strip_checkpoint(checkpoint: Any, source: str) -> Dict[str, Any]:
    """Keep the weights and a plain-typed ``meta`` of a (Runner) checkpoint.

    Args:
        checkpoint (Any): The loaded checkpoint, a dict with ``state_dict``.
        source (str): Its file name, for messages.

    Returns:
        dict: ``{'state_dict': {name: contiguous CPU tensor}, 'meta': {...}}``.

    Raises:
        ValueError: ``checkpoint`` is not a dict with a non-empty ``state_dict`` of tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{source}: not a checkpoint (expected a dict with a state_dict, got '
                         f'{type(checkpoint).__name__})')
    state_dict = checkpoint.get('state_dict')
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f'{source}: no state_dict in the checkpoint (top-level keys: '
                         f'{sorted(map(str, checkpoint))}); tools/publish_model.py publishes '
                         f'checkpoints written by the training Runner')
    weights = {}
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or not torch.is_tensor(tensor):
            raise ValueError(f'{source}: state_dict entry {name!r} is a '
                             f'{type(tensor).__name__}, not a tensor')
        tensor = tensor.detach().cpu().contiguous()
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # a view of a larger storage: do not save the rest
        weights[name] = tensor
    meta = _plain({'mmseg_escnet_version': mmseg_escnet.__version__,
                   'mmengine_version': mmengine.__version__, 'torch_version': torch.__version__},
                  'meta')
    old_meta = checkpoint.get('meta') or {}
    for key, new_key in KEPT_META.items():
        if key not in old_meta:
            continue
        try:
            meta[new_key] = _plain(old_meta[key], f'meta.{key}')
        except TypeError as error:
            print(f'publish_model: dropping meta.{key} ({error})', file=sys.stderr)
    return {'state_dict': weights, 'meta': meta}


def output_path(in_file: str, out_file: str) -> str:
    """``out_file``, or ``<out_file>/<name of in_file>`` when ``out_file`` is a folder (an
    existing one or a path ending in a separator)."""
    separators = tuple({os.sep, '/', os.altsep or os.sep})
    if out_file.endswith(separators) or osp.isdir(out_file):
        return osp.join(out_file, osp.basename(in_file))
    return out_file


def published_name(out_file: str, sha256: str) -> str:
    """``<stem>-<first 8 hex of sha256><ext>``: ``ext`` is ``.safetensors`` for such an
    ``out_file``, else ``.pth`` (added when ``out_file`` has no ``.pth``)."""
    for ext in SAFETENSORS, '.pth':
        if out_file.endswith(ext):
            return f'{out_file[:-len(ext)]}-{sha256[:8]}{ext}'
    return f'{out_file}-{sha256[:8]}.pth'


def read_checkpoint(in_file: str) -> Any:
    """Load ``in_file`` with the shared safe loader; every failure names the file.

    Raises:
        FileNotFoundError: ``in_file`` does not exist.
        ValueError: ``in_file`` is empty, cut short, not a torch file, or holds objects outside
            the loader's allow-list.
    """
    try:
        return load_local_checkpoint(in_file, map_location='cpu')
    except (FileNotFoundError, ValueError):
        raise  # the loader's messages name the file and what is wrong with it
    except Exception as error:  # e.g. objects outside the allow-list
        raise ValueError(f'{in_file}: not a readable checkpoint ({type(error).__name__}: '
                         f'{error})') from error


def publish(in_file: str, out_file: str) -> Tuple[str, str]:
    """Strip ``in_file`` and write it beside ``out_file``, named with its own SHA-256.

    Args:
        in_file (str): A checkpoint written by the training Runner.
        out_file (str): Output name; ``-<sha8>`` is inserted before ``.pth``. A folder (existing
            or ending in a separator) means ``<folder>/<name of in_file>``.

    Returns:
        tuple[str, str]: The written path and its full SHA-256.

    Raises:
        OSError: The folder of ``out_file`` cannot be written (checked before reading).
        FileNotFoundError: ``in_file`` does not exist.
        ValueError: ``in_file`` is empty, cut short, corrupt (hash or CRC mismatch), not a torch
            file or not a checkpoint with a ``state_dict``.
    """
    out_file = output_path(in_file, out_file)
    out_dir = ensure_writable_dir(osp.dirname(osp.abspath(out_file)), 'the published checkpoint')
    stripped = strip_checkpoint(read_checkpoint(in_file), in_file)
    handle, partial = tempfile.mkstemp(suffix='.part', dir=out_dir)
    os.close(handle)
    try:
        if out_file.endswith(SAFETENSORS):
            save_safetensors_checkpoint(stripped, partial)
            load_safetensors_checkpoint(partial)  # self-check: it reads back
        else:
            # Through a file object: torch.save then names the zip records 'archive/...' instead
            # of after the (random) temporary file, so the same input always gives the same bytes
            # and name.
            with open(partial, 'wb') as f:
                torch.save(stripped, f)
            # self-check: the file must load without unpickling arbitrary objects
            torch.load(partial, map_location='cpu', weights_only=True, mmap=True)
        sha256 = file_sha256(partial)
        final = published_name(osp.abspath(out_file), sha256)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp makes it private; a published file is not
        os.replace(partial, final)
    finally:
        if osp.exists(partial):
            os.remove(partial)
    return final, sha256


#: A Hugging Face Hub repository name.
HUB_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,95}')


def hub_folder(in_file: str, name: str, out_dir: str, *, license_id: Optional[str] = None,
               eval_all: Optional[str] = None, config: Optional[str] = None) -> Dict[str, str]:
    """Write the Hub-ready folder (module docstring).

    Args:
        in_file (str): a checkpoint written by the training Runner.
        name (str): the model's name on the Hub (a model-zoo name adds its entry).
        out_dir (str): the folder to write.
        license_id (str, optional): the Hub's licence identifier (None: ``other``).
        eval_all (str, optional): ``eval_all.json`` of ``tools/eval_all.py`` for this checkpoint.
        config (str, optional): the config file, when the checkpoint records none.

    Returns:
        dict: the written ``weights``, ``config`` and ``card`` paths and the ``sha256``.

    Raises:
        ValueError: a name the Hub refuses, an unreadable ``eval_all.json``, no config, or the
            checkpoint problems of :func:`publish`.
    """
    if not HUB_NAME.fullmatch(name) or '..' in name or name.endswith(('.git', '.')):
        raise ValueError(f'NAME {name!r} is not a Hugging Face Hub repository name (letters, '
                         'digits, ".", "_" and "-", at most 96 characters)')
    summary = None
    if eval_all:
        try:
            with open(eval_all, encoding='utf-8') as f:
                summary = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f'--eval-all {eval_all}: not a readable eval_all.json ({error})') \
                from error
    info = load_model_index().get(name)
    out_dir = ensure_writable_dir(osp.abspath(out_dir), '--hub-folder')
    results = [] if summary is None else eval_all_results(summary)
    weights, sha256 = publish(in_file, osp.join(out_dir, f'{name}{SAFETENSORS}'))
    meta = read_safetensors_meta(weights)  # the header only
    paths = dict(weights=weights, config=osp.join(out_dir, 'config.py'),
                 card=osp.join(out_dir, 'README.md'), sha256=sha256)
    with open(paths['config'], 'w', encoding='utf-8') as f:
        f.write(config_text(meta, config or (info.config if info else None)))
    card = model_card(name, weights_file=osp.basename(weights), sha256=sha256,
                      config_file='config.py', license_id=license_id,
                      results=results, info=info, classes=training_classes(meta),
                      results_source=f'tools/eval_all.py ({osp.basename(eval_all or "")})')
    card.save(paths['card'])
    earlier = sorted(f for f in os.listdir(out_dir) if f != osp.basename(weights) and re.fullmatch(
        re.escape(name) + r'-[0-9a-f]{8}\.(safetensors|pth)', f))
    if earlier:
        print(f'publish_model: warning: {out_dir} also holds {", ".join(earlier)} from an earlier '
              f'publish; delete it before uploading (the card describes '
              f'{osp.basename(weights)})', file=sys.stderr)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Command-line entry; returns the written path (the folder with ``--hub-folder``)."""
    parser = argparse.ArgumentParser(
        description='Strip a training checkpoint to its weights and name it with its SHA-256')
    parser.add_argument('in_file', help='checkpoint written by tools/train.py')
    parser.add_argument('out_file', help='output name, e.g. catseg_vitb16.pth (becomes '
                        'catseg_vitb16-<sha8>.pth; .safetensors: that format), or a folder (DIR/) '
                        'to write into; with --hub-folder: the model\'s name on the Hub')
    parser.add_argument('--hub-folder', metavar='OUT',
                        help='write a Hugging Face Hub model folder: weights, config, model card')
    parser.add_argument('--license', help="the Hub's licence identifier for the card, e.g. "
                        'apache-2.0 (default: other)')
    parser.add_argument('--eval-all', help="tools/eval_all.py's eval_all.json of this checkpoint")
    parser.add_argument('--config', help='the config file, if the checkpoint records none')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.hub_folder:
        paths = hub_folder(args.in_file, args.out_file, args.hub_folder,
                           license_id=args.license, eval_all=args.eval_all, config=args.config)
        print('\n'.join([f'wrote {args.hub_folder}: {osp.basename(paths["weights"])}, '
                         'config.py, README.md (the model card)',
                         f'SHA-256 of the weights: {paths["sha256"]}',
                         f'upload with the Hub\'s CLI: hf upload <user>/{args.out_file} '
                         f'{args.hub_folder}']))
        return args.hub_folder
    if args.license or args.eval_all or args.config:
        parser.error('--license, --eval-all and --config go with --hub-folder')
    final, sha256 = publish(args.in_file, args.out_file)
    lines: List[str] = [
        f'published {final}', f'SHA-256: {sha256}', 'metafile lines (use the URL you upload to):',
        f'    Weights: https://<host>/<path>/{osp.basename(final)}',
        f'    Weights SHA-256: {sha256}'
    ]
    print('\n'.join(lines))
    return final


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/publish_model.py'))
