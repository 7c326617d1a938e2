"""demo/image_demo.py: one real run as a subprocess, the rest in-process through ``main(argv)``."""
import importlib.util
import os
import os.path as osp
import re
import socket
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
ESCNET_CONFIG = osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location('image_demo',
                                                  osp.join(ROOT, 'demo', 'image_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A random tiny CAT-Seg checkpoint, a 16-bit test image (45 x 70) and a broken one."""
    folder = tmp_path_factory.mktemp('demo')
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(CONFIG).model)
    torch.save(dict(state_dict=model.state_dict()), folder / 'tiny.pth')
    image = np.random.default_rng(0).integers(0, 65536, (45, 70, 3), dtype=np.uint16)
    cv2.imwrite(str(folder / 'image.png'), image)
    (folder / 'bad.jpg').write_bytes(b'not a jpeg')
    (folder / 'file.txt').write_text('a regular file, so nothing can be written below it')
    data = (folder / 'tiny.pth').read_bytes()
    (folder / 'truncated.pth').write_bytes(data[:len(data) // 2])
    escnet = MODELS.build(Config.fromfile(ESCNET_CONFIG).model)
    torch.save(dict(state_dict=escnet.state_dict()), folder / 'escnet.pth')
    # a BMP header claiming 40000 x 30000 pixels: beyond OpenCV's default limit of 2**30 pixels
    info = struct.pack('<IiiHHIIiiII', 40, 40000, 30000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    (folder / 'huge.bmp').write_bytes(b'BM' + struct.pack('<IHHI', 54, 0, 0, 54) + info)
    return folder


def test_demo_subprocess_writes_overlay_and_labels(files, tmp_path):
    out = tmp_path / 'result' / 'out.png'
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'demo/image_demo.py', str(files / 'image.png'), CONFIG, '--checkpoint',
         str(files / 'tiny.pth'), '--vocab', 'cat,dog|puppy,sky', '--out', str(out),
         '--opacity', '1', '--device', 'cpu'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = cv2.imread(str(tmp_path / 'result' / 'out_labels.png'), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == (45, 70) and labels.max() < 3
    overlay = cv2.imread(str(out))
    assert overlay.shape[1] > 70 and overlay.shape[0] >= 45  # image plus the legend beside it
    names = ['cat', 'dog', 'sky']
    printed = dict(re.findall(r'^\s+(\w+)\s+([\d.]+)%', proc.stdout, flags=re.M))
    present = np.unique(labels)
    assert sorted(printed) == sorted(names[i] for i in present)
    for i in present:
        assert float(printed[names[i]]) == pytest.approx(100 * (labels == i).mean(), abs=0.006)
    assert f'wrote {out}' in proc.stdout


def test_labels_path(demo):
    assert demo.labels_path('a/b.jpg') == 'a/b_labels.png'


def test_257_classes_give_a_uint16_label_map(demo, files, tmp_path, capsys):
    vocab = tmp_path / 'many.txt'
    vocab.write_text('\n'.join(f'class {i}' for i in range(257)))
    out = tmp_path / 'o.jpg'
    assert demo.cli([str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'),
                      '--vocab', str(vocab), '--out', str(out), '--device', 'cpu']) == 0
    labels = cv2.imread(str(tmp_path / 'o_labels.png'), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (45, 70) and labels.max() < 257
    assert out.is_file() and 'of 257 classes present' in capsys.readouterr().out


@pytest.mark.parametrize('case, message', [
    (dict(image='bad.jpg'), 'cannot decode image file .*bad.jpg'),
    (dict(image='missing.png'), 'image file .*missing.png not found'),
    (dict(vocab=''), 'the vocabulary is empty'),
    (dict(vocab='ADE15'), r"'ADE15' is not a built-in vocabulary \(did you mean 'ade150'\?"),
    (dict(vocab='nope_vocab'), "'nope_vocab' is not a built-in vocabulary .* add a comma"),
    (dict(vocab='/path/that/does/not/exist'), 'vocabulary file not found: /path/that'),
    (dict(out='file.txt/out.png'), r'cannot write --out into .*file.txt'),
    (dict(vocab='cat,,dog'), 'class 1 .*empty name'),
    (dict(vocab='none.txt'), 'vocabulary file not found: .*none.txt'),
    (dict(config='nope.py'), 'config file not found: .*nope.py'),
    (dict(checkpoint='nope.pth'), "checkpoint '.*nope.pth' is not an existing file"),
    (dict(out='out.txt'), '--out .*out.txt: expected one of'),
    (dict(checkpoint='truncated.pth'), r'checkpoint .*truncated.pth is cut short'),
    (dict(checkpoint='file.txt'), r'checkpoint .*file.txt is not a torch checkpoint'),
    (dict(checkpoint='escnet.pth'), r'checkpoint .*escnet.pth does not fit the model of '
     r'.*catseg_tiny_synthetic.py: \d+ weights of the model not in the file \(neck\.'),
    (dict(image='huge.bmp'), r"image file .*huge.bmp is 1,200,000,000 pixels, more than the limit "
     r"of 40,000,000 pixels; shrink it first, or raise the limit"),
])
def test_errors_exit_1_with_a_message(demo, files, capsys, case, message):
    args = dict(image='image.png', config=CONFIG, checkpoint='tiny.pth', vocab='cat,dog',
                out='out.png')
    args.update(case)
    argv = [str(files / args['image']), osp.join(files, args['config']), '--checkpoint',
            str(files / args['checkpoint']), '--vocab', args['vocab'], '--out',
            str(files / args['out'])]
    assert demo.cli(argv) == 1
    err = capsys.readouterr().err
    assert re.search(f'image_demo.py: error: {message}', err), err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1


def test_max_pixels_refuses_a_bomb_before_decoding(demo, files, tmp_path, capsys):
    from PIL import Image
    bomb = tmp_path / 'bomb.png'  # 20000 x 20000 1-bit: 0.4 Gpixels, 1.2 GB decoded, ~60 KB here
    Image.new('1', (20000, 20000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 1_000_000
    base = [CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab', 'cat,dog', '--out',
            str(tmp_path / 'out.png'), '--device', 'cpu']
    cases = [([str(bomb)], rf'image file {bomb} is 400,000,000 pixels, more than the limit of '
              '40,000,000 pixels'),
             ([str(files / 'image.png'), '--max-pixels', '3149'],
              r'image file .*image.png is 70 x 45 = 3,150 pixels, more than the limit of 3,149'),
             ([str(files / 'huge.bmp'), '--max-pixels', '0'],  # no limit: OpenCV's applies
              r"cannot decode image file .*huge.bmp: it is larger \(1,200,000,000 pixels\) than "
              r"OpenCV's limit")]
    for argv, message in cases:
        assert demo.cli(argv[:1] + base + argv[1:]) == 1
        err = capsys.readouterr().err
        assert re.search(f'image_demo.py: error: {message}', err), err
    assert demo.cli([str(files / 'image.png')] + base + ['--max-pixels', '3150']) == 0


def _closed_port():
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _run_with_model_zoo(demo, files, tmp_path, monkeypatch, weights):
    """Run the demo on the model-zoo name ``tiny_zoo`` (the tiny config with ``weights``)."""
    (tmp_path / 'model-index.yml').write_text(
        'Models:\n  - Name: tiny_zoo\n    In Collection: CAT-Seg\n'
        f'    Config: {CONFIG}\n    Weights: {weights}\n')
    monkeypatch.setenv('MMSEG_ESCNET_MODEL_INDEX', str(tmp_path / 'model-index.yml'))
    return demo.cli([str(files / 'image.png'), 'tiny_zoo', '--vocab', 'cat,dog', '--out',
                      str(tmp_path / 'out.png'), '--device', 'cpu'])


def test_checkpoint_download_failure_is_one_line(demo, files, tmp_path, monkeypatch, capsys):
    url = f'http://127.0.0.1:{_closed_port()}/tiny.pth'
    assert _run_with_model_zoo(demo, files, tmp_path, monkeypatch, url) == 1  # DownloadError
    err = capsys.readouterr().err
    assert re.search(f'^image_demo.py: error: download.*{re.escape(url)}.*failed', err,
                     flags=re.M), err
    assert 'Traceback' not in err and not (tmp_path / 'out.png').exists()


def test_missing_checkpoint_file_is_one_line(demo, files, tmp_path, monkeypatch, capsys):
    missing = tmp_path / 'gone' / 'tiny.pth'
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', f'file://{missing}', '--vocab',
            'cat,dog', '--out', str(tmp_path / 'out.png'), '--device', 'cpu']
    assert demo.cli(argv) == 1
    err = capsys.readouterr().err
    assert re.search(f'^image_demo.py: error: checkpoint file not found: .*{missing}', err,
                     flags=re.M), err
    assert 'Traceback' not in err and not (tmp_path / 'out.png').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error raised without CUDA')
def test_cuda_without_cuda_is_one_line(demo, files, tmp_path, capsys):
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab',
            'cat,dog', '--out', str(tmp_path / 'out.png'), '--device', 'cuda']
    assert demo.cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("image_demo.py: error: --device 'cuda': CUDA is not available ("), err
    assert 'use --device cpu' in err and len(err.strip().splitlines()) == 1


def test_unwritable_out_fails_before_the_model_is_built(demo, files, monkeypatch, capsys):
    import mmseg_escnet.apis

    def refuse(*args, **kwargs):
        raise AssertionError('the model was built before --out was checked')

    monkeypatch.setattr(mmseg_escnet.apis.OpenVocabInferencer, '__init__', refuse)
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab',
            'cat,dog', '--out', str(files / 'file.txt' / 'out.png')]
    assert demo.cli(argv) == 1
    assert 'cannot write --out' in capsys.readouterr().err


def test_debug_shows_the_traceback(demo, files):
    argv = [str(files / 'missing.png'), CONFIG, '--vocab', 'cat,dog', '--debug']
    with pytest.raises(FileNotFoundError, match='missing.png'):
        demo.cli(argv)


def test_cfg_options_reach_the_model(demo, files, tmp_path, monkeypatch, capsys):
    """--cfg-options changes the config the inferencer builds (here: class chunks)."""
    import mmseg_escnet.apis
    seen = {}
    original = mmseg_escnet.apis.OpenVocabInferencer.__init__

    def spy(self, model, *args, **kwargs):
        seen['model'] = model
        original(self, model, *args, **kwargs)

    monkeypatch.setattr(mmseg_escnet.apis.OpenVocabInferencer, '__init__', spy)
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab',
            'ADE150', '--out', str(tmp_path / 'o.png'), '--device', 'cpu', '--cfg-options',
            'model.decode_head.class_chunk_size=16']
    assert demo.cli(argv) == 0
    assert seen['model'].model.decode_head.class_chunk_size == 16
    assert 'of 150 classes present' in capsys.readouterr().out  # ADE150 is ade150


@pytest.mark.parametrize('given,synonyms', [([], [['cat'], ['dog']]),
                                            (['--synonyms', 'all'], [['cat', 'kitty'], ['dog']])])
def test_prompting_is_the_models_unless_overridden(demo, files, tmp_path, monkeypatch, given,
                                                   synonyms):
    """Without --synonyms the vocabulary is prompted with the model's policy (CAT-Seg: 'first', as
    tools/test.py does); --synonyms / --templates override it under the inferencer's names."""
    import mmseg_escnet.apis
    seen = {}
    original = mmseg_escnet.apis.OpenVocabInferencer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen['vocabulary'] = self.vocabulary

    monkeypatch.setattr(mmseg_escnet.apis.OpenVocabInferencer, '__init__', spy)
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab',
            'cat|kitty,dog', '--out', str(tmp_path / 'o.png'), '--device', 'cpu', *given]
    assert demo.cli(argv) == 0
    assert seen['vocabulary'].synonyms == synonyms


@pytest.mark.parametrize('value', ['0', 'some'])
def test_a_bad_synonym_policy_is_one_line(demo, files, tmp_path, capsys, value):
    argv = [str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'), '--vocab',
            'cat,dog', '--out', str(tmp_path / 'o.png'), '--synonyms', value]
    assert demo.cli(argv) == 1
    err = capsys.readouterr().err
    assert "--synonyms must be 'first', 'all' or a positive int, got" in err and value in err


def test_without_vocab_the_configs_test_vocabulary_is_used(demo, files, tmp_path, capsys):
    """A fine-tuned model's config holds its classes: --vocab may be left out."""
    out = tmp_path / 'o.png'
    assert demo.cli([str(files / 'image.png'), CONFIG, '--checkpoint', str(files / 'tiny.pth'),
                     '--out', str(out), '--device', 'cpu']) == 0
    classes = Config.fromfile(CONFIG).model.vocabulary['classes']
    printed = re.findall(r'^\s+(\w+)\s+[\d.]+%', capsys.readouterr().out, flags=re.M)
    assert printed and set(printed) <= set(classes)
    assert cv2.imread(str(tmp_path / 'o_labels.png'), cv2.IMREAD_UNCHANGED).max() < len(classes)
