"""tools/analysis/escnet_prompt_iou.py on the tiny ESC-Net and two synthetic images: its numbers
equal a direct computation from trace_escnet_prompts, and a config without ESC blocks is refused."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmseg_escnet  # noqa: F401
from mmseg_escnet.apis.escnet_prompts import trace_escnet_prompts
from mmseg_escnet.utils import run_cli

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ESCNET = osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')
CATSEG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/analysis/escnet_prompt_iou.py')


@pytest.fixture(scope='module')
def files(tmp_path_factory, random_tiny_checkpoints):
    """Random tiny ESC-Net and CAT-Seg checkpoints; the data folder the dataset fills."""
    folder = tmp_path_factory.mktemp('prompt_iou')
    for name in ('escnet.pth', 'catseg.pth'):
        (folder / name).symlink_to(random_tiny_checkpoints / name)
    return folder


def _options(folder):
    return ['--cfg-options', f'val_dataloader.dataset.data_root={folder / "data"}',
            'val_dataloader.dataset.splits.train=1', 'val_dataloader.dataset.splits.val=2']


def _direct(model, folder, stem: str) -> dict:
    """(class, block) -> (IoU, points inside, points) for one synthetic image, computed from the
    trace with the 96 px image's own geometry: grid cell (i, j) is pixels 4i..4i+3, 4j..4j+3."""
    pre = Config.fromfile(ESCNET).model.data_preprocessor
    rgb = cv2.imread(str(folder / 'data' / 'img_dir' / 'val' / f'{stem}.png'))[:, :, ::-1]
    x = (rgb.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std)
    trace = trace_escnet_prompts(model, torch.from_numpy(x.transpose(2, 0, 1).copy())[None])
    label = cv2.imread(str(folder / 'data' / 'ann_dir' / 'val' / f'{stem}.png'),
                       cv2.IMREAD_UNCHANGED)
    expected = {}
    for cls in np.unique(label):
        truth = label == cls
        for block in range(2):
            cp = trace.class_prompts(block, 0, int(cls))
            fg = np.repeat(np.repeat(cp.foreground, 4, axis=0), 4, axis=1)   # (96, 96)
            iou = (fg & truth).sum() / (fg | truth).sum()
            x_px, y_px = (cp.points.astype(int) * 4 + 2).T
            inside = int(truth[y_px, x_px].sum())
            expected[int(cls), block + 1] = (iou, inside, len(cp.points))
    return expected


def test_numbers_equal_a_direct_computation(tool, files, random_tiny_model, tmp_path, capsys):
    out = tmp_path / 'iou.json'
    result = tool.main([ESCNET, str(files / 'escnet.pth'), '--max-images', '2', '--out',
                        str(out)] + _options(files))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result['images'] == 2 and result['grid'] == [24, 24]

    expected = {}
    for stem in ('00000', '00001'):
        for (cls, block), value in _direct(random_tiny_model('escnet'), files, stem).items():
            expected[stem, cls, block] = value
    got = {(osp.splitext(osp.basename(p['image']))[0], p['class_id'], p['block']): p
           for p in result['pairs']}
    assert set(got) == set(expected) and len(got) == len(result['pairs'])
    for key, (iou, inside, points) in expected.items():
        assert got[key]['iou'] == pytest.approx(iou, abs=1e-12), key
        assert (got[key]['points_inside'], got[key]['num_points']) == (inside, points), key
    assert 0 < sum(p['iou'] for p in result['pairs'])  # not a degenerate all-zero case

    table = capsys.readouterr().out
    assert '| block | mean foreground IoU | points inside | (image, class) pairs |' in table
    for block in (1, 2):
        rows = [v for (_, _, b), v in expected.items() if b == block]
        mean_iou = np.mean([v[0] for v in rows])
        share = sum(v[1] for v in rows) / sum(v[2] for v in rows)
        summary = result['blocks'][block - 1]
        assert summary['block'] == block and summary['pairs'] == len(rows)
        assert summary['pruned'] == 0
        assert summary['mean_iou'] == pytest.approx(mean_iou, abs=1e-12)
        assert summary['points_inside'] == pytest.approx(share, abs=1e-12)
        assert f'| {block} | {mean_iou:.3f} | {100 * share:.1f}% | {len(rows)} |' in table


def test_max_images_and_non_escnet_config(tool, files, capsys):
    result = tool.main([ESCNET, str(files / 'escnet.pth'), '--max-images', '1']
                       + _options(files))
    assert result['images'] == 1
    assert {osp.basename(p['image']) for p in result['pairs']} == {'00000.png'}
    capsys.readouterr()
    status = run_cli(tool.main, tool.PROG, [CATSEG, str(files / 'catseg.pth')]
                     + _options(files))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert err[0].startswith('tools/analysis/escnet_prompt_iou.py: error: ')
    assert 'has no ESC-Net neck with SAM blocks (neck: CATSegAggregator)' in err[0]
