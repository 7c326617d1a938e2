"""Count the multiply-accumulates (GMACs) and parameters of a config, without computing anything.

``python tools/analysis/get_flops.py CONFIG [--num-classes N] [--shape H W] [--cfg-options ...]
[--json OUT]``

The model is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and run
once through its test protocol under :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts the matrix multiplications and convolutions by shape: ViT-L/14 at 847 classes takes
seconds. Reported:

- ``gmacs``: the image path of one image under the config's ``test_cfg`` (``whole``: one view
  at the CLIP resolution; ``sliding_global``: CAT-Seg's crops plus the global view; mmseg's
  ``slide``: the crops of a ``--shape`` image), the class text embeddings cached, as our code
  computes it;
- ``official_gmacs``: the same as the official code computes it, with the guidance repeated for
  every class and the class-attention padding processed like classes
  (:mod:`mmseg_escnet.models.layers.official_cost`): what the papers' tables count;
- ``text_gmacs``: encoding the vocabulary's prompts with CLIP's text tower (once per vocabulary);
- ``modules``: GMACs of the backbone, neck and head and of their direct children.

The vocabulary has ``--num-classes`` names (default: the config's test vocabulary). Counts are
multiply-accumulates, the convention of fvcore and of the CAT-Seg / ESC-Net efficiency tables
("GFLOPs"). Not counted: element-wise operations, normalisations and interpolations, and
ESC-Net's pseudo prompt generator (k-means on at most h x w points per class, whose data-dependent
steps cannot run on shapes alone). ``class_filter=dict(type='pixel_topk', ...)`` and SED's
``'sed_cer'`` keep a data-dependent number of classes and cannot be counted this way either.
"""
import argparse
import atexit
import os.path as osp
import shutil
import sys
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.fx.experimental._config as fx_config
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import mmseg_escnet  # noqa: F401  (registers our modules)
from mmseg_escnet.models.layers.official_cost import official_cost
from mmseg_escnet.models.necks.ppg import PseudoPromptGenerator, PseudoPrompts
from mmseg_escnet.models.segmentors.inference_settings import InferenceSettings
from mmseg_escnet.text import Vocabulary
from mmseg_escnet.text.descriptions import ATTRIBUTES, DescriptionSet, save_descriptions
from mmseg_escnet.utils import ensure_writable_dir, positive_int, run_cli, write_json


def _shape_only_prompts(self: PseudoPromptGenerator, score: torch.Tensor) -> PseudoPrompts:
    """The PPG's outputs with the right shapes and no computation (see the module docstring)."""
    n, h, w = score.shape
    k, s = self.num_regions, self.mask_scale
    new = score.new_zeros
    return PseudoPrompts(
        points=new(n, k, 2) if self.use_points else None,
        point_labels=new(n, k, dtype=torch.long) if self.use_points else None,
        boxes=new(n, k, 4) if self.use_boxes else None,
        masks=new(n, 1, s * h, s * w) if self.use_masks else None,
        probability=new(n, h, w), regions=new(n, h, w, dtype=torch.long))


def _prepare(cfg: Config, num_classes: Optional[int]) -> Config:
    """No weights to load; a vocabulary of ``num_classes`` names with the config's templates."""
    model = cfg.model
    model.backbone.pretrained = None
    if model.neck.get('sam_init') == 'pretrained':
        model.neck.sam_init = 'random'
    test_vocabulary = model.get('test_vocabulary') or model.vocabulary
    spec = test_vocabulary if isinstance(test_vocabulary, dict) else dict(classes=test_vocabulary)
    if num_classes is None:
        num_classes = len(Vocabulary(**spec))
    # names only: the segmentor prompts them with the templates of the config's vocabulary
    names = [f'class {i}' for i in range(num_classes)]
    model.test_vocabulary = dict(classes=names,
                                 **{k: v for k, v in spec.items() if k != 'classes'})
    templates = model.test_vocabulary.get('templates', model.vocabulary.get('templates'))
    if isinstance(templates, dict):  # descriptions: as many prompts per class as a real file
        model.test_vocabulary.templates = dict(templates, file=_placeholder_descriptions(names))
    rule = InferenceSettings.from_cfg(model.get('test_cfg')).class_filter
    if rule is not None and rule.type in ('pixel_topk', 'sed_cer'):
        raise ValueError(f'class_filter type {rule.type!r} keeps a data-dependent number of classes: '
                         'count without it (--cfg-options model.test_cfg.class_filter=None) for '
                         'the upper bound, or measure it with tools/analysis/'
                         'class_filter_agreement.py')
    return cfg


def _placeholder_descriptions(names: Sequence[str]) -> str:
    """A descriptions file for ``names`` (every prompt costs CLIP's full context anyway)."""
    table = {name: {a: f'A {name} has a typical {a}.' for a in ATTRIBUTES} for name in names}
    folder = tempfile.mkdtemp(prefix='get_flops_')
    atexit.register(shutil.rmtree, folder, True)  # read lazily by the model: removed at exit
    path = osp.join(folder, 'descriptions.json')
    save_descriptions(path, DescriptionSet(table, meta=dict(note='placeholder for counting')))
    return path


def _predict_counts(model, images: torch.Tensor, meta: dict) -> Tuple[FlopCounterMode, int]:
    """Count one ``predict`` of ``images``; returns the counter and the views the model saw."""
    views = []
    hook = model.backbone.register_forward_pre_hook(lambda m, args: views.append(len(args[0])))
    try:
        # fused attention counted as the matmuls it fuses (the CPU kernel is not counted)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model.predict(images, [SegDataSample(metainfo=meta)])
    finally:
        hook.remove()
    return counter, sum(views)


def _modules(counter: FlopCounterMode, model) -> Dict[str, float]:
    """GMACs of the backbone, the neck (and its children), the segmentor's other parts (LMSeg's
    SAM encoder and fusion) and the rest (the decode head)."""
    counts = counter.get_flop_counts()
    neck = type(model.neck).__name__

    def gmacs(name):
        return sum(counts.get(name, {}).values()) / 2e9

    modules = {name: gmacs(type(child).__name__) for name, child in model.named_children()
               if name not in ('decode_head', 'data_preprocessor', 'train_text', 'test_text')}
    modules['decode_head'] = counter.get_total_flops() / 2e9 - sum(modules.values())
    for name in counts:  # the neck's children, and the members of its module lists
        parts = name.split('.')
        if parts[0] == neck and (len(parts) == 2 or len(parts) == 3 and parts[2].isdigit()):
            modules['.'.join(['neck'] + parts[1:])] = gmacs(name)
    return modules


def count(cfg: Config, num_classes: Optional[int] = None,
          shape: Optional[Tuple[int, int]] = None) -> dict:
    """Parameters and GMACs of ``cfg``'s model (see the module docstring).

    Args:
        cfg (Config): A model config (it is changed: no weights, the counting vocabulary).
        num_classes (int, optional): Vocabulary size (default: the test vocabulary's).
        shape (tuple[int, int], optional): (H, W) of the image (default: ``out_size`` for
            ``sliding_global``, else the CLIP resolution).

    Returns:
        dict: ``params``, ``num_classes``, ``views``, ``gmacs``, ``official_gmacs``,
        ``text_gmacs`` and ``modules``.

    Raises:
        ValueError: ``shape`` is not two positive ints.
    """
    if shape is not None and (len(shape) != 2 or any(
            isinstance(side, bool) or not isinstance(side, int) or side < 1 for side in shape)):
        raise ValueError(f'shape must be two positive ints (H, W), got {shape!r}')
    cfg = _prepare(cfg, num_classes)
    init_default_scope('mmseg')
    original_ppg = PseudoPromptGenerator.forward
    PseudoPromptGenerator.forward = _shape_only_prompts
    try:
        # boolean-mask indexing (SAM's prompt embedding) takes every element on shapes alone:
        # the shapes stay right and element-wise work is not counted anyway
        with torch.device('meta'), fx_config.patch(meta_nonzero_assume_all_nonzero=True):
            model = MODELS.build(cfg.model).eval()
            params = sum(p.numel() for p in model.parameters())
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as text_counter:
                text = model.text_embeddings()  # cached for the image path
            settings = model.inference_settings
            size = shape or (settings.out_size if settings.mode == 'sliding_global'
                             else model.clip_resolution)
            size = (size, size) if isinstance(size, int) else tuple(size)
            crops = 1
            if settings.mode == 'slide':
                # mmseg's slide checks its coverage with .item(), which shapes alone cannot
                # answer: count one crop in 'whole' mode, times the number of crops
                crops, size = _slide_crops(settings, size), settings.crop_size
                model.set_inference_settings(settings.replace(mode='whole'))
            images = torch.zeros(1, 3, *size)
            meta = dict(img_shape=size, ori_shape=size, pad_shape=size,
                        padding_size=[0, 0, 0, 0])
            counter, views = _predict_counts(model, images, meta)
            with official_cost(model):
                official, _ = _predict_counts(model, images, meta)
    finally:
        PseudoPromptGenerator.forward = original_ppg
    return dict(params=params, num_classes=text.shape[0], views=views * crops,
                gmacs=crops * counter.get_total_flops() / 2e9,
                official_gmacs=crops * official.get_total_flops() / 2e9,
                text_gmacs=text_counter.get_total_flops() / 2e9,
                modules={name: crops * g for name, g in _modules(counter, model).items()})


def _slide_crops(settings: InferenceSettings, size: Tuple[int, int]) -> int:
    """The number of crops of mmseg's ``slide`` inference on a (H, W) image."""
    grids = [max(side - crop + stride - 1, 0) // stride + 1
             for side, crop, stride in zip(size, settings.crop_size, settings.stride)]
    return grids[0] * grids[1]




def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description='Count GMACs and parameters of a config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='vocabulary size (default: the test vocabulary of the config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.test_cfg.class_filter.k=32')
    parser.add_argument('--shape', type=positive_int, nargs=2, default=None, metavar=('H', 'W'),
                        help='image size (default: out_size of sliding_global, else the CLIP '
                        'resolution; set it for mode=slide)')
    parser.add_argument('--json', help='write the counts to this JSON file')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        parser.error('--num-classes must be at least 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    if args.json:
        ensure_writable_dir(osp.dirname(args.json), '--json')
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    result = count(cfg, args.num_classes, args.shape)
    print(f'{args.config}: {result["params"]:,} parameters, {result["num_classes"]} classes, '
          f'{result["views"]} view(s)')
    print(f'image path: {result["gmacs"]:.1f} GMACs (the official code\'s computation: '
          f'{result["official_gmacs"]:.1f})   text tower, once per vocabulary: '
          f'{result["text_gmacs"]:.1f} GMACs')
    for name, gmacs in result['modules'].items():
        print(f'  {name:<40} {gmacs:10.1f}')
    write_json(args.json, result)
    return result


if __name__ == '__main__':
    sys.exit(run_cli(main, 'tools/analysis/get_flops.py'))
