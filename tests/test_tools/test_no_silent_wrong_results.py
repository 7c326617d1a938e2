"""tools/test.py refuses what would give a wrong number with exit status 0: a checkpoint of another
model, a vocabulary that names other classes than the dataset, a broken checkpoint."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CATSEG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
ESCNET = osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Random tiny CAT-Seg and ESC-Net checkpoints, a truncated one, and a data folder."""
    folder = tmp_path_factory.mktemp('ckpts')
    init_default_scope('mmseg')
    for name, config in (('catseg', CATSEG), ('escnet', ESCNET)):
        model = MODELS.build(Config.fromfile(config).model)
        torch.save(dict(state_dict=model.state_dict(), meta=dict()), folder / f'{name}.pth')
    data = (folder / 'catseg.pth').read_bytes()
    (folder / 'truncated.pth').write_bytes(data[:len(data) // 3])
    return folder


def _test(files, config, checkpoint, *options):
    args = [sys.executable, 'tools/test.py', config, str(files / checkpoint), '--work-dir',
            str(files / 'work'), '--cfg-options',
            f'test_dataloader.dataset.data_root={files / "data"}',
            'test_dataloader.dataset.splits.train=2', 'test_dataloader.dataset.splits.val=2',
            *options]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _one_line_error(proc, pattern):
    import re
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if 'tools/test.py: error:' in line]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('config, checkpoint, missing', [
    (CATSEG, 'escnet.pth', r'neck\.layers\.0'), (ESCNET, 'catseg.pth', r'neck\.')])
def test_checkpoint_of_another_model_is_refused(files, config, checkpoint, missing):
    proc = _test(files, config, checkpoint)
    _one_line_error(proc, rf'checkpoint .*{checkpoint} does not fit the model of '
                          rf'.*{osp.basename(config)}: \d+ weights of the model not in the file '
                          rf'\({missing}.*load_from_strict=False')


def test_non_strict_loading_is_an_explicit_choice(files):
    proc = _test(files, ESCNET, 'catseg.pth', 'load_from_strict=False')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'mIoU' in proc.stdout + proc.stderr


def test_reordered_vocabulary_is_refused_unless_allowed(files):
    reversed_names = "model.test_vocabulary=['brick','snow','sand','grass','sky']"
    proc = _test(files, CATSEG, 'catseg.pth', reversed_names)
    _one_line_error(proc, r"class 0 is 'sky' in the dataset and 'brick' in the vocabulary "
                          r'\(the same classes in another order\)')
    proc = _test(files, CATSEG, 'catseg.pth', reversed_names, 'allow_vocabulary_mismatch=True')
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_truncated_checkpoint_is_one_line(files):
    proc = _test(files, CATSEG, 'truncated.pth')
    _one_line_error(proc, r'checkpoint .*truncated.pth is cut short')
