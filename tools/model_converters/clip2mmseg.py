"""Convert official CLIP weights into an mmseg checkpoint for ``CLIPBackbone``.

Usage::

    python tools/model_converters/clip2mmseg.py SRC DST [--model-name ViT-B-16]

SRC is any format ``mmseg_escnet.checkpoints.clip_official`` reads (OpenAI TorchScript
archive or state dict, open_clip ``.bin``/``.pt``/``.pth``/``.safetensors``, or an http(s) URL).
DST is written as ``{'state_dict': {'backbone.clip_model.<name>': tensor}, 'meta': {...}}`` with
float32 tensors, q/k/v split into ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` (the
names CAT-Seg and ``CLIPBackbone`` use) and only plain Python types in ``meta``, so
``load_from=DST`` in an mmseg config loads it under torch's ``weights_only`` loading.

With ``--model-name`` the weights are checked against that open_clip architecture (built with
random weights) and a positional embedding made for another grid is resized to it. The folder of
DST is checked before anything is read; errors are one line on stderr (``--debug`` shows the
traceback): an HTML page (a failed download) is named as such, and a file holding Python objects
besides tensors names them (a legacy-format file too).
"""
import argparse
import os.path as osp
import pickle
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_escnet.checkpoints.clip_official import (  # noqa: E402
    match_state_dict, merge_qkv, normalize_clip_state_dict, read_weights_file, split_qkv)
from mmseg_escnet.checkpoints.download import local_checkpoint_path  # noqa: E402
from mmseg_escnet.checkpoints.official_checkpoint import (  # noqa: E402
    html_page_problem, refused_pickle_error)
from mmseg_escnet.utils import ensure_writable_dir, run_cli  # noqa: E402

PREFIX = 'backbone.clip_model.'


def convert(src: str, dst: str, model_name: Optional[str] = None) -> Dict[str, object]:
    """Convert ``src`` CLIP weights into an mmseg checkpoint at ``dst``.

    Args:
        src (str): Path or http(s) URL of the official weights.
        dst (str): Output file; parent folders are created.
        model_name (str, optional): open_clip architecture to validate against.

    Returns:
        dict: The ``meta`` written to ``dst``.

    Raises:
        OSError: The folder of ``dst`` cannot be written (checked first).
        ValueError: ``src`` is an HTML page (a failed download), holds Python objects besides
            tensors (named; an mmseg training checkpoint is named as such), or no CLIP weights.
    """
    ensure_writable_dir(osp.dirname(osp.abspath(dst)), 'the converted checkpoint')
    path = local_checkpoint_path(src, what='CLIP weights')
    problem = html_page_problem(path)
    if problem is not None:
        raise ValueError(f'{src}: {problem}')
    try:
        fmt, raw = read_weights_file(path)
    except ValueError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError):
            raise refused_pickle_error(src, path, 'official CLIP weights file', err) from err
        raise
    state = normalize_clip_state_dict(raw)  # open_clip names, packed q/k/v, float32
    if model_name is not None:
        from mmseg_escnet.models.backbones.clip import CLIPBackbone
        backbone = CLIPBackbone(model_name, out_indices=(), finetune='frozen')
        state = match_state_dict(state, merge_qkv(backbone.clip_model.state_dict()),
                                 grid=backbone.pretrain_grid, strict=True, source=src)
    state = split_qkv(state)
    meta = dict(source=str(src), source_format=fmt, model_name=model_name or '',
                num_tensors=len(state), converter='tools/model_converters/clip2mmseg.py')
    checkpoint = dict(state_dict={PREFIX + k: v.contiguous() for k, v in state.items()},
                      meta=meta)
    torch.save(checkpoint, dst)
    return meta


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description='Convert CLIP weights for mmseg CLIPBackbone')
    parser.add_argument('src', help='official CLIP weights: path or http(s) URL')
    parser.add_argument('dst', help='output mmseg checkpoint path')
    parser.add_argument('--model-name', default=None,
                        help='open_clip architecture to check the weights against, e.g. ViT-B-16')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    meta = convert(args.src, args.dst, args.model_name)
    print(f'converted {meta["num_tensors"]} tensors ({meta["source_format"]}) -> {args.dst}')


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/model_converters/clip2mmseg.py'))
