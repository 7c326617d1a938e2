"""demo/web_demo.py: the page in Debian's chromium (selenium), its checks and cache in-process.

A tiny CAT-Seg is trained for a few iterations through tools/train.py while the browser starts;
the page runs in a thread of this process. The browser is the system's (``/usr/bin/chromium``
driven by ``/usr/bin/chromedriver``), never downloaded: without it the browser test fails and says
how to install it.
"""
import importlib.util
import os
import os.path as osp
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
INSTALL = ('install Debian\'s chromium and its driver: apt-get install chromium chromium-driver '
           '(selenium: pip install -r requirements/demo.txt -c requirements/constraints.txt)')
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-proxy-server', '--window-size=1280,1000']
CLASSES = 'sky, grass, sand, snow, brick'
ITERS = 6


def _load_demo():
    spec = importlib.util.spec_from_file_location('web_demo', osp.join(ROOT, 'demo', 'web_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_command(data_root: str, work_dir: str) -> list:
    """tools/train.py on the tiny config, shortened as tests/test_tools does."""
    options = [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
               f'default_hooks.checkpoint.interval={ITERS}', f'param_scheduler.0.end={ITERS}',
               f'param_scheduler.0.T_max={ITERS}', 'train_dataloader.batch_size=2']
    for loader in ('train', 'val', 'test'):
        options += [f'{loader}_dataloader.dataset.data_root={data_root}',
                    f'{loader}_dataloader.dataset.splits.train=8',
                    f'{loader}_dataloader.dataset.splits.val=2']
    return [sys.executable, 'tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
            *options]


def _start_browser(profile: str):
    """Debian's chromium through the system chromedriver (no selenium-manager, no download)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not osp.isfile(path)]
    if missing:
        pytest.fail(f'{" and ".join(missing)} not found: {INSTALL}')
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.fail(f'selenium is missing ({err}): {INSTALL}')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f'--user-data-dir={profile}']:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture(scope='module')
def web_demo():
    return _load_demo()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp('web_demo')


@pytest.fixture(scope='module')
def training(folder):
    """tools/train.py on the tiny config in a subprocess (it runs while the browser starts)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    process = subprocess.Popen(_train_command(str(folder / 'data'), str(folder / 'work')),
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope='module')
def trained(training, folder):
    """``checkpoint`` and ``data_root`` (the synthetic set) of the trained tiny CAT-Seg."""
    log, _ = training.communicate(timeout=300)
    checkpoint = str(folder / 'work' / f'iter_{ITERS}.pth')
    assert training.returncode == 0 and osp.isfile(checkpoint), log[-3000:]
    return dict(checkpoint=checkpoint, data_root=str(folder / 'data'))


@pytest.fixture(scope='module')
def browser(training, folder):
    driver = _start_browser(tempfile.mkdtemp(dir=folder, prefix='chromium_'))
    yield driver
    driver.quit()


@pytest.fixture(scope='module')
def served(browser, trained, folder, web_demo):
    """The page on a free port of 127.0.0.1, served by a thread of this process."""
    from mmseg_escnet.apis import OpenVocabInferencer
    out_dir = str(folder / 'label_maps')
    inferencer = OpenVocabInferencer(CONFIG, weights=trained['checkpoint'], device='cpu')
    segmenter = web_demo.WebSegmenter(inferencer, out_dir)
    app = web_demo.build_app(segmenter)
    port = _free_port()
    web_demo.launch(app, '127.0.0.1', port, block=False,
                    blocked_paths=web_demo.blocked_out_dir(out_dir, segmenter.label_dir))
    yield dict(trained, url=f'http://127.0.0.1:{port}/', driver=browser, folder=folder)
    app.close()


def _reference(checkpoint: str, text: str, mode: str, image: str) -> dict:
    """OpenVocabInferencer's prediction on the same input, vocabulary and test mode."""
    from mmseg_escnet.apis import OpenVocabInferencer
    from mmseg_escnet.text import parse_vocabulary_text
    inferencer = OpenVocabInferencer(CONFIG, weights=checkpoint, device='cpu',
                                     vocabulary=parse_vocabulary_text(text))
    inferencer.model.test_cfg = dict(mode=mode)
    return inferencer(image)['predictions']


def _wait(driver, predicate, what: str, timeout: float = 60.0):
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))
    except Exception as err:
        pytest.fail(f'timed out waiting for {what}: {type(err).__name__}')


def _text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By
    return ' '.join(e.text for e in driver.find_elements(By.CSS_SELECTOR, selector))


def _segment(driver, mode: str) -> str:
    """Pick ``mode``, press Segment and wait for the status of that mode; returns it."""
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, f'//*[@id="mode"]//label[.//input[@value="{mode}"]]').click()
    driver.find_element(By.CSS_SELECTOR, '#run-button').click()
    return _wait(driver, lambda d: f'({mode})' in _text(d, '#status .result')
                 and _text(d, '#status .result'),
                 f'the result in mode {mode}')


def _check_result(driver, served: dict, image: str, mode: str) -> None:
    """The table lists the classes present and the label map equals the inferencer's."""
    from selenium.webdriver.common.by import By
    expected = _reference(served['checkpoint'], CLASSES, mode, image)
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '#classes-table td.class-name')]
    assert names == [s['name'] for s in expected['scores']]
    shares = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '#classes-table td.fraction')]
    assert shares == [f'{s["fraction"]:.2%}' for s in expected['scores']]
    link = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#label-map a[download]'),
                 'the label map link')[0]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = opener.open(link.get_attribute('href'), timeout=30).read()
    label_map = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(label_map, expected['sem_seg'])


def test_page_segments_in_chromium_like_the_inferencer(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver, start = served['driver'], time.monotonic()
    driver.get(served['url'])
    upload = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR,
                                                     '#input-image input[type=file]'),
                   'the page')[0]
    image = osp.join(served['data_root'], 'img_dir', 'val', '00001.png')  # synthetic set
    upload.send_keys(image)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#input-image img'), 'the upload')
    vocab = driver.find_element(By.CSS_SELECTOR, '#vocab textarea, #vocab input')
    # the box starts with the config's classes (a fine-tuned model's own vocabulary)
    assert vocab.get_attribute('value') == 'sky, grass, sand, snow, brick'
    vocab.send_keys(Keys.CONTROL, 'a')
    vocab.send_keys(Keys.BACKSPACE)
    vocab.send_keys(CLASSES)

    status = _segment(driver, 'whole')
    assert 'classes found in 96 x 96 pixels' in status
    assert _text(driver, '#error-box') == ''
    _check_result(driver, served, image, 'whole')
    driver.save_screenshot(str(served['folder'] / 'web_demo.png'))
    assert osp.getsize(served['folder'] / 'web_demo.png') > 10_000

    _segment(driver, 'sliding_global')
    _check_result(driver, served, image, 'sliding_global')

    vocab.send_keys(Keys.CONTROL, 'a')
    vocab.send_keys(Keys.BACKSPACE)
    driver.find_element(By.CSS_SELECTOR, '#run-button').click()
    error = _wait(driver, lambda d: _text(d, '#error-box .error'), 'the error message')
    assert 'vocabulary is empty' in error and 'Traceback' not in driver.page_source
    assert driver.find_elements(By.CSS_SELECTOR, '#classes-table td.class-name') == []
    driver.save_screenshot(str(served['folder'] / 'web_demo_error.png'))
    assert time.monotonic() - start < 60


# -- the page's logic, without a browser --------------------------------------------------------
@pytest.fixture()
def segmenter(trained, web_demo, tmp_path):
    from mmseg_escnet.apis import OpenVocabInferencer
    inferencer = OpenVocabInferencer(CONFIG, weights=trained['checkpoint'], device='cpu')
    return web_demo.WebSegmenter(inferencer, str(tmp_path / 'out'), max_pixels=10_000,
                                 max_classes=20, cache_size=2)


def test_bad_input_is_a_readable_error(segmenter, web_demo, trained, tmp_path):
    image = osp.join(trained['data_root'], 'img_dir', 'val', '00000.png')
    huge = tmp_path / 'huge.bmp'  # a header claiming 40000 x 30000 pixels
    info = struct.pack('<IiiHHIIiiII', 40, 40000, 30000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    huge.write_bytes(b'BM' + struct.pack('<IHHI', 54, 0, 0, 54) + info)
    (tmp_path / 'bad.png').write_bytes(b'not a png')
    big = tmp_path / 'big.png'
    cv2.imwrite(str(big), np.zeros((101, 100, 3), np.uint8))  # 10100 pixels > max_pixels
    cases = [((image, '', 'whole'), 'vocabulary is empty'),
             ((image, ' , ', 'whole'), 'vocabulary is empty'),
             ((image, 'cat, dog, Cat', 'whole'), 'duplicate class'),
             ((image, ','.join(f'c{i}' for i in range(21)), 'whole'), '21 classes, more than'),
             ((image, 'ade150', 'whole'), '150 classes, more than the 20'),
             ((image, 'ade15', 'whole'), "did you mean 'ade150'"),
             ((image, '/etc/hosts.txt', 'whole'), 'reads no vocabulary files'),
             ((image, CLASSES, 'slide'), 'unknown mode'),
             ((None, CLASSES, 'whole'), 'no image'),
             ((str(huge), CLASSES, 'whole'),
              'huge.bmp is 1,200,000,000 pixels, more than the limit of 10,000'),
             ((str(big), CLASSES, 'whole'), 'big.png is 100 x 101 = 10,100 pixels, more than'),
             ((str(tmp_path / 'bad.png'), CLASSES, 'whole'), 'cannot decode')]
    for args, message in cases:
        with pytest.raises(web_demo.InputError, match=message):
            segmenter(*args)
    vocabulary = segmenter.vocabulary('dog|puppy, cat')  # prompted with the model's policy
    assert vocabulary.all_synonyms == [['dog', 'puppy'], ['cat']]
    assert vocabulary.synonyms == [['dog'], ['cat']]  # the tiny CAT-Seg's 'first'
    assert segmenter.vocabulary('hosts').names == ['hosts']


def test_the_classes_box_starts_with_the_configs_vocabulary(segmenter):
    """A fine-tuned model's classes are the page's default (when they fit max_classes)."""
    entries = [entry.strip() for entry in segmenter.default_text().split(',')]
    assert entries == ['|'.join(s) for s in segmenter.inferencer.vocabulary.all_synonyms]
    assert segmenter.vocabulary(segmenter.default_text()).names == \
        segmenter.inferencer.vocabulary.names
    segmenter.max_classes = len(entries) - 1
    assert segmenter.default_text() == ''


def test_recent_vocabularies_are_not_encoded_again(segmenter, trained, monkeypatch):
    from mmseg_escnet.models.text import ClassEmbedder
    encoded = []
    encode = ClassEmbedder._encode
    monkeypatch.setattr(ClassEmbedder, '_encode',
                        lambda self, *args: encoded.append(self.vocabulary.names) or
                        encode(self, *args))
    image = osp.join(trained['data_root'], 'img_dir', 'val', '00000.png')
    five, two, other = CLASSES, 'sky, grass', 'snow, brick'
    for text in (five, two, five, two, other, two, five):
        last = segmenter(image, text, 'whole')
    # cache_size 2: the repeats are not encoded, 'snow, brick' pushes the five classes out
    assert encoded == [five.split(', '), two.split(', '), other.split(', '), five.split(', ')]
    assert last.classes == five.split(', ')
    expected = _reference(trained['checkpoint'], five, 'whole', image)
    np.testing.assert_array_equal(cv2.imread(last.label_map_path, cv2.IMREAD_UNCHANGED),
                                  expected['sem_seg'])
    assert [s['name'] for s in last.scores] == [s['name'] for s in expected['scores']]


def test_cli_defaults_and_one_line_errors(web_demo, trained, monkeypatch, capsys, tmp_path):
    args = web_demo.parse_args([CONFIG])
    assert (args.host, args.port, args.share) == ('127.0.0.1', 7860, False)
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert web_demo.cli([CONFIG, '--port', str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('web_demo.py: error: cannot listen on 127.0.0.1:') and '\n' not in err
    assert web_demo.cli([CONFIG, '--max-classes', '0']) == 1
    assert '--max-classes must be >= 1' in capsys.readouterr().err
    assert web_demo.cli([str(tmp_path / 'missing.py'), '--port', str(_free_port())]) == 1
    assert 'missing.py' in capsys.readouterr().err
    launched = {}
    monkeypatch.setattr(web_demo, 'launch', lambda app, *args, **kwargs: launched.update(
        app=app, args=args, kwargs=kwargs))
    out_dir, port = str(tmp_path / 'out'), _free_port()
    assert web_demo.main([CONFIG, '--checkpoint', trained['checkpoint'], '--device', 'cpu',
                          '--port', str(port), '--out-dir', out_dir]) == 0
    assert launched['args'] == ('127.0.0.1', port, False)  # host, port, share
    # --out-dir gets copies of the label maps and is never served
    assert launched['kwargs'] == dict(blocked_paths=[osp.realpath(out_dir)])
