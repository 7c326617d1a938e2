"""tools/misc/make_custom_config.py on fabricated folders: generated configs load and build their
datasets, split lists go next to the config, a broken folder is refused, and the configs run
through tools/test.py, tools/train.py (with resume) and tools/dist_train.sh on the tiny models.

The folders are 96 x 96 scenes of the synthetic-shapes generator (5 classes), in the mmseg
layout (img_dir/ann_dir, .jpg images), the flat layout (a.jpg + a_mask.png), a train-only mmseg
folder, a Cityscapes layout and an iSAID layout; built once per module.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import build_random_tiny_model
from mmengine.config import Config
from mmengine.registry import init_default_scope
from test_train_test_resume import _run, _scalars

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = 'tools/misc/make_custom_config.py'
FAMILIES = ('catseg', 'escnet', 'sed', 'lmseg', 'errseg')
CLASSES = ['sky', 'grass, lawn', 'sand', 'snow', 'brick wall, brick']
pytestmark = pytest.mark.slow


def _tiny(family):
    return osp.join(ROOT, 'configs', f'{family}_tiny_synthetic.py')


def _listing(folder):
    """Every file under ``folder`` with its size and modification time."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = osp.join(dirpath, name)
            out[path] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """The fabricated folders, the classes file and the tiny random checkpoints."""
    from mmseg_escnet.datasets.synthetic_shapes import ensure_synthetic_shapes
    from mmseg_escnet.text.descriptions import DescriptionSet, save_descriptions
    base = tmp_path_factory.mktemp('custom_data')
    gen = ensure_synthetic_shapes(str(base / 'gen'), splits=dict(train=8, val=3))

    def samples(split):
        names = sorted(os.listdir(osp.join(gen, 'img_dir', split)))
        return [(n[:-4], cv2.imread(osp.join(gen, 'img_dir', split, n)),
                 cv2.imread(osp.join(gen, 'ann_dir', split, n), cv2.IMREAD_UNCHANGED))
                for n in names]

    def put(path, array):
        os.makedirs(osp.dirname(path), exist_ok=True)
        cv2.imwrite(path, array)

    roots = {k: str(base / k) for k in ('mm', 'train_only', 'flat', 'broken', 'cityscapes',
                                        'isaid')}
    for split in ('train', 'val'):
        for stem, image, label in samples(split):
            put(f'{roots["mm"]}/img_dir/{split}/{stem}.jpg', image)
            put(f'{roots["mm"]}/ann_dir/{split}/{stem}.png', label)
            put(f'{roots["cityscapes"]}/leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png', image)
            put(f'{roots["cityscapes"]}/gtFine/{split}/aachen/{stem}_gtFine_labelTrainIds.png',
                label * 3)  # ids 0..12 of Cityscapes' 19
            if split == 'train':
                put(f'{roots["train_only"]}/img_dir/train/{stem}.jpg', image)
                put(f'{roots["train_only"]}/ann_dir/train/{stem}.png', label)
                put(f'{roots["flat"]}/{stem}.jpg', image)
                put(f'{roots["flat"]}/{stem}_mask.png', label)
            else:
                put(f'{roots["isaid"]}/img_dir/val/{stem}.png', image)
                put(f'{roots["isaid"]}/ann_dir/val/{stem}_instance_color_RGB.png', label)
    shutil.copytree(roots['mm'], roots['broken'])
    val = osp.join(roots['broken'], 'ann_dir', 'val')
    masks = sorted(os.listdir(val))
    os.remove(osp.join(val, masks[0]))                                        # image, no mask
    cv2.imwrite(osp.join(val, masks[1]), np.full((96, 96), 9, np.uint8))      # value 9 of 5
    cv2.imwrite(osp.join(val, masks[2]), np.zeros((50, 60), np.uint8))        # wrong size
    classes = base / 'classes.txt'
    classes.write_text('\n'.join(CLASSES) + '\n')
    descriptions = str(base / 'descriptions.json')
    save_descriptions(descriptions, DescriptionSet(descriptions={
        c: dict(color=f'{c} has its colour.', shape=f'{c} has a shape.',
                texture=f'{c} has a texture.') for c in CLASSES}))
    ckpts = {}
    for family in FAMILIES:
        ckpts[family] = str(base / f'{family}.pth')
        torch.save(dict(state_dict=build_random_tiny_model(family).state_dict(),
                        meta=dict(note='random')), ckpts[family])
    return dict(roots=roots, classes=str(classes), ckpts=ckpts, descriptions=descriptions,
                base=base)


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script(TOOL)


def _make(tool, *args):
    """Run the tool in this process; its exit status."""
    from mmseg_escnet.utils import run_cli
    return run_cli(tool.main, TOOL, [str(a) for a in args])


def _build(cfg, loader):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    return DATASETS.build(cfg[loader].dataset)


def test_zero_shot_configs_load_and_build_both_layouts(tool, data, tmp_path, capsys):
    roots = data['roots']
    before = {k: _listing(roots[k]) for k in ('mm', 'flat')}
    out = tmp_path / 'deep' / 'configs' / 'zs_mm.py'
    assert _make(tool, '--data-root', roots['mm'], '--classes', data['classes'], '--model',
                 _tiny('catseg'), '--out', out) == 0
    text = capsys.readouterr().out
    assert 'layout: mmseg (detected)' in text and 'image suffix: .jpg (detected)' in text
    assert 'evaluating 3 samples' in text
    source = out.read_text()
    base = osp.relpath(_tiny('catseg'), out.parent)
    assert f"_base_ = [{base!r}]" in source  # relative to the config's own folder
    cfg = Config.fromfile(str(out))
    assert cfg.model.test_vocabulary == data['classes']
    dataset = _build(cfg, 'test_dataloader')
    assert len(dataset) == 3 and dataset.metainfo['classes'][1] == 'grass'
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=255)

    out = tmp_path / 'zs_flat.py'
    assert _make(tool, '--data-root', roots['flat'], '--classes', data['classes'], '--model',
                 'catseg_vitb16', '--out', out) == 0
    assert 'mask suffix: _mask.png (detected)' in capsys.readouterr().out
    cfg = Config.fromfile(str(out))
    assert cfg.model.test_cfg.mode == 'sliding_global'  # the paper protocol of a zoo model
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'ResizeShortestEdge'
    assert len(_build(cfg, 'test_dataloader')) == 8
    from mmseg_escnet.engine.launch import check_zoo_checkpoint
    check_zoo_checkpoint(cfg, 'zoo://catseg_vitb16')  # tools/test.py OUT zoo://catseg_vitb16
    assert {k: _listing(roots[k]) for k in ('mm', 'flat')} == before  # nothing written there


def test_errseg_zoo_model_gets_its_protocol(tool, data, tmp_path):
    """ERR-Seg's protocol: short side 800, the whole image, K = 32 classes per image (its A-150
    setting), and L at 768 px."""
    out = tmp_path / 'errseg_zs.py'
    assert _make(tool, '--data-root', data['roots']['flat'], '--classes', data['classes'],
                 '--model', 'errseg_convnext_large', '--out', out) == 0
    cfg = Config.fromfile(str(out))
    assert cfg.model.test_cfg == dict(mode='whole', resize_probabilities=True,
                                      class_filter=dict(type='rrhc', k=32))
    assert cfg.model.clip_resolution == 768
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert (resize.type, resize.scale, resize.max_size) == ('ResizeShortestEdge', 800, 1333)


def test_fine_tune_splits_next_to_the_config_seeded(tool, data, tmp_path, capsys):
    roots = data['roots']
    before = {k: _listing(roots[k]) for k in ('train_only', 'flat')}
    for key in ('train_only', 'flat'):
        lists = []
        for run in ('a', 'b'):
            out = tmp_path / run / f'{key}.py'
            assert _make(tool, '--data-root', roots[key], '--classes', data['classes'],
                         '--model', _tiny('escnet'), '--fine-tune', '--checkpoint',
                         data['ckpts']['escnet'], '--val-fraction', 0.25, '--out', out) == 0
            splits = out.parent / f'{key}_splits'
            train = (splits / 'train.txt').read_text().split()
            val = (splits / 'val.txt').read_text().split()
            lists.append((train, val))
        text = capsys.readouterr().out
        assert lists[0] == lists[1]  # seeded: the same split every time
        train, val = lists[0]
        assert len(val) == 2 and len(train) == 6 and not set(train) & set(val)
        cfg = Config.fromfile(str(out))
        assert cfg.load_from == data['ckpts']['escnet']
        assert len(_build(cfg, 'train_dataloader')) == 6
        assert len(_build(cfg, 'val_dataloader')) == 2
        assert cfg.train_cfg.max_iters == 500  # 20 epochs of 6 images, clamped to the minimum
        assert cfg.param_scheduler[0].end == cfg.param_scheduler[0].T_max == 500
        assert 'fine-tuning estimate: 6 training images' in text
    assert {k: _listing(roots[k]) for k in ('train_only', 'flat')} == before


def test_broken_folder_one_error_nothing_written(tool, data, tmp_path, capsys):
    out = tmp_path / 'broken.py'
    status = _make(tool, '--data-root', data['roots']['broken'], '--classes', data['classes'],
                   '--model', _tiny('catseg'), '--out', out)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    line = err[0]
    assert line.startswith(f'{TOOL}: error: ') and '3 problems in ' in line, line
    for part in ('1 image without a mask', 'whose size differs', 'label values outside', ': 9'):
        assert part in line, line
    assert not out.exists() and os.listdir(tmp_path) == []
    # the fine-tuning check covers the val split too, before any split file is written
    status = _make(tool, '--data-root', data['roots']['broken'], '--classes', data['classes'],
                   '--model', _tiny('catseg'), '--fine-tune', '--checkpoint',
                   data['ckpts']['catseg'], '--out', out)
    assert status == 1 and not out.exists()
    # a model-zoo model without published weights needs --checkpoint
    assert _make(tool, '--data-root', data['roots']['mm'], '--classes', data['classes'],
                 '--model', 'escnet_vitb16', '--fine-tune', '--out', out) == 1
    assert 'publishes no weights for escnet_vitb16' in capsys.readouterr().err
    assert _make(tool, '--data-root', data['roots']['mm'], '--classes', data['classes'],
                 '--model', _tiny('catseg'), '--fine-tune', '--checkpoint', 'nosuch.pth',
                 '--out', out) == 1
    assert "checkpoint 'nosuch.pth' is not an existing file" in capsys.readouterr().err
    assert not out.exists()
    # a config inside the data folder is refused
    inside = osp.join(data['roots']['broken'], 'cfg.py')
    assert _make(tool, '--data-root', data['roots']['broken'], '--classes', data['classes'],
                 '--model', _tiny('catseg'), '--out', inside) == 1
    assert 'is inside the data folder' in capsys.readouterr().err and not osp.exists(inside)


@pytest.mark.parametrize('family', FAMILIES)
def test_zero_shot_test_py_reports_miou(tool, data, tmp_path, family):
    out = tmp_path / f'{family}_zs.py'
    extra = ['--descriptions', data['descriptions']] if family == 'lmseg' else []
    assert _make(tool, '--data-root', data['roots']['mm'], '--classes', data['classes'],
                 '--model', _tiny(family), '--out', out, *extra) == 0
    log = _run([sys.executable, 'tools/test.py', str(out), data['ckpts'][family],
                '--work-dir', str(tmp_path / 'work')], cwd=ROOT)
    assert 'mIoU' in log
    assert any('mIoU' in r for r in _scalars(str(tmp_path / 'work')))


@pytest.mark.parametrize('family', ['escnet', 'lmseg'])  # CAT-Seg: below; SED: the DDP test
def test_fine_tune_one_iteration(tool, data, tmp_path, family):
    out = tmp_path / f'{family}_ft.py'
    extra = ['--descriptions', data['descriptions']] if family == 'lmseg' else []
    assert _make(tool, '--data-root', data['roots']['mm'], '--classes', data['classes'],
                 '--model', _tiny(family), '--fine-tune', '--checkpoint', data['ckpts'][family],
                 '--iters', 1, '--gpus', 1, '--batch-size', 2, '--out', out, *extra) == 0
    work = str(tmp_path / 'work')
    log = _run([sys.executable, 'tools/train.py', str(out), '--work-dir', work], cwd=ROOT)
    assert 'Load checkpoint from ' + data['ckpts'][family] in log
    assert any('mIoU' in r for r in _scalars(work))  # validated on the folder's val split
    state = torch.load(osp.join(work, 'iter_1.pth'), map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 1


def test_fine_tune_train_and_resume(tool, data, tmp_path, capsys):
    out = tmp_path / 'ft.py'
    assert _make(tool, '--data-root', data['roots']['mm'], '--classes', data['classes'],
                 '--model', _tiny('catseg'), '--fine-tune', '--checkpoint',
                 data['ckpts']['catseg'], '--iters', 2, '--gpus', 1, '--batch-size', 2,
                 '--out', out) == 0
    text = capsys.readouterr().out
    assert '2 iterations = 0.5 epochs' in text and '(1 GPU(s) x 2)' in text
    assert not (tmp_path / 'ft_splits').exists()  # the folder has its own val split
    work = str(tmp_path / 'work')
    log = _run([sys.executable, 'tools/train.py', str(out), '--work-dir', work], cwd=ROOT)
    assert 'Load checkpoint from ' + data['ckpts']['catseg'] in log and 'mIoU' in log
    log = _run([sys.executable, 'tools/train.py', str(out), '--work-dir', work, '--resume',
                '--cfg-options', 'train_cfg.max_iters=3'], cwd=ROOT)
    assert 'resumed' in log.lower()
    state = torch.load(osp.join(work, 'iter_3.pth'), map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 3


def test_generated_config_trains_two_processes_gloo(tool, data, tmp_path):
    out = tmp_path / 'ddp.py'
    assert _make(tool, '--data-root', data['roots']['flat'], '--classes', data['classes'],
                 '--model', _tiny('sed'), '--fine-tune', '--checkpoint', data['ckpts']['sed'],
                 '--iters', 2, '--gpus', 2, '--batch-size', 1, '--out', out) == 0
    work = str(tmp_path / 'work')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT,
               PORT=str(31500 + os.getpid() % 1000))
    proc = subprocess.run(['bash', 'tools/dist_train.sh', str(out), '2', '--work-dir', work],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    state = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 2


def test_cityscapes_layout_zero_shot(tool, data, tmp_path, capsys):
    out = tmp_path / 'cityscapes_zs.py'
    before = _listing(data['roots']['cityscapes'])
    assert _make(tool, '--mmseg-dataset', 'cityscapes', '--data-root',
                 data['roots']['cityscapes'], '--model', _tiny('catseg'), '--out', out) == 0
    text = capsys.readouterr().out
    assert 'mmseg dataset: CityscapesDataset' in text and 'found 3 samples' in text
    classes = tmp_path / 'cityscapes_zs_classes.txt'
    names = [n for n in classes.read_text().splitlines() if not n.startswith('#')]
    assert len(names) == 19 and names[:2] == ['road', 'sidewalk']
    cfg = Config.fromfile(str(out))
    assert cfg.test_dataloader.dataset.type == 'CityscapesDataset'
    assert cfg.test_dataloader.dataset.data_prefix.img_path == 'leftImg8bit/val'
    log = _run([sys.executable, 'tools/test.py', str(out), data['ckpts']['catseg'],
                '--work-dir', str(tmp_path / 'work')], cwd=ROOT)
    assert 'mIoU' in log and 'traffic light' in log
    assert _listing(data['roots']['cityscapes']) == before


def test_mmseg_dataset_poor_prompt_warning(tool, data, tmp_path, capsys):
    from mmseg_escnet.engine.mmseg_datasets import prompt_problems
    out = tmp_path / 'isaid_zs.py'
    assert _make(tool, '--mmseg-dataset', 'iSAIDDataset', '--data-root', data['roots']['isaid'],
                 '--model', 'catseg_vitb16', '--fix-names', '--out', out) == 0
    err = capsys.readouterr().err
    assert "class name 'store_tank' may make a poor prompt (underscores): try 'store tank'" in err
    assert "'Ground_Track_Field'" in err and "'ship'" not in err
    lines = (tmp_path / 'isaid_zs_classes.txt').read_text().splitlines()
    assert 'store tank, store_tank' in lines and 'ship' in lines
    cfg = Config.fromfile(str(out))
    assert cfg.test_dataloader.dataset.type == 'iSAIDDataset'
    assert prompt_problems('CCTV camera') == (['all-caps CCTV (an abbreviation?)'], 'CCTV camera')
    assert prompt_problems('TrafficLight2')[1] == 'traffic light'
    assert prompt_problems('bg')[1] == 'background'
    assert prompt_problems('traffic light') == ([], 'traffic light')
    # an unknown dataset name lists the known ones
    assert _make(tool, '--mmseg-dataset', 'nosuch', '--data-root', data['roots']['isaid'],
                 '--model', 'catseg_vitb16', '--out', out) == 1
    assert 'cityscapes' in capsys.readouterr().err


def test_model_argument_follows_the_rule_of_every_entry_point(tmp_path):
    """--model is a config file only with a config suffix, else a model-zoo name: the same rule
    as the inferencer, the demos and the tools (checkpoints.model_zoo.resolve_model)."""
    from mmseg_escnet.engine.custom_config import resolve_model
    zoo = resolve_model('catseg_vitb16')
    by_path = resolve_model(osp.join(ROOT, 'configs', 'catseg_vitb16.py'))
    assert (zoo.zoo_name, zoo.has_weights, zoo.family) == ('catseg_vitb16', True, 'catseg')
    assert (by_path.zoo_name, by_path.config) == ('catseg_vitb16', zoo.config)
    tiny = resolve_model(_tiny('catseg'))
    assert (tiny.zoo_name, tiny.has_weights, tiny.family) == (None, False, 'catseg')
    with pytest.raises(ValueError, match="'configs/catseg_vitb16' is not a config file"):
        resolve_model('configs/catseg_vitb16')  # no suffix: a name, and no such name
    with pytest.raises(FileNotFoundError, match='--model: config file not found'):
        resolve_model(str(tmp_path / 'nosuch.py'))
