"""tools/eval_all.py on a tiny model: A-847 (uint16 labels) and PAS-20b (background protocol)
through MMEngine's test loop with CAT-Seg's sliding + global protocol, the Table 1 row, the JSON
summary, --resume, and a failing benchmark that does not stop the others."""
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
pytestmark = pytest.mark.slow


def _eval_all():
    spec = importlib.util.spec_from_file_location('eval_all', osp.join(ROOT, 'tools', 'eval_all.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_pair(image_dir, label_dir, stem, label, suffix):
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 256, (*label.shape, 3), dtype=np.uint8)).save(
        osp.join(image_dir, stem + '.jpg'))
    Image.fromarray(label).save(osp.join(label_dir, stem + suffix))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Prepared A-847 and PAS-20b in data/ (the configs' default roots), tiny configs, checkpoint."""
    ade = tmp_path / 'data' / 'ADE20K_2021_17_01'
    label = np.full((24, 32), 65535, dtype=np.uint16)
    label[:12] = 700
    label[12:, :16] = 3
    _write_pair(ade / 'images_detectron2' / 'validation',
                ade / 'annotations_detectron2' / 'validation', 'ADE_val_00000001', label, '.tif')
    voc = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    label = np.full((20, 28), 20, dtype=np.uint8)
    label[5:15, 5:20] = 14
    _write_pair(voc / 'JPEGImages', voc / 'annotations_detectron2_bg' / 'val', '2007_000032',
                label, '.png')
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'tiny.py').write_text(
        f"_base_ = ['{ROOT}/configs/catseg_tiny_synthetic.py']\n")
    for bench in ('a847', 'pas20b', 'a150'):
        (configs / f'tiny_{bench}.py').write_text(
            f"_base_ = ['./tiny.py', '{ROOT}/configs/_base_/benchmarks/{bench}.py']\n"
            'model = dict(test_vocabulary=_base_.benchmark.vocabulary,\n'
            '             test_cfg=_base_.benchmark.test_cfg)\n'
            'test_dataloader = _base_.benchmark.dataloader\n'
            'test_evaluator = _base_.benchmark.evaluator\n')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(configs / 'tiny.py')).model)
    checkpoint = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    monkeypatch.chdir(tmp_path)
    return tmp_path, str(configs / 'tiny.py'), checkpoint


def test_eval_all_table_json_and_resume(workspace, capsys):
    tmp_path, config, checkpoint = workspace
    eval_all = _eval_all()
    # one 64 px crop + the global view: 847 classes x 5 full-size views cost a minute on CPU
    options = ['--cfg-options', 'test_dataloader.num_workers=0', 'model.test_cfg.kernel=64',
               'model.test_cfg.out_size=64']
    args = [config, checkpoint, '--benchmarks', 'a847', 'pas20b', '--work-dir', 'out'] + options
    assert eval_all.main(args) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((tmp_path / 'out' / 'eval_all.json').read_text())
    results = summary['results']
    assert summary['checkpoint'] == checkpoint and set(results) == {'a847', 'pas20b'}
    for bench in ('a847', 'pas20b'):
        assert 0.0 <= results[bench]['mIoU'] <= 100.0
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells == ['tiny', f'{results["a847"]["mIoU"]:.1f}', '-', '-', '-', '-',
                     f'{results["pas20b"]["mIoU"]:.1f}']

    # --resume: nothing left to evaluate for these two; a150 has no data -> reported, exit 1
    status = eval_all.main(args[:2] + ['--benchmarks', 'a847', 'pas20b', 'a150', '--resume',
                                       '--work-dir', 'out'] + options)
    captured = capsys.readouterr()
    assert status == 1
    assert 'A-847: already evaluated (--resume), skipped' in captured.out
    assert 'A-150 failed: FileNotFoundError' in captured.err
    assert 'prepare_ade20k_150.py' in captured.err
    assert json.loads((tmp_path / 'out' / 'eval_all.json').read_text())['results'] == results


def test_missing_benchmark_config_fails_early(workspace):
    tmp_path, config, checkpoint = workspace
    with pytest.raises(FileNotFoundError, match=r'no PC-59 config .*tiny_pc59.py'):
        _eval_all().main([config, checkpoint, '--benchmarks', 'pc59'])


def test_resume_refuses_another_checkpoint_or_config(workspace, capsys):
    """Results are keyed by the checkpoint's SHA-256 and the config: another file at the same
    path, or other options, are refused instead of being mixed into one row."""
    tmp_path, config, checkpoint = workspace
    eval_all = _eval_all()
    args = [config, checkpoint, '--benchmarks', 'a847', '--work-dir', 'out', '--resume']
    summary_path = tmp_path / 'out' / 'eval_all.json'
    os.makedirs(summary_path.parent)
    parsed = eval_all.parse_args(args)
    good = dict(config=config, config_id=eval_all.config_id(parsed), checkpoint=checkpoint,
                checkpoint_id=eval_all.checkpoint_id(checkpoint),
                results=dict(a847=dict(mIoU=12.5)))
    assert good['checkpoint_id'].startswith('sha256:')
    summary_path.write_text(json.dumps(good))
    assert eval_all.main(args) == 0  # same checkpoint and config: nothing left to evaluate
    assert capsys.readouterr().out.strip().splitlines()[-1].split('|')[2].strip() == '12.5'

    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=dict()), checkpoint)  # replaced
    with pytest.raises(ValueError, match=r'eval_all\.json holds results of another checkpoint: '
                                         r'.*tiny\.pth \(sha256:[0-9a-f]{64}\), this run is '
                                         r'.*tiny\.pth \(sha256:[0-9a-f]{64}\); --resume '
                                         r'would mix'):
        eval_all.main(args)
    good['checkpoint_id'] = eval_all.checkpoint_id(checkpoint)
    summary_path.write_text(json.dumps(good))
    with pytest.raises(ValueError, match=r'eval_all\.json holds results of another config'):
        eval_all.main(args + ['--cfg-options', 'model.test_cfg.kernel=64'])
    summary_path.write_text('{"results": {"a847": ')  # cut short
    with pytest.raises(ValueError, match=r'out/eval_all\.json is not a readable eval_all summary'):
        eval_all.main(args)
