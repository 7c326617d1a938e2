"""demo/web_demo.py over raw HTTP on 127.0.0.1: what it reads, what it serves, busy and time limit.

The page runs in a thread of this process with a tiny CAT-Seg of random weights; Gradio's upload
folder is a temporary one (``GRADIO_TEMP_DIR``). Every request is a raw API call, as a script
would send it: the image value is chosen by the client, so it may name any path of the server.
"""
import importlib.util
import os
import os.path as osp
import socket
import sys
import urllib.error
import urllib.parse

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
CLASSES = 'sky, grass, sand, snow, brick'
SECRET = b'SECRET-7f3a9c-never-served'
META = {'_type': 'gradio.FileData'}


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture(scope='module')
def load_tool():
    return _load('load_test_web_demo', osp.join(ROOT, 'tools', 'analysis',
                                                'load_test_web_demo.py'))


@pytest.fixture(scope='module')
def server(tmp_path_factory, load_tool):
    """The page on a free port, its upload folder, secrets outside it and in ``--out-dir``."""
    from mmseg_escnet.apis import OpenVocabInferencer
    folder = tmp_path_factory.mktemp('web_demo_security')
    uploads, out_dir = folder / 'uploads', folder / 'out'
    uploads.mkdir()
    out_dir.mkdir()
    patch = pytest.MonkeyPatch()
    patch.setenv('GRADIO_TEMP_DIR', str(uploads))
    web_demo = _load('web_demo', osp.join(ROOT, 'demo', 'web_demo.py'))
    # outside the upload folder: an image (it would come back as the overlay), a text file, a
    # folder, an unreadable file; a checkpoint-like file in --out-dir
    secret_image = folder / 'secret.png'
    cv2.imwrite(str(secret_image), np.full((40, 50, 3), 77, np.uint8))
    (folder / 'secret.txt').write_bytes(SECRET)
    (folder / 'a_folder').mkdir()
    unreadable = folder / 'unreadable.png'
    unreadable.write_bytes(SECRET)
    unreadable.chmod(0)
    (out_dir / 'secret.pth').write_bytes(SECRET)
    inside = uploads / 'planted'  # symlinks inside the upload folder pointing out of it
    inside.mkdir()
    (inside / 'link.png').symlink_to(secret_image)
    (inside / 'link_dir').symlink_to(folder)
    inferencer = OpenVocabInferencer(CONFIG, device='cpu')
    segmenter = web_demo.WebSegmenter(inferencer, str(out_dir), queue_size=1,
                                      request_timeout=60)
    app = web_demo.build_app(segmenter, examples=[])
    port = _free_port()
    web_demo.launch(app, '127.0.0.1', port, block=False,
                    blocked_paths=web_demo.blocked_out_dir(str(out_dir), segmenter.label_dir))
    url = f'http://127.0.0.1:{port}/'
    image = folder / 'upload.png'
    cv2.imwrite(str(image), (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    yield dict(url=url, folder=folder, uploads=uploads, out_dir=out_dir, web_demo=web_demo,
               segmenter=segmenter, upload=load_tool.upload(url, str(image)))
    app.close()
    patch.undo()


def _call(load_tool, server, image) -> dict:
    return load_tool.call(server['url'], [image, CLASSES, 'whole'], timeout=120)


def _get(load_tool, url: str):
    """``(status, body)`` of a GET."""
    try:
        response = load_tool._OPENER.open(url, timeout=30)
        return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _bad_paths(server) -> dict:
    folder, uploads = str(server['folder']), str(server['uploads'])
    return {
        'existing image': f'{folder}/secret.png',
        'existing file': f'{folder}/secret.txt',
        'missing file': f'{folder}/missing.png',
        'folder': f'{folder}/a_folder',
        'unreadable file': f'{folder}/unreadable.png',
        'traversal': f'{uploads}/../secret.png',
        'relative traversal': '../secret.png',
        'deep traversal': '../../../../../../../../..' + f'{folder}/secret.txt',
        'url-encoded traversal': f'{uploads}/%2e%2e/secret.png',
        'url-encoded absolute': urllib.parse.quote(f'{folder}/secret.png', safe=''),
        'file url': f'file://{folder}/secret.png',
        'symlink out': f'{uploads}/planted/link.png',
        'through a symlinked folder': f'{uploads}/planted/link_dir/secret.png',
        'the upload folder': uploads,
        'system file': '/etc/hostname',
    }


def test_paths_outside_the_upload_folder_are_refused_alike(server, load_tool):
    expected = ('<div class="error input">'
                f'{server["web_demo"].NOT_AN_UPLOAD.replace("<", "&lt;")}</div>')
    for with_meta in (False, True):
        replies = {}
        for what, path in _bad_paths(server).items():
            image = dict(path=path, orig_name='x.png', **({'meta': META} if with_meta else {}))
            reply = _call(load_tool, server, image)
            text = repr(reply)
            assert SECRET.decode() not in text and 'Traceback' not in text, (what, text)
            if not with_meta:  # the page's own answer: no overlay, no label map, one message
                assert reply['event'] == 'complete', (what, reply)
                assert reply['data'][0] is None and reply['data'][2] is None, what
                assert reply['data'][3] == expected, (what, reply['data'][3])
            else:  # Gradio refuses file data not in its folder, with no detail; else the page
                assert reply in (dict(event='error', data=dict(error=None)),
                                 dict(event='complete', data=[None, '', None, expected, ''])), \
                    (what, reply)
            replies[what] = repr(reply)
        alike = ('existing image', 'existing file', 'missing file', 'folder', 'unreadable file',
                 'system file', 'symlink out', 'traversal')
        assert len({replies[what] for what in alike}) == 1, replies
        if not with_meta:
            assert len(set(replies.values())) == 1, replies
    for value in ('/etc/hostname', ['/etc/hostname'], {'url': 'file:///etc/hostname'}):
        reply = _call(load_tool, server, value)  # not file data: refused by Gradio or the page
        assert reply in (dict(event='error', data=dict(error=None)),
                         dict(event='complete', data=[None, '', None, expected, ''])), \
            (value, reply)


def test_uploads_are_segmented_with_and_without_meta(server, load_tool):
    upload = server['upload']
    with_meta = _call(load_tool, server, upload)
    without = _call(load_tool, server, dict(path=upload['path'], orig_name='upload.png'))
    for reply in (with_meta, without):
        assert load_tool.classify(reply) == 'answered', reply
        assert 'classes found in 64 x 48 pixels' in reply['data'][4]
    maps = [load_tool.fetch(server['url'], reply['data'][2]) for reply in (with_meta, without)]
    assert maps[0] == maps[1]
    label_map = cv2.imdecode(np.frombuffer(maps[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert label_map.shape == (48, 64)
    # the --out-dir copy has the same bytes, and is not served under its own path
    copies = sorted(str(p) for p in server['out_dir'].glob('run_*/*_labels.png'))
    assert len(copies) >= 2
    with open(copies[-1], 'rb') as copy:
        assert copy.read() == maps[1]
    status, body = _get(load_tool, f"{server['url']}gradio_api/file={copies[-1]}")
    assert status == 403 and body[:8] != b'\x89PNG\r\n\x1a\n'


def test_only_gradio_cache_files_are_served(server, load_tool):
    folder, uploads, out_dir = server['folder'], server['uploads'], server['out_dir']
    label_dir = server['segmenter'].label_dir
    names = [f'{out_dir}/secret.pth', f'{out_dir}%2Fsecret.pth',
             f'{uploads}/../out/secret.pth', f'{uploads}/..%2Fout%2Fsecret.pth',
             f'{uploads}/planted/link.png', f'{uploads}/planted/link_dir/secret.txt',
             f'{folder}/secret.txt', f'{label_dir}', '/etc/hostname']
    names += [str(p) for p in (out_dir.glob('run_*/*') if out_dir.exists() else [])]
    for name in names:
        status, body = _get(load_tool, f"{server['url']}gradio_api/file={name}")
        assert status in (403, 404), (name, status)
        assert SECRET not in body, name


def test_busy_and_time_limit_get_the_pages_messages(server, load_tool):
    upload, gate = server['upload'], server['segmenter'].gate
    with gate.admit(), gate.admit():  # one running and queue_size (1) waiting: full
        reply = _call(load_tool, server, upload)
    assert load_tool.classify(reply) == 'busy', reply
    assert 'the server is busy' in reply['data'][3] and 'try again' in reply['data'][3]
    gate.timeout = 1e-6
    try:
        reply = _call(load_tool, server, upload)
    finally:
        gate.timeout = 60
    assert load_tool.classify(reply) == 'timeout', reply
    assert 'limit of this page and was stopped' in reply['data'][3]
    assert load_tool.classify(_call(load_tool, server, upload)) == 'answered'  # usable again


def test_cli_limits_and_out_dir_checks(server, load_tool, capsys, tmp_path):
    web_demo = server['web_demo']
    port = str(_free_port())
    for option, value, message in (('--request-timeout', '0', '--request-timeout must be > 0'),
                                   ('--queue-size', '-1', '--queue-size must be >= 0')):
        assert web_demo.cli([CONFIG, '--port', port, option, value]) == 1
        assert message in capsys.readouterr().err
    inside = str(server['uploads'] / 'out')  # GRADIO_TEMP_DIR is the fixture's
    with pytest.raises(ValueError, match="inside Gradio's upload folder"):
        web_demo.blocked_out_dir(inside, str(tmp_path))
    assert web_demo.blocked_out_dir(None, str(tmp_path)) == []
    assert web_demo.blocked_out_dir(str(tmp_path / 'o'), str(tmp_path / 'l')) == \
        [osp.realpath(tmp_path / 'o')]
    assert web_demo.blocked_out_dir(str(tmp_path), str(tmp_path / 'l')) == []  # holds label_dir
    for bad in ('http://localhost:7860/', 'http://10.0.0.1:7860/', 'https://127.0.0.1:1/',
                'http://127.0.0.1/'):
        with pytest.raises(ValueError, match='this machine only'):
            load_tool.check_url(bad)
    assert sys.modules['web_demo_security'].upload_path(None, str(tmp_path)) == (None, None)
    assert os.path.isdir(server['segmenter'].label_dir)
