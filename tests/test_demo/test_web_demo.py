"""The web demo in a real browser: Debian's chromium driven by selenium through the system
chromedriver (no browser download), on a tiny CAT-Seg trained for a few iterations."""
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import cv2
import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
CLASSES = 'sky, grass, sand, snow, brick'
pytestmark = pytest.mark.slow


def _browser():
    """A headless chromium; fails (never skips) when it is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not osp.exists(p)]
    if missing:
        pytest.fail(f'the browser test needs {missing}: install them with '
                    '`apt-get install -y chromium chromium-driver` (.ci/run does)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update',
                '--disable-sync', '--window-size=1400,1000',
                f'--user-data-dir={tempfile.mkdtemp(prefix="chromium_")}'):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if server.poll() is not None:
            raise AssertionError(f'the demo exited: {server.stdout.read()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f'the demo did not answer on {url} within {timeout} s')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(checkpoint, data root) of a tiny CAT-Seg trained for 8 iterations."""
    tmp = tmp_path_factory.mktemp('web')
    data, work = str(tmp / 'data'), str(tmp / 'work')
    options = ['train_cfg.max_iters=8', 'train_cfg.val_interval=8',
               'default_hooks.checkpoint.interval=8', 'param_scheduler.0.end=8',
               'param_scheduler.0.T_max=8', 'train_dataloader.batch_size=2']
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={data}',
                    f'{split}_dataloader.dataset.splits.train=8',
                    f'{split}_dataloader.dataset.splits.val=2']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', work,
                           '--cfg-options', *options], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return osp.join(work, 'iter_8.pth'), data


def test_page_segments_an_upload_like_the_inferencer(trained, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from mmseg_escnet.apis import OpenVocabInferencer, read_image
    checkpoint, data = trained
    image_path = osp.join(data, 'img_dir', 'val', '00000.png')
    out_dir = str(tmp_path / 'labels')
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, 'demo/web_demo.py', CONFIG, '--checkpoint', checkpoint, '--port',
         str(port), '--out-dir', out_dir, '--device', 'cpu'],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, GRADIO_ANALYTICS_ENABLED='False'),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = None
    try:
        url = f'http://127.0.0.1:{port}/'
        _wait_for(url, server)
        driver = _browser()
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#input-image input[type=file]'))
        driver.find_element(By.CSS_SELECTOR, '#input-image input[type=file]').send_keys(
            image_path)
        box = driver.find_element(By.CSS_SELECTOR, '#vocab textarea, #vocab input')
        box.send_keys(CLASSES)
        time.sleep(1)  # the upload reaches the server
        driver.find_element(By.ID, 'run-button').click()
        wait.until(lambda d: 'classes found' in d.find_element(By.ID, 'status').text)
        table = driver.find_element(By.ID, 'classes-table').text
        driver.save_screenshot(str(tmp_path / 'web_demo.png'))

        inferencer = OpenVocabInferencer(CONFIG, weights=checkpoint, device='cpu',
                                         vocabulary=[c.strip() for c in CLASSES.split(',')])
        expected = inferencer(read_image(image_path))['predictions']
        present = [s['name'] for s in expected['scores']]
        assert present and all(name in table for name in present), (present, table)
        absent = set(expected['classes']) - set(present)
        assert not any(f'\n{name}\n' in f'\n{table}\n' for name in absent), table
        (label_file, ) = os.listdir(out_dir)
        labels = cv2.imread(osp.join(out_dir, label_file), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, expected['sem_seg'])

        # an empty vocabulary: a message in the page, no result
        box.send_keys(Keys.CONTROL, 'a')
        box.send_keys(Keys.DELETE)
        time.sleep(0.5)
        driver.find_element(By.ID, 'run-button').click()
        wait.until(lambda d: 'Error' in d.find_element(By.ID, 'status').text)
        assert 'empty' in driver.find_element(By.ID, 'status').text
        assert len(os.listdir(out_dir)) == 1
        driver.save_screenshot(str(tmp_path / 'web_demo_error.png'))
        assert osp.getsize(tmp_path / 'web_demo.png') > 0
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(out_dir, ignore_errors=True)


@pytest.fixture(scope='module')
def web_demo(load_script):
    return load_script('demo/web_demo.py')


class _StubInferencer:
    """What the input checks read: the synonym policy and the templates."""
    synonyms = 'all'

    class vocabulary:  # noqa: N801
        templates = ['a photo of a {}.']

    class model:  # noqa: N801
        test_cfg = dict(mode='whole')
        clip_resolution = (96, 96)


@pytest.mark.parametrize('image, text, problem', [
    (None, 'cat', 'no image'),
    (np.zeros((0, 0, 3), np.uint8), 'cat', 'could not be read'),
    (np.zeros((8000, 6000, 3), np.uint8), 'cat', 'more than the 40,000,000'),
    (np.zeros((8, 8, 3), np.uint8), '', 'empty'),
    (np.zeros((8, 8, 3), np.uint8), 'cat, dog, cat', 'duplicate'),
    (np.zeros((8, 8, 3), np.uint8), 'ade15', 'ade150'),
    (np.zeros((8, 8, 3), np.uint8), ', '.join(f'c{i}' for i in range(1001)), '1001 classes'),
])
def test_bad_input_gives_a_message_for_the_page(web_demo, tmp_path, image, text, problem):
    segmenter = web_demo.Segmenter(_StubInferencer(), str(tmp_path))
    with pytest.raises(web_demo.InputError, match=problem):
        segmenter(image, text, web_demo.CUSTOM, 'whole')


def test_builtin_vocabulary_and_modes(web_demo, tmp_path):
    segmenter = web_demo.Segmenter(_StubInferencer(), str(tmp_path))
    assert len(segmenter.vocabulary('', 'ade150')) == 150
    assert len(segmenter.vocabulary('cat, dog', 'ade150')) == 2  # the text box wins
    assert segmenter.test_cfg('sliding_global') == dict(
        mode='sliding_global', class_filter=None, kernel=96, overlap=0.333, out_size=(640, 640))
    assert web_demo.parse_args(['x.py']).host == '127.0.0.1'
    assert not web_demo.parse_args(['x.py']).share
