"""tools/analysis/load_test_web_demo.py: 8 clients x 3 requests against the web demo it starts.

The demo runs in a subprocess on 127.0.0.1 with a tiny CAT-Seg whose random weights are saved to
a checkpoint first, so that :class:`OpenVocabInferencer` can load the same weights for the
reference. No timing is asserted: the machine is shared.
"""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
IMAGE = osp.join(ROOT, 'demo', 'examples', 'synthetic_val_00001.png')
CLASSES = 'sky, grass, sand, snow, brick'


def _load_tool():
    path = osp.join(ROOT, 'tools', 'analysis', 'load_test_web_demo.py')
    spec = importlib.util.spec_from_file_location('load_test_web_demo', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_8_clients_x_3_requests_get_the_inferencers_label_maps(tmp_path, monkeypatch):
    from mmseg_escnet.apis import OpenVocabInferencer
    from mmseg_escnet.text import parse_vocabulary_text
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the server shares 2 cores with others
    tool = _load_tool()
    checkpoint = str(tmp_path / 'tiny.pth')
    reference = OpenVocabInferencer(CONFIG, device='cpu',
                                    vocabulary=parse_vocabulary_text(CLASSES))
    torch.save(dict(state_dict=reference.model.state_dict()), checkpoint)
    reference = OpenVocabInferencer(CONFIG, weights=checkpoint, device='cpu',
                                    vocabulary=parse_vocabulary_text(CLASSES))
    reference.model.test_cfg = dict(mode='whole')
    expected = reference(IMAGE)['predictions']['sem_seg']
    assert len(np.unique(expected)) > 1  # a map that tells the weights apart

    server = tool.start_server(CONFIG, checkpoint, log_path=str(tmp_path / 'server.log'))
    try:
        report = tool.run_load(server['url'], IMAGE, CLASSES, 'whole', clients=8, requests=3,
                               pid=server['process'].pid, keep_label_maps=True,
                               max_seconds=300)
    finally:
        tool.stop_server(server['process'])
    print(tool.format_report(report))
    # 8 clients never exceed one running + 8 waiting: every request is answered
    assert (report['answered'], report['busy'], report['failed'], report['http_503']) == \
        (24, 0, 0, 0), report
    for data in report['label_maps']:
        label_map = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(label_map, expected)
    rss = report['rss_mb']
    assert None not in rss.values(), rss
    assert rss['after_load'] <= 1.25 * rss['after_first'], rss
    assert report['p50_s'] is not None and report['p95_s'] >= report['p50_s']
