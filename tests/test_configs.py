"""Every config builds without weights; the paper configs have the official parameter counts."""
import glob
import os.path as osp

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS, MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.text import Vocabulary

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARKS = ('a847', 'pc459', 'a150', 'pc59', 'pas20', 'pas20b')
ALL_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))
# <model>_<benchmark>.py only change the test settings of <model>.py: checked without building.
BENCHMARK_CONFIGS = [p for p in ALL_CONFIGS
                     if osp.splitext(p)[0].rsplit('_', 1)[-1] in BENCHMARKS]
CONFIGS = [p for p in ALL_CONFIGS if p not in BENCHMARK_CONFIGS]
PAPER_MODELS = ('catseg_vitb16', 'catseg_vitl14', 'escnet_vitb16', 'escnet_vitl14',
                'sed_convnext_base', 'sed_convnext_large', 'lmseg_vitb16', 'lmseg_vitl14')
#: The test settings of each family's benchmark configs (its paper's protocol).
PROTOCOLS = {
    'catseg': dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640)),
    'escnet': dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640)),
    'sed': dict(mode='whole', resize_probabilities=True, class_filter=dict(type='sed_cer', k=8)),
    'lmseg': dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640),
                  class_filter=dict(type='topk', k=32)),
}

# The official model (cvlab-kaist/CAT-Seg, docs/catseg.md): CLIP + aggregator/decoder + upsample1/2; trainable = CLIP Wq/Wv + the rest,
# less the last vision block's Wq, which the dense forward never uses (official: always zero gradient).
OFFICIAL_COUNTS = {
    'catseg_vitb16.py': (149_620_737 + 2_308_961 + 2_359_680, 20_447_232 - 768**2 + 2_308_961 + 2_359_680),
    'catseg_vitl14.py': (427_944_193 + 2_636_641 + 3_146_112, 64_487_424 - 1024**2 + 2_636_641 + 3_146_112),
    # SED (xb534/SED) built with random weights: total, and trainable under CLIP_FINETUNE "full"
    'sed_convnext_base.py': (180_761_741, 89_598_220),
    'sed_convnext_large.py': (353_245_773, 201_243_980),
}

# ESC-Net: paper Table 4 gives 451.3M for ViT-L/14; the issue allows 1 %.
PAPER_TOTALS = {'escnet_vitl14.py': 451.3e6}


def _metafile_params():
    """``Parameters (M)`` of every model-zoo entry, by config file name."""
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        metafiles = yaml.safe_load(f)['Import']
    params = {}
    for metafile in metafiles:
        with open(osp.join(ROOT, metafile)) as f:
            for model in yaml.safe_load(f)['Models']:
                params[osp.basename(model['Config'])] = model['Metadata']['Parameters (M)']
    return params


METAFILE_PARAMS = _metafile_params()


def _build(path):
    """The config's model on PyTorch's meta device: every module and parameter shape, no memory
    and no initialisation arithmetic (the ViT-L and ConvNeXt-L models take seconds each on CPU)."""
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with torch.device('meta'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_without_weights(path):
    model = _build(path)
    assert sum(p.numel() for p in model.parameters()) > 0
    name = osp.basename(path)
    if name in OFFICIAL_COUNTS:
        total, trainable = OFFICIAL_COUNTS[name]
        assert sum(p.numel() for p in model.parameters()) == total
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    if name in PAPER_TOTALS:
        total = sum(p.numel() for p in model.parameters())
        assert abs(total - PAPER_TOTALS[name]) / PAPER_TOTALS[name] < 0.01, total
    if name in METAFILE_PARAMS:  # the model index states our count, rounded to 0.1M
        total = sum(p.numel() for p in model.parameters())
        assert METAFILE_PARAMS[name] == round(total / 1e6, 1), (name, total)


def test_every_paper_model_has_all_six_benchmark_configs():
    expected = {osp.join(ROOT, 'configs', f'{m}_{b}.py') for m in PAPER_MODELS for b in BENCHMARKS}
    assert set(BENCHMARK_CONFIGS) == expected


@pytest.mark.parametrize('path', BENCHMARK_CONFIGS, ids=osp.basename)
def test_benchmark_config_is_consistent(path):
    cfg = Config.fromfile(path)
    parent = Config.fromfile(osp.splitext(path)[0].rsplit('_', 1)[0] + '.py')
    # only the test settings differ from the trained model
    model, parent_model = cfg.model.to_dict(), parent.model.to_dict()
    for key in ('test_vocabulary', 'test_cfg'):
        model.pop(key), parent_model.pop(key)
    assert model == parent_model
    assert cfg.model.test_cfg == PROTOCOLS[osp.basename(path).split('_')[0]]
    dataset_cls = DATASETS.get(cfg.test_dataloader.dataset.type)
    meta = dataset_cls.METAINFO
    # the text vocabulary, the dataset's classes and the metric agree
    test_vocabulary = cfg.model.test_vocabulary
    if isinstance(test_vocabulary, dict):  # LMSeg: the benchmark's own descriptions file
        templates = test_vocabulary.templates
        assert templates.file == f"data/descriptions/{meta['vocabulary']}.json"
        assert {k: v for k, v in templates.items() if k != 'file'} == {
            k: v for k, v in cfg.model.vocabulary.templates.items() if k != 'file'}
        test_vocabulary = test_vocabulary.classes
    assert test_vocabulary == meta['vocabulary']
    vocabulary = Vocabulary(test_vocabulary)
    evaluator = cfg.test_evaluator
    assert evaluator.ignore_index == meta['ignore_index']
    if 'background_index' in meta:
        assert evaluator.type == 'IoUMetricWithBackground'
        assert evaluator.background_index == meta['background_index'] == len(meta['classes']) - 1
        assert len(vocabulary) == 59
    else:
        assert evaluator.type == 'IoUMetric'
        assert len(vocabulary) == len(meta['classes'])
    assert cfg.test_dataloader.batch_size == 1
    assert set(cfg.test_dataloader) == {'batch_size', 'num_workers', 'persistent_workers',
                                        'sampler', 'dataset'}  # nothing left from COCO
    loader = [t['type'] for t in cfg.test_dataloader.dataset.pipeline]
    assert 'LoadSegAnnotations' in loader and 'LoadAnnotations' not in loader
