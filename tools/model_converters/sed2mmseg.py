"""Convert an official SED (detectron2) checkpoint into an mmseg checkpoint for our SED.

Usage::

    python tools/model_converters/sed2mmseg.py SRC DST [--config CONFIG]

SRC is a local file or an http(s) URL of an official checkpoint (xb534/SED's README links the
ConvNeXt-B and ConvNeXt-L models). It is read with ``torch.load(..., weights_only=True)``: a
file holding Python objects besides tensors is refused with a message naming them; an HTML page
(a failed download) and an mmseg/MMEngine training checkpoint (no conversion needed) are named as
such. Every key is converted or refused (:mod:`mmseg_escnet.checkpoints.sed_checkpoint`).

The result is checked against CONFIG (default: ``configs/sed_convnext_base.py`` or
``configs/sed_convnext_large.py``, by the checkpoint's ConvNeXt width): the model is built on
CPU and must load the weights strictly, key for key and shape for shape. DST is written as
``{'state_dict': ..., 'meta': {...}}`` with only plain Python types in ``meta``. Errors are one
line on stderr (``--debug`` shows the traceback).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmseg_escnet.checkpoints.official_checkpoint import (  # noqa: E402
    load_official_checkpoint, state_dict_problems)
from mmseg_escnet.checkpoints.sed_checkpoint import (  # noqa: E402
    convert_sed_checkpoint, sed_architecture)
from mmseg_escnet.utils import ensure_writable_dir, run_cli  # noqa: E402

CONVERTER = 'tools/model_converters/sed2mmseg.py'
#: Config checked against when ``--config`` is not given, by open_clip model name.
DEFAULT_CONFIGS = {
    'convnext_base_w_320': osp.join('configs', 'sed_convnext_base.py'),
    'convnext_large_d_320': osp.join('configs', 'sed_convnext_large.py'),
}


def check_against_config(state: Dict[str, torch.Tensor], config: str) -> None:
    """Build ``config``'s model on CPU and require ``state`` to load into it strictly.

    Raises:
        ValueError: On missing or unexpected keys or shape mismatches (e.g. a ConvNeXt-L
            checkpoint against the ConvNeXt-B config).
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_escnet  # noqa: F401  (registers the modules)

    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = None  # the checkpoint holds CLIP: nothing to download
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    problems = state_dict_problems(state, model.state_dict())
    if problems:
        raise ValueError(f'the converted weights do not fit {config}: ' + '; '.join(problems))
    model.load_state_dict(state, strict=True)


def convert(src: str, dst: str, config: Optional[str] = None) -> Dict[str, object]:
    """Convert the official SED checkpoint ``src`` into an mmseg checkpoint at ``dst``.

    Args:
        src (str): Local path or http(s) URL of the official checkpoint.
        dst (str): Output file; parent folders are created.
        config (str, optional): Config to check against; by default the repository's SED
            config of the detected ConvNeXt.

    Returns:
        dict: The ``meta`` written to ``dst``.

    Raises:
        OSError: The folder of ``dst`` cannot be written (checked first).
        FileNotFoundError: A local ``src`` does not exist.
        ValueError: Naming ``src`` and the problem.
    """
    ensure_writable_dir(osp.dirname(osp.abspath(dst)), 'the converted checkpoint')
    checkpoint = load_official_checkpoint(src, 'official SED checkpoint')
    try:
        state = convert_sed_checkpoint(checkpoint)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{src}: {err}') from err
    arch = sed_architecture(state)
    if config is None:
        if arch not in DEFAULT_CONFIGS:
            raise ValueError(f'{src}: no default config for this ConvNeXt width (not SED-B or '
                             'SED-L); pass --config')
        config = osp.join(ROOT, DEFAULT_CONFIGS[arch])
    try:
        check_against_config(state, config)
    except ValueError as err:
        raise ValueError(f'{src}: {err}') from err
    config = osp.abspath(config)
    if config.startswith(ROOT + os.sep):
        config = osp.relpath(config, ROOT)  # e.g. configs/sed_convnext_base.py
    meta = dict(source=str(src), converter=CONVERTER, architecture=arch or 'custom',
                config=config, num_tensors=len(state))
    torch.save(dict(state_dict=state, meta=meta), dst)
    return meta


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point (run through :func:`mmseg_escnet.utils.run_cli`)."""
    parser = argparse.ArgumentParser(
        description='Convert an official SED (detectron2) checkpoint for mmseg_escnet')
    parser.add_argument('src', help='official checkpoint: local path or http(s) URL')
    parser.add_argument('dst', help='output mmseg checkpoint path')
    parser.add_argument('--config', default=None,
                        help='config to check the weights against (default: '
                        'configs/sed_convnext_base.py or configs/sed_convnext_large.py)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    meta = convert(args.src, args.dst, args.config)
    print(f'converted {meta["num_tensors"]} tensors ({meta["architecture"]}), loads strictly '
          f'into {meta["config"]} -> {args.dst}')


if __name__ == '__main__':
    sys.exit(run_cli(main, CONVERTER))
