"""The vocabulary sweep's table, plot and redraw, and the class-filter agreement tool, on tiny
inputs (the measurements themselves are in docs/efficiency.md, never timed in tests)."""
import importlib.util
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, 'tools', 'analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points():
    points = []
    for n in (10, 40):
        for config, scale in (('a/cat.py', 1.0), ('b/esc.py', 3.0)):
            points.append(dict(config=config, num_classes=n, gmacs=scale * n,
                               official_gmacs=scale * n + 1, per_image_s=scale * n / 10,
                               peak_memory_gb=scale))
    return points


def test_sweep_table_ratios_plot_and_redraw(tmp_path):
    tool = _tool('benchmark_vocabulary')
    text = tool.table(_points(), ['a/cat.py', 'b/esc.py'])
    rows = [line.split(' | ') for line in text.splitlines()]
    assert rows[0][:4] == ['| classes', 'GMACs: cat', 'GMACs: esc', 'GMACs: esc / cat']
    assert rows[2][:4] == ['| 10', '10.0', '30.0', '3.00x'] and rows[3][0] == '| 40'
    assert '1.00' in rows[3] and '3.00x |' == rows[3][-1]  # memory column: 1.00 GB, ratio 3
    recorded = tmp_path / 'sweep.json'
    recorded.write_text(json.dumps(dict(command='x', points=_points())))
    paths = tool.main(['--from-json', str(recorded), '--out-dir', str(tmp_path / 'out')])
    assert open(paths['md']).read() == text
    assert Image.open(paths['png']).size[0] > 1000  # one panel per quantity
    with pytest.raises(SystemExit):
        tool.parse_args(['configs/catseg_tiny_synthetic.py', '--num-classes', '900',
                         '--out-dir', str(tmp_path)])
    with pytest.raises(SystemExit):  # measure or redraw, not both
        tool.parse_args([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), '--from-json',
                         str(recorded), '--out-dir', str(tmp_path)])


def test_filter_agreement_tool_on_a_tiny_model(tmp_path):
    tool = _tool('class_filter_agreement')
    assert tool.parse_filter('topk:32') == dict(type='topk', k=32)
    for bad in ('topk', 'topk:x', 'nearest:3', 'topk:0'):
        with pytest.raises(ValueError):
            tool.parse_filter(bad)
    padded = tool.padded_vocabulary(['Wall', 'my thing'], 6)
    assert padded[:2] == ['Wall', 'my thing'] and len(set(padded)) == 6
    assert 'wall' not in [p.lower() for p in padded[2:]]
    with pytest.raises(ValueError, match='below'):
        tool.padded_vocabulary(['a', 'b', 'c'], 2)

    config = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    checkpoint = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    annotations = tmp_path / 'annotations'
    annotations.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
            images / f'{i}.png')
        Image.fromarray(rng.choice([0, 1, 4, 255], (64, 80)).astype(np.uint8)).save(
            annotations / f'{i}.png')
    out = str(tmp_path / 'agreement.json')
    results = tool.main([config, checkpoint, '--images', str(images), '--num-classes', '12',
                         '--annotations', str(annotations), '--filters', 'topk:3',
                         'pixel_topk:12', '--json', out])
    assert json.load(open(out)) == json.loads(json.dumps(results))
    assert results['none']['unchanged'] == 1.0 and results['none']['kept'] == 12
    assert results['topk:3']['kept'] == 3 and 0 <= results['topk:3']['unchanged'] <= 1
    # a filter that keeps every class changes nothing
    assert results['pixel_topk:12']['kept'] == 12
    assert results['pixel_topk:12']['unchanged'] == 1.0
    assert results['pixel_topk:12']['recall'] == 1.0
    assert results['pixel_topk:12']['accuracy'] == results['none']['accuracy']
    assert 0 <= results['topk:3']['recall'] <= 1 and 0 <= results['topk:3']['accuracy'] <= 1


def test_benchmark_aggregator_reports_time_and_output(capsys):
    tool = _tool('benchmark_aggregator')
    assert tool.main(['--classes', '3', '--runs', '1', '--threads', '1']) == 0
    line = capsys.readouterr().out
    assert line.startswith('3 classes: ') and 'median of 1' in line
    seconds = float(line.split(': ')[1].split(' s')[0])
    assert seconds > 0
    with pytest.raises(SystemExit):
        tool.main(['--classes', '0'])


@pytest.mark.skipif(not osp.exists(osp.join(ROOT, '.git')), reason='needs the git repository')
def test_benchmark_inference_against_a_base_revision(tmp_path, capsys):
    """``--base REV``: each side in its own process, the base from a temporary worktree of REV
    (its package, its config), alternated; the worktree is removed afterwards."""
    import subprocess

    def worktrees():
        return subprocess.run(['git', '-C', ROOT, 'worktree', 'list'], capture_output=True,
                              text=True, check=True).stdout

    before = worktrees()
    tool = _tool('benchmark_inference')
    out = tmp_path / 'cmp.json'
    result = tool.main([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), '--vocab',
                        'sky,grass', '--size', '32', '48', '--runs', '1', '--threads', '1',
                        '--base', 'HEAD', '--rounds', '2', '--json', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    sides = result['sides']
    assert list(sides) == ['this tree', 'HEAD'] and all(len(s['runs']) == 2 for s in sides.values())
    assert result['speedup'] == pytest.approx(sides['HEAD']['per_image_s']
                                              / sides['this tree']['per_image_s'])
    table = capsys.readouterr().out
    assert '| this tree |' in table and '| HEAD |' in table and 'faster by' in table
    assert worktrees() == before  # the temporary worktree is gone
    with pytest.raises(ValueError, match="--base 'no-such-rev' is not a git revision"):
        tool.main([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), '--base',
                   'no-such-rev'])
    # a SIGTERM (a scheduler's time limit) during the comparison still removes the worktree
    import signal
    import time
    proc = subprocess.Popen(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'benchmark_inference.py'),
         osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), '--vocab', 'sky', '--size', '32',
         '32', '--runs', '1', '--threads', '1', '--base', 'HEAD', '--rounds', '50'],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while worktrees() == before:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    assert 'stopped by signal 15; removing the temporary worktree' in proc.stderr.read()
    assert worktrees() == before


def test_benchmark_inference_row_and_profile(tmp_path, capsys):
    tool = _tool('benchmark_inference')
    out = tmp_path / 'row.json'
    result = tool.main([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), '--vocab',
                        'sky,grass,sand', '--size', '32', '48', '--runs', '1', '--threads', '1',
                        '--profile', '5', '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'Self CPU time total' in printed and '| 3 | 32x48 | whole |' in printed
    assert json.loads(out.read_text()) == result and result['per_image_s'] > 0
    assert osp.samefile(result['package'], osp.join(ROOT, 'mmseg_escnet'))
    # --cfg-options with a published model folder: its config, the same rule as every entry point
    folder = tmp_path / 'my_model'
    folder.mkdir()
    Config.fromfile(osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')).dump(
        str(folder / 'config.py'))
    (folder / 'my_model-00000000.pth').write_bytes(b'')  # random weights are used anyway
    tool.main([str(folder) + os.sep, '--vocab', 'sky,grass', '--size', '32', '32', '--runs', '1',
               '--threads', '1', '--cfg-options', 'model.test_cfg.mode=whole'])
    assert '| 2 | 32x32 | whole |' in capsys.readouterr().out


def test_sweep_options_of_one_config(tmp_path):
    tool = _tool('benchmark_vocabulary')
    sed, errseg = (osp.join(ROOT, 'configs', f'{m}_tiny_synthetic.py') for m in ('sed', 'errseg'))
    args = tool.parse_args([sed, errseg, '--out-dir', str(tmp_path), '--cfg-options',
                            'model.test_cfg.mode=whole', '--cfg-options-of', sed,
                            'model.test_cfg.class_filter=None', 'model.neck.hidden_dim=8'])
    assert tool.config_options(args, sed) == {'model.test_cfg.mode': 'whole',
                                              'model.test_cfg.class_filter': None,
                                              'model.neck.hidden_dim': 8}
    assert tool.config_options(args, errseg) == {'model.test_cfg.mode': 'whole'}
    with pytest.raises(SystemExit):  # not one of the configs
        tool.parse_args([sed, '--out-dir', str(tmp_path), '--cfg-options-of', errseg, 'a=1'])


def test_benchmark_inference_random_text():
    tool = _tool('benchmark_inference')
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'sed_tiny_synthetic.py'))
    model = MODELS.build(cfg.model).eval()
    text = tool.use_random_text(model)
    vocabulary = model.test_text.vocabulary
    assert text.shape == (len(vocabulary), 3, model.backbone.embed_dim)  # 3 templates
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(text.shape[:2]))
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert feats.num_classes == len(vocabulary)
    assert model.text_embeddings() is text
