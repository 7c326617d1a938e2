"""Write ``pinned_outputs.pt``: the tiny models' outputs (CAT-Seg, ESC-Net in both prompt readings,
SED, LMSeg, ERR-Seg) that refactors must keep.

Run from the repository root (``python tests/data/pinned/make_pinned_outputs.py [NAME ...]``; names
given: only those are pinned again, the others kept). The weights
are not stored: :func:`deterministic_weights` derives every parameter from its name and shape, so
a later version of the code is compared on the same weights whatever order it creates its
parameters in (a renamed parameter is looked up under its old name).
"""
import os.path as osp
import zlib
from typing import Callable

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIGS = dict(catseg='configs/catseg_tiny_synthetic.py', escnet='configs/escnet_tiny_synthetic.py',
               escnet_refined='configs/escnet_tiny_synthetic.py',
               sed='configs/sed_tiny_synthetic.py', lmseg='configs/lmseg_tiny_synthetic.py',
               errseg='configs/errseg_tiny_synthetic.py')
#: Neck settings per pinned model: 'escnet' keeps the prompts computed once from Eq. 1 (the outputs
#: pinned before prompts came from every block), 'escnet_refined' the per-block prompts.
NECK_OVERRIDES = dict(escnet=dict(prompt_source='initial'),
                      escnet_refined=dict(prompt_source='refined'),
                      errseg=dict(drop_path_step=0.0))  # deterministic training-mode logits
#: The LMSeg outputs were pinned when SAM ran on every view of the sliding protocol; SAM once per
#: image (the default since) is tested in tests/test_models/test_lmseg/test_sam_once.py.
MODEL_OVERRIDES = dict(lmseg=dict(sam_per_view=True))
VOCABULARY = ['sky', 'grass', 'sand', 'snow', 'brick', 'water', 'road']
RANDOM_BUFFERS = ('positional_encoding_gaussian_matrix', )  # SAM's random Fourier features


def deterministic_weights(model: torch.nn.Module,
                          old_name: Callable[[str], str] = lambda name: name) -> None:
    """Set every parameter (and SAM's random PE buffer) from a generator seeded by its name.

    Matrices get N(0, 1 / fan_in); norm weights 1 + 0.1 N(0, 1); other vectors 0.1 N(0, 1).
    """
    tensors = dict(model.named_parameters())
    tensors.update({k: v for k, v in model.named_buffers() if k.endswith(RANDOM_BUFFERS)})
    with torch.no_grad():
        for name, tensor in tensors.items():
            key = old_name(name)
            gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            value = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            if tensor.dim() >= 2:
                value /= (tensor[0].numel() ** 0.5)
            elif key.endswith('weight') and any(n in key for n in ('norm', 'ln_')):
                value = 1 + 0.1 * value
            else:
                value *= 0.1
            tensor.copy_(value.to(tensor.dtype))


def build(name: str, old_name: Callable[[str], str] = lambda name: name) -> torch.nn.Module:
    """The tiny model of ``CONFIGS[name]`` with :data:`VOCABULARY` and deterministic weights."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
    vocabulary = cfg.model.vocabulary  # the model's prompting (templates, synonyms) is kept
    cfg.model.vocabulary = (dict(vocabulary, classes=VOCABULARY) if isinstance(vocabulary, dict)
                            else VOCABULARY)
    cfg.model.neck.update(NECK_OVERRIDES.get(name, {}))
    cfg.model.update(MODEL_OVERRIDES.get(name, {}))
    model = MODELS.build(cfg.model)
    deterministic_weights(model, old_name)
    return model


def images() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def outputs(model: torch.nn.Module) -> dict:
    """Logits in training and eval mode, and the labels of the sliding + global protocol."""
    x = images()
    result = {}
    settings = model.inference_settings  # restored at the end (a model may be run again)
    with torch.no_grad():
        model.train()
        train = model._forward(x)
        if isinstance(train, tuple):  # SED: the logits and the list of its auxiliary logits
            train, aux = train
            result.update({f'train_aux_logits_{i}': t for i, t in enumerate(aux)})
        result['train_logits'] = train
        model.eval()
        result['eval_logits'] = model._forward(x)
        model.test_cfg = dict(mode='sliding_global', kernel=96, overlap=0.333, out_size=(160, 160))
        samples = model.predict(torch.nn.functional.interpolate(x, size=(120, 140)))
        result['sliding_labels'] = torch.stack([s.pred_sem_seg.data for s in samples])
        model.set_inference_settings(settings)
    return result


def main(names=None) -> None:
    """Pin the outputs of ``names`` (default: every model), keeping the others' pinned values."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'pinned_outputs.pt')
    pinned = torch.load(path) if names and osp.exists(path) else {}
    pinned.update({name: outputs(build(name)) for name in (names or CONFIGS)})
    torch.save(pinned, path)


if __name__ == '__main__':
    import sys
    main(sys.argv[1:] or None)
