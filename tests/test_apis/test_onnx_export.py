"""ONNX export (tools/deployment/pytorch2onnx.py): onnxruntime equals PyTorch on the tiny
CAT-Seg, ESC-Net, SED and LMSeg, the exportable equivalents equal the originals, and what cannot be
exported is refused with a message."""
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from segment_anything.modeling.prompt_encoder import PromptEncoder

import mmseg_escnet  # noqa: F401
from mmseg_escnet.apis import onnx_export
from mmseg_escnet.apis.onnx_export import (FixedVocabularySegmentor, compare_onnx,
                                           exportable_embed_points, export_onnx)
from mmseg_escnet.models.necks.ppg import pixel_kmeans

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSES = 'sky, grass, sand, snow, brick'
FAMILIES = ('catseg', 'escnet', 'sed', 'lmseg')


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/deployment/pytorch2onnx.py')


def _model(name, **test_cfg):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'{name}_tiny_synthetic.py'))
    init_default_scope('mmseg')
    if test_cfg:
        cfg.model.test_cfg = test_cfg
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Randomly initialised tiny CAT-Seg and ESC-Net, saved as mmengine checkpoints."""
    folder = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for name in FAMILIES:
        paths[name] = str(folder / f'{name}.pth')
        torch.save({'state_dict': _model(name).state_dict(), 'meta': {}}, paths[name])
    return paths


@pytest.mark.parametrize('name', FAMILIES)
def test_exported_model_equals_pytorch_in_onnxruntime(name, checkpoints, tmp_path, capsys, tool):
    out = str(tmp_path / f'{name}.onnx')
    status = tool.main([osp.join(ROOT, 'configs', f'{name}_tiny_synthetic.py'),
                        checkpoints[name], '--vocab', CLASSES, '--out', out, '--verify'])
    printed = capsys.readouterr().out
    assert status == 0, printed
    size = 192 if name == 'sed' else 96  # SED's tiny CLIP resolution
    assert f'logits (1, 5, {size}, {size})' in printed
    diff, agreement = re.search(r'difference (\S+), identical argmax on (\S+)%', printed).groups()
    assert float(diff) < 1e-4 and float(agreement) >= 99.9, printed


def test_verify_fails_with_status_1_on_a_mismatch(checkpoints, tmp_path, capsys, monkeypatch,
                                                  tool):
    monkeypatch.setattr(onnx_export, 'compare_onnx',
                        lambda *a, **k: dict(max_abs_diff=0.5, argmax_agreement=0.9))
    status = tool.main([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'),
                        checkpoints['catseg'], '--vocab', CLASSES,
                        '--out', str(tmp_path / 'm.onnx'), '--verify'])
    captured = capsys.readouterr()
    assert status == 1 and 'MISMATCH' in captured.out and 'verify failed' in captured.err


def test_a_topk_filter_exports_with_its_fixed_class_count(tmp_path):
    model = _model('catseg', mode='whole', class_filter=dict(type='topk', k=3))
    wrapper = FixedVocabularySegmentor(model)
    path = export_onnx(wrapper, str(tmp_path / 'topk.onnx'), shape=(96, 96))
    images = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    result = compare_onnx(wrapper, path, images)
    assert result['max_abs_diff'] < 1e-4 and result['argmax_agreement'] == 1.0
    with torch.no_grad():  # two classes are pruned everywhere
        assert ((wrapper(images) <= -99).flatten(2).all(-1)).sum() == 2


@pytest.mark.parametrize('test_cfg, problem', [
    (dict(mode='sliding_global', kernel=96, overlap=0.333, out_size=(96, 96)), "mode='whole'"),
    (dict(mode='whole', class_filter=dict(type='pixel_topk', k=2)), 'data-dependent'),
])
def test_unexportable_settings_are_refused(test_cfg, problem):
    with pytest.raises(ValueError, match=problem):
        FixedVocabularySegmentor(_model('catseg', **test_cfg))


@pytest.mark.parametrize('pad', [True, False])
def test_exportable_point_embedding_equals_sams(pad):
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dim=16, image_embedding_size=(8, 8), input_image_size=(8, 8),
                            mask_in_chans=4)
    points = torch.rand(6, 4, 2) * 8
    labels = torch.tensor([[1, 0, -1, 1]] * 3 + [[0, 0, 1, -1]] * 3)
    expected = encoder._embed_points(points, labels, pad)
    torch.testing.assert_close(exportable_embed_points(encoder, points, labels, pad), expected,
                               rtol=0, atol=0)


def test_kmeans_without_the_early_stop_gives_the_same_clusters():
    torch.manual_seed(0)
    coords = torch.stack(torch.meshgrid(torch.arange(12.), torch.arange(12.), indexing='ij'),
                         -1).view(-1, 2)
    valid = torch.rand(20, 144) > 0.5
    seeds = torch.where(valid, torch.rand(20, 144), -1.0).argmax(1)
    stopped = pixel_kmeans(coords, valid, seeds, num_clusters=5, num_iters=10)
    full = pixel_kmeans(coords, valid, seeds, num_clusters=5, num_iters=10,
                        stop_at_fixed_point=False)
    for a, b in zip(stopped, full):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused(checkpoints, tmp_path, tool):
    config = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
    with pytest.raises(SystemExit):
        tool.main([config, checkpoints['catseg'], '--vocab', CLASSES, '--out', 'x.txt'])
    with pytest.raises(ValueError, match='empty'):
        tool.main([config, checkpoints['catseg'], '--vocab', ' , ', '--out',
                   str(tmp_path / 'x.onnx')])


def test_verify_image_is_checked_before_anything_is_exported(checkpoints, tmp_path, tool,
                                                              monkeypatch):
    config = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
    monkeypatch.setattr(onnx_export, 'export_onnx', lambda *a, **k: pytest.fail('exported'))
    (tmp_path / 'notanimage.jpg').write_text('not an image')
    out = tmp_path / 'm.onnx'
    base = [config, checkpoints['catseg'], '--vocab', CLASSES, '--out', str(out), '--verify']
    with pytest.raises(ValueError, match='cannot decode image file .*notanimage.jpg'):
        tool.main(base + ['--image', str(tmp_path / 'notanimage.jpg')])
    import cv2
    cv2.imwrite(str(tmp_path / 'big.png'), np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r'big.png is 40 x 30 = 1,200 pixels, more than the limit '
                       'of 1,000 pixels'):
        tool.main(base + ['--image', str(tmp_path / 'big.png'), '--max-pixels', '1000'])
    assert not out.exists()
    for bad in (['--shape', '0', '5'], ['--max-pixels', '-1'], ['--image', 'x.png']):
        with pytest.raises(SystemExit):
            tool.main(base[:-1] + bad)


def test_errseg_exports_without_its_compact_vocabulary(tmp_path, capsys, tool):
    """ERR-Seg's per-image class counting does not export (refused, with the hint); without it
    every class goes past the cost maps and the graph matches PyTorch."""
    config = osp.join(ROOT, 'configs', 'errseg_tiny_synthetic.py')
    checkpoint = str(tmp_path / 'errseg.pth')
    torch.save({'state_dict': _model('errseg').state_dict(), 'meta': {}}, checkpoint)
    out = str(tmp_path / 'errseg.onnx')
    with pytest.raises(ValueError, match=r"class_filter 'rrhc' counts classes per image .*"
                       r"class_filter=None"):
        tool.main([config, checkpoint, '--vocab', CLASSES, '--out', out])
    assert not osp.exists(out)
    assert tool.main([config, checkpoint, '--vocab', CLASSES, '--out', out, '--verify',
                      '--cfg-options', 'model.test_cfg.class_filter=None']) == 0
    assert 'verify:' in capsys.readouterr().out and osp.isfile(out)
