"""Convert an official CAT-Seg (detectron2) checkpoint into an mmseg checkpoint for our CAT-Seg.

Usage::

    python tools/model_converters/catseg2mmseg.py SRC DST [--config CONFIG]

SRC is a local file or an http(s) URL of an official checkpoint, e.g.
``https://huggingface.co/hamacojr/CAT-Seg/resolve/main/model_final_base.pth`` (ViT-B/16) or
``.../model_final_large.pth`` (ViT-L/14@336px). It is read with ``torch.load(...,
weights_only=True)``: a file holding Python objects besides tensors is refused, with a message
naming them; an HTML page (a failed download) and an mmseg/MMEngine training checkpoint (no
conversion needed) are named as such (:mod:`mmseg_escnet.checkpoints.official_checkpoint`).
Every key is converted or refused (:mod:`mmseg_escnet.checkpoints.catseg_checkpoint`).

The result is checked against CONFIG (default: ``configs/catseg_vitb16.py`` or
``configs/catseg_vitl14.py``, by the checkpoint's CLIP architecture): same CLIP architecture, then
the model is built on CPU and must load the weights strictly, key for key and shape for shape.
DST is written as ``{'state_dict': ..., 'meta': {...}}`` with only plain Python types in ``meta``,
so ``load_from=DST`` works under torch's ``weights_only`` loading; its folder is checked before
anything is read or built. Errors are one line on stderr (``--debug`` shows the traceback).
"""
import argparse
import os
import os.path as osp
import sys
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmseg_escnet.checkpoints.catseg_checkpoint import (  # noqa: E402
    CLIPArchitecture, check_architecture, clip_architecture, clip_architecture_from_config,
    split_catseg_checkpoint)
from mmseg_escnet.checkpoints.official_checkpoint import (  # noqa: E402
    load_official_checkpoint, state_dict_problems)
from mmseg_escnet.utils import ensure_writable_dir, run_cli  # noqa: E402

CONVERTER = 'tools/model_converters/catseg2mmseg.py'
#: Config checked against when ``--config`` is not given, by CLIP architecture name.
DEFAULT_CONFIGS = {
    'ViT-B/16': osp.join('configs', 'catseg_vitb16.py'),
    'ViT-L/14@336px': osp.join('configs', 'catseg_vitl14.py'),
}


def load_checkpoint_file(src: str) -> Mapping:
    """Read an official CAT-Seg checkpoint safely (see :func:`load_official_checkpoint`)."""
    return load_official_checkpoint(src, 'official CAT-Seg checkpoint')


def check_against_config(state: Dict[str, torch.Tensor], dropped: Dict[str, torch.Tensor],
                         arch: CLIPArchitecture, config: str) -> None:
    """Build ``config``'s model on CPU and require ``state`` to load into it strictly.

    Args:
        state (dict): Converted state dict.
        dropped (dict): Dropped official buffers (official names); the Swin attention masks
            must equal the ones the model rebuilds, else the aggregator geometry differs.
        arch (CLIPArchitecture): The checkpoint's CLIP architecture.
        config (str): Config file path.

    Raises:
        ValueError: On another CLIP architecture ("checkpoint is ... but ... builds ..."),
            missing or unexpected keys, shape mismatches or different Swin masks.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_escnet  # noqa: F401  (registers the modules)

    cfg = Config.fromfile(config)
    check_architecture(arch, clip_architecture_from_config(cfg.model.backbone), config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    problems = state_dict_problems(state, model.state_dict())
    buffers = dict(model.named_buffers())
    prefix = 'sem_seg_head.predictor.transformer.'
    for key, mask in dropped.items():
        ours = 'neck.' + key[len(prefix):] if key.startswith(prefix) else None
        if ours is not None and (ours not in buffers or buffers[ours].shape != mask.shape
                                 or not torch.equal(buffers[ours].float(), mask.float())):
            problems.append(f'{key} differs from the model\'s {ours} (another '
                            'feature_resolution/window_size?)')
    if problems:
        raise ValueError(f'the converted weights do not fit {config}: ' + '; '.join(problems))
    model.load_state_dict(state, strict=True)


def convert(src: str, dst: str, config: Optional[str] = None) -> Dict[str, object]:
    """Convert the official CAT-Seg checkpoint ``src`` into an mmseg checkpoint at ``dst``.

    Args:
        src (str): Local path or http(s) URL of the official checkpoint.
        dst (str): Output file; parent folders are created.
        config (str, optional): Config to check against; by default the repository's
            CAT-Seg config of the detected CLIP architecture.

    Returns:
        dict: The ``meta`` written to ``dst``.

    Raises:
        OSError: The folder of ``dst`` cannot be written (checked first).
        FileNotFoundError: A local ``src`` does not exist.
        ValueError: Naming ``src`` and the problem (see :func:`load_checkpoint_file`,
            :func:`~mmseg_escnet.checkpoints.catseg_checkpoint.split_catseg_checkpoint`,
            :func:`check_against_config`).
    """
    ensure_writable_dir(osp.dirname(osp.abspath(dst)), 'the converted checkpoint')
    checkpoint = load_checkpoint_file(src)
    try:
        state, dropped = split_catseg_checkpoint(checkpoint)
        arch = clip_architecture(state)
    except ValueError as err:
        raise ValueError(f'{src}: {err}') from err
    if config is None:
        if arch.name not in DEFAULT_CONFIGS:
            raise ValueError(f'{src}: no default config for a {arch.name} CAT-Seg checkpoint; '
                             'pass --config')
        config = osp.join(ROOT, DEFAULT_CONFIGS[arch.name])
    try:
        check_against_config(state, dropped, arch, config)
    except ValueError as err:
        raise ValueError(f'{src}: {err}') from err
    config = osp.abspath(config)
    if config.startswith(ROOT + os.sep):
        config = osp.relpath(config, ROOT)  # e.g. configs/catseg_vitb16.py
    meta = dict(source=str(src), converter=CONVERTER, architecture=arch.name, clip=asdict(arch),
                config=config, num_tensors=len(state), dropped_keys=sorted(dropped))
    torch.save(dict(state_dict=state, meta=meta), dst)
    return meta


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point (run through :func:`mmseg_escnet.utils.run_cli`)."""
    parser = argparse.ArgumentParser(
        description='Convert an official CAT-Seg (detectron2) checkpoint for mmseg_escnet')
    parser.add_argument('src', help='official checkpoint: local path or http(s) URL')
    parser.add_argument('dst', help='output mmseg checkpoint path')
    parser.add_argument('--config', default=None,
                        help='config to check the weights against (default: '
                        'configs/catseg_vitb16.py or configs/catseg_vitl14.py by architecture)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    meta = convert(args.src, args.dst, args.config)
    print(f'converted {meta["num_tensors"]} tensors ({meta["architecture"]}, '
          f'{len(meta["dropped_keys"])} constant buffers dropped), loads strictly into '
          f'{meta["config"]} -> {args.dst}')


if __name__ == '__main__':
    sys.exit(run_cli(main, CONVERTER))
